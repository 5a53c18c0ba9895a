"""Writing SAM checkpoints in the published key layout (read back by ``load_sam``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ...edge.io import atomic_write
from ...solver.features.sam import SAMNetwork


def save_sam(
    network: SAMNetwork, path: str | os.PathLike, meta: dict[str, Any] | None = None, **extra: Any
) -> None:
    """Write a checkpoint in the published layout plus our architecture meta (atomic)."""
    meta = dict(meta or {})
    meta["architecture"] = {
        "name": "sam_r18_i3d_fpn",
        "width": network.width,
        "embedding_dim": network.embedding_dim,
        "input_spacing_mm": network.input_spacing_mm,
    }
    payload = {"state_dict": network.state_dict(), "meta": meta, **extra}

    def write_to(temp: Path) -> None:
        torch.save(payload, temp)

    atomic_write(Path(path), write_to, overwrite=True)


__all__ = ["save_sam"]
