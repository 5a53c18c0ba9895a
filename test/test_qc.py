"""The quality-control figure: a valid PNG written atomically."""

from __future__ import annotations

import struct

import matplotlib.figure
import numpy as np
import pytest

from itk_samconvex.apps.qc import qc_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _arrays(shape=(20, 24, 28)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ball of soft tissue in air, a shifted copy and a Jacobian with a small fold."""
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    centre = np.array(shape, dtype=np.float32) / 2
    r = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    fixed = np.where(r < 7, 40.0, -1000.0).astype(np.float32)
    warped = np.roll(fixed, 2, axis=2)
    jacobian = 1.0 + 0.3 * np.sin(x / 4.0) * np.cos(y / 5.0)
    jacobian[8:11, 10:13, 12:15] = -0.4
    return fixed, warped, jacobian.astype(np.float32)


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_writes_png_atomically(tmp_path) -> None:
    fixed, warped, jacobian = _arrays()
    target = tmp_path / "out" / "qc.png"
    result = qc_figure(fixed, warped, jacobian, target, title="synthetic",
                       spacing=(1.5, 1.0, 2.5))
    assert result == target and target.is_file()
    width, height = _png_size(target)
    assert width >= 600 and height >= 600
    assert target.stat().st_size > 20_000
    # overwrite in place: still one file, no temporary left behind
    qc_figure(fixed, fixed, np.ones_like(jacobian), str(target), slice_index=(0, 23, 27))
    _png_size(target)
    assert [p.name for p in target.parent.iterdir()] == ["qc.png"]


def test_does_not_touch_pyplot(tmp_path) -> None:
    plt = pytest.importorskip("matplotlib.pyplot")
    before = plt.get_fignums()
    qc_figure(*_arrays((12, 14, 16)), tmp_path / "qc.png")
    assert plt.get_fignums() == before


def test_rejects_bad_input_and_cleans_up(tmp_path, monkeypatch) -> None:
    fixed, warped, jacobian = _arrays()
    with pytest.raises(ValueError, match="one shape"):
        qc_figure(fixed, warped[:-1], jacobian, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="window"):
        qc_figure(fixed, warped, jacobian, tmp_path / "bad.png", window=(400, -1000))

    def broken_savefig(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        qc_figure(fixed, warped, jacobian, tmp_path / "qc.png")
    assert list(tmp_path.iterdir()) == []
