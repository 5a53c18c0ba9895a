"""The solver's CPU thread choice: load-aware by default, the user's number always wins."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from itk_samconvex.solver import device
from itk_samconvex.solver.device import busy_cores, load_aware_threads, torch_threads


def test_load_aware_threads_leaves_the_busy_cores(monkeypatch):
    monkeypatch.setattr(device, "cpu_count", lambda: 4)
    assert load_aware_threads(4, 0.1) == 4
    assert load_aware_threads(4, 1.2) == 3  # one core's worth busy
    assert load_aware_threads(4, 3.9) == 1  # never below one
    assert load_aware_threads(2, 0.0) == 2  # torch's setting is the upper bound
    assert load_aware_threads(3, None) == 3  # no reading: keep torch's setting


def test_torch_threads_user_number_wins_and_is_restored(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(device, "busy_cores", lambda: 1e6)  # everything looks busy
    with torch_threads(2, torch.device("cpu")) as used:
        assert used == 2 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with torch_threads(None, torch.device("cpu")) as used:
        assert used == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with torch_threads(None, None) as used:  # no device: torch's setting
        assert used == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_busy_cores_sees_a_spinning_process():
    idle = busy_cores(0.2)
    assert idle is not None and 0.0 <= idle <= device.cpu_count() + 1e-9
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = busy_cores(0.5)
    finally:
        spinner.kill()
        spinner.wait()
    # One process spinning keeps (about) one core busy, whatever else the machine does.
    assert busy is not None and busy >= 0.7
