"""Loading SAM weights: published checkpoints, plain state dicts, our own training output.

Accepted files (``torch.load``-able, read with ``weights_only=True``):

* the published SAM checkpoints as saved by their training framework (mmcv): a dict with
  ``state_dict`` and ``meta`` (and possibly ``optimizer``);
* a plain state dict, with or without a ``module.`` prefix (DataParallel);
* checkpoints written by ``samconvex train-sam``: ``state_dict`` plus ``meta`` carrying the
  architecture (``meta["architecture"]["width"]``).

Every key and shape is checked against the network layout (138 keys for the published width);
``num_batches_tracked`` buffers may be absent (they do not affect inference); extra keys of
the UAE variant (``semantic_head.*``) are ignored with a log line. Anything else that does not
match raises with the full diff: a checkpoint never loads partially in silence. Nothing is
downloaded: the path comes from the argument or ``SAMCONVEX_SAM_CHECKPOINT``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from ...errors import InputError
from .sam import PUBLISHED_INPUT_SPACING_MM, PUBLISHED_WIDTH, SAMNetwork

logger = logging.getLogger(__name__)

ENV_VAR = "SAMCONVEX_SAM_CHECKPOINT"
#: The weights that ship with the package (see weights/MODEL_CARD.md): used when neither
#: ``sam_checkpoint`` nor ``SAMCONVEX_SAM_CHECKPOINT`` names a file.
PACKAGED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "sam_openkbp_w24_4mm.pt"
IGNORED_PREFIXES = ("semantic_head.",)
HOW_TO_GET_WEIGHTS = (
    "pass sam_checkpoint=PATH (CLI --set sam_checkpoint=PATH) or set SAMCONVEX_SAM_CHECKPOINT. "
    "Published SAM weights (SAM.pth, SAMv2_iter_20000.pth) are on ModelScope "
    "(viggin/Self-supervised_Anatomical_Embeddings); or train your own with "
    "`samconvex train-sam CT_DIR --out sam.pt`; or use features='mind' (no weights)."
)


def resolve_checkpoint_path(path: str | os.PathLike | None) -> Path:
    """The checkpoint path: the argument, else ``SAMCONVEX_SAM_CHECKPOINT``, else the packaged
    weights; a clear error when the chosen file does not exist."""
    chosen = path if path is not None else os.environ.get(ENV_VAR)
    if not chosen:
        if PACKAGED_WEIGHTS.is_file():
            return PACKAGED_WEIGHTS
        raise InputError(
            f"features 'sam' need SAM weights and none were given (the packaged weights "
            f"{PACKAGED_WEIGHTS} are missing: reinstall itk-samconvex): {HOW_TO_GET_WEIGHTS}"
        )
    resolved = Path(chosen).expanduser()
    if not resolved.is_file():
        source = "sam_checkpoint" if path is not None else ENV_VAR
        raise InputError(
            f"SAM checkpoint {resolved} (from {source}) does not exist; {HOW_TO_GET_WEIGHTS}"
        )
    return resolved


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict with prefixes stripped, meta) from a checkpoint file."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(
            f"SAM checkpoint {path} cannot be read as a torch checkpoint of tensors "
            f"({type(error).__name__}: {error}); pass a .pth/.pt file holding a state dict."
        ) from error
    if not isinstance(raw, dict):
        raise InputError(
            f"SAM checkpoint {path} holds a {type(raw).__name__}, not a state "
            "dict; save model.state_dict()."
        )
    meta = raw.get("meta") if isinstance(raw.get("meta"), dict) else {}
    state = raw.get("state_dict", raw.get("model", raw))
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(
            f"SAM checkpoint {path} has no state dict of tensors (keys: {sorted(raw)[:10]})."
        )
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, meta


def infer_width(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> int:
    """Backbone base width from the meta data, else from the stem's weight shape."""
    architecture = meta.get("architecture") or {}
    if "width" in architecture:
        return int(architecture["width"])
    stem = state.get("backbone.conv1.conv.weight")
    return int(stem.shape[0]) if stem is not None else PUBLISHED_WIDTH


def layout_diff(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between a state dict and the expected layout."""
    lines: list[str] = []
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(k for k in set(state) - set(expected) if not k.startswith(IGNORED_PREFIXES))
    wrong = sorted(
        k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    for key in missing:
        lines.append(f"missing key {key} (expected shape {tuple(expected[key].shape)})")
    for key in unexpected:
        lines.append(f"unexpected key {key} (shape {tuple(state[key].shape)})")
    for key in wrong:
        lines.append(
            f"wrong shape for {key}: checkpoint {tuple(state[key].shape)}, "
            f"expected {tuple(expected[key].shape)}"
        )
    return lines


def load_sam(path: str | os.PathLike | None = None) -> SAMNetwork:
    """A SAMNetwork (eval mode, float32, CPU) with validated weights from ``path``."""
    resolved = resolve_checkpoint_path(path)
    state, meta = read_state_dict(resolved)
    width = infer_width(state, meta)
    spacing = float(
        (meta.get("architecture") or {}).get("input_spacing_mm", PUBLISHED_INPUT_SPACING_MM)
    )
    network = SAMNetwork(width, spacing)
    expected = network.state_dict()
    diff = layout_diff(state, expected)
    if diff:
        shown = diff[:40] + ([f"... and {len(diff) - 40} more"] if len(diff) > 40 else [])
        raise InputError(
            f"SAM checkpoint {resolved} does not match the SAM layout (width {width}, "
            f"{len(expected)} keys): {len(diff)} difference(s):\n  " + "\n  ".join(shown)
        )
    ignored = sorted(k for k in state if k.startswith(IGNORED_PREFIXES))
    if ignored:
        logger.info(
            "SAM checkpoint %s: ignoring %d UAE key(s) (%s...)", resolved, len(ignored), ignored[0]
        )
    filled = {
        k: v.float() if v.is_floating_point() else v for k, v in state.items() if k in expected
    }
    for key in expected:
        if key not in filled:  # an absent num_batches_tracked buffer
            filled[key] = expected[key]
    network.load_state_dict(filled, strict=True)
    logger.info("loaded SAM width %d from %s", width, resolved)
    return network.eval()
