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


#: Batch-norm statistics stay float32: a running variance can exceed float16's range
#: (65504) or fall below its resolution, and they weigh next to nothing.
_KEEP_FLOAT32 = ("running_mean", "running_var")


def export_weights(
    checkpoint: str | os.PathLike, out: str | os.PathLike, dtype: torch.dtype = torch.float16
) -> Path:
    """Write a training checkpoint's weights for inference: the state dict (floating weights
    as ``dtype``, batch-norm statistics float32) and the meta that matter (architecture,
    iteration, seed, settings, loss summary); no optimizer state, no random states.
    ``load_sam`` reads it."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    meta = dict(state.get("meta", {}))
    log = meta.pop("loss_log", [])
    meta.pop("volumes", None)
    if log:
        meta["loss_last_100_mean"] = float(sum(r["loss"] for r in log[-100:]) / len(log[-100:]))
        meta["iterations_logged"] = len(log)
    weights = {
        k: v.to(dtype) if v.is_floating_point() and not k.endswith(_KEEP_FLOAT32) else v
        for k, v in state["state_dict"].items()
    }
    payload = {"state_dict": weights, "meta": meta}

    def write_to(temp: Path) -> None:
        torch.save(payload, temp)

    return atomic_write(Path(out), write_to, overwrite=True)


__all__ = ["export_weights", "save_sam"]
