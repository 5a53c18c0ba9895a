"""One pair from files to a finished output folder: the path ``register`` and ``batch`` share.

Read (headers first: dimension, size against free memory, NIfTI geometry and values), pre-align
(a transform file, or the search + itk-elastix affine), register, score and write
(``outputs.write_outputs``). Every step is timed into the same :class:`~timings.Timings`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..edge.io import check_fits_memory, read_image, read_image_info, read_label_names
from ..edge.registration import register
from ..solver.config import SAMConvexConfig
from ..solver.device import available_memory_bytes, resolve_device
from .files import ELASTIX_AFFINE, PairFiles
from .outputs import output_paths, write_outputs
from .timings import Timings

logger = logging.getLogger(__name__)


def pair_output_paths(
    files: PairFiles, folder: Path, *, qc: bool = True, write_field: bool = False
) -> dict[str, Path]:
    """The files this pair writes into ``folder``."""
    return output_paths(
        folder,
        labels=files.moving_labels is not None,
        qc=qc,
        write_field=write_field,
        affine=files.initial_transform == ELASTIX_AFFINE,
    )


def _read(path: str | None, what: str) -> Any:
    return read_image(path, what) if path else None


def register_files(
    files: PairFiles,
    cfg: SAMConvexConfig,
    paths: Mapping[str, Path],
    *,
    timings: Timings | None = None,
    overwrite: bool = False,
    hd95: bool = False,
    pair: str = "",
    extractor: Any = None,
    progress: Callable[[str], None] | None = None,
    extra: Mapping[str, Any] | None = None,
    listed_folder: Path | None = None,
) -> dict[str, Any]:
    """Register one pair from its files and write ``paths``; return the report.

    The output folder must exist; every input is protected from being overwritten.
    """
    timings = timings or Timings()
    headers = [
        (what, read_image_info(path, what))
        for what, path in (("fixed image", files.fixed), ("moving image", files.moving))
    ]
    check_fits_memory(headers, available_memory_bytes(resolve_device(cfg.device)))
    fixed = read_image(files.fixed, "fixed image")
    moving = read_image(files.moving, "moving image")
    moving_labels = _read(files.moving_labels, "moving label map")
    fixed_labels = _read(files.fixed_labels, "fixed label map")
    fixed_mask = _read(files.fixed_mask, "fixed mask")
    moving_mask = _read(files.moving_mask, "moving mask")
    names = read_label_names(files.label_names) if files.label_names else None
    timings.mark("reading")
    initial: Any = None
    record: dict[str, Any] | None = None
    if files.initial_transform == ELASTIX_AFFINE:
        from ..edge.elastix import elastix_prealignment

        logger.info("%s: search + itk-elastix affine pre-alignment", pair or "pair")
        pre = elastix_prealignment(fixed, moving, pair=pair or None)
        initial, record = pre.transform, pre.to_dict()
    elif files.initial_transform:
        initial = files.initial_transform
        record = {"method": "file", "path": files.initial_transform}
    timings.mark("prealignment")
    result = register(
        fixed, moving, cfg, initial, fixed_mask, moving_mask, progress, extractor=extractor
    )
    return write_outputs(
        result,
        fixed,
        moving,
        paths,
        moving_labels=moving_labels,
        fixed_labels=fixed_labels,
        fixed_points=files.fixed_landmarks,
        moving_points=files.moving_landmarks,
        label_names=names,
        prealignment=record,
        timings=timings,
        overwrite=overwrite,
        inputs=files.paths(),
        extra={"inputs": files.to_dict(), **dict(extra or {})},
        pair=pair,
        hd95=hd95,
        listed_folder=listed_folder,
    )


__all__ = ["ELASTIX_AFFINE", "PairFiles", "pair_output_paths", "register_files"]
