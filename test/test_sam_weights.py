"""The SAM weights that ship inside the package (``solver/features/weights``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from itk_samconvex.errors import InputError
from itk_samconvex.solver.config import preset_config
from itk_samconvex.solver.features import sam_checkpoint
from itk_samconvex.solver.features.sam import embed
from itk_samconvex.solver.features.sam_checkpoint import ENV_VAR, PACKAGED_WEIGHTS, load_sam

README = Path(__file__).resolve().parents[1] / "README.md"
MODEL_CARD = PACKAGED_WEIGHTS.parent / "MODEL_CARD.md"


@pytest.fixture(scope="module")
def packaged():
    return load_sam(PACKAGED_WEIGHTS)


def test_the_weights_ship_small_with_their_model_card():
    assert PACKAGED_WEIGHTS.is_file()
    assert PACKAGED_WEIGHTS.stat().st_size <= 16 * 2**20
    card = MODEL_CARD.read_text()
    for needed in ("OpenKBP", "train", "validation", "TCIA", "samconvex train-sam", "head"):
        assert needed in card, needed


def test_packaged_weights_are_the_default_and_give_unit_features(packaged, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    network = load_sam(None)  # no path, no environment variable: the packaged file
    assert network.width == packaged.width == 24
    assert network.input_spacing_mm == 4.0
    hu = torch.linspace(-1000.0, 1200.0, 32 * 40 * 48).reshape(1, 1, 32, 40, 48)
    with torch.no_grad():
        local, glob = embed(network, hu)
    # local: stride 2 in each axis; global: stride 4 in z, 16 in y and x (ceil)
    assert local.shape == (1, network.embedding_dim, 16, 20, 24)
    assert glob.shape[:2] == (1, network.embedding_dim) and glob.shape[2] == 8
    for maps in (local, glob):
        norms = maps.norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-3)


def test_missing_packaged_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    absent = tmp_path / "weights" / "sam_openkbp_w24_4mm.pt"
    monkeypatch.setattr(sam_checkpoint, "PACKAGED_WEIGHTS", absent)
    with pytest.raises(InputError, match=re.escape(str(absent)) + r" are missing: reinstall"):
        load_sam(None)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupted_weights_name_the_file(tmp_path, damage):
    bad = tmp_path / f"{damage}.pt"
    data = PACKAGED_WEIGHTS.read_bytes()
    bad.write_bytes(b"not a checkpoint" * 64 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(InputError, match=re.escape(str(bad)) + " cannot be read as a torch"):
        load_sam(bad)


def test_the_default_preset_features_are_what_the_readme_says():
    stated = re.search(r"default preset's features: `([a-z+]+)`", README.read_text())
    assert stated, "README.md must state the default preset's features"
    assert preset_config("default").features == stated.group(1)
