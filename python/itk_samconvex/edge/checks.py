"""Does an input look like a CT worth registering? Checks on the voxel values.

The registration assumes Hounsfield units: air near -1000, soft tissue near 0, bone above.
A label map or mask passed as an image, an MR or an intensity-normalised volume would run
for a minute and return a meaningless field, so these are refused with the fix
(``ct_check=False``, CLI ``--no-ct-check``, for the rare legitimate case). A constant image,
or one without any voxel above the body threshold, carries no information and is refused
whatever the setting. An image too small to register meaningfully is only warned about.

Every rule was checked against every image of ``shared/data`` (real CT of head and neck,
lung, abdomen, thorax, extremities): none triggers (``test/test_checks.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)

#: Fewer distinct integer values than this (in a sample of 200 000 voxels) looks like a label
#: map or a mask (multi-organ maps hold up to ~120 labels; a CT holds thousands of HU values).
MIN_DISTINCT_VALUES = 300
#: A CT spans at least this many HU between its 1st and 99th percentiles.
MIN_HU_SPREAD = 150.0
#: Lowest plausible 1st percentile of a CT (below: not HU, e.g. a shifted scale).
LOWEST_HU = -1500.0
#: Highest plausible 1st percentile (above: no air, no fat, no soft tissue: not HU).
HIGHEST_LOW_HU = 200.0
#: Smallest extent (mm) and size (voxels) per axis worth registering.
MIN_EXTENT_MM = 30.0
MIN_VOXELS = 8
_SAMPLE = 200_000


@dataclass(frozen=True)
class ValueSummary:
    """What the checks look at: a summary of the voxel values (from a sample if large)."""

    minimum: float
    maximum: float
    p1: float
    p99: float
    distinct: int
    integer_valued: bool


def summarize(values: np.ndarray) -> ValueSummary:
    """Summary of an image's values (exact min/max; percentiles and counts on a sample)."""
    flat = values.reshape(-1)
    sample = flat if flat.size <= _SAMPLE else flat[:: max(1, flat.size // _SAMPLE)]
    sample = sample.astype(np.float64)
    p1, p99 = np.percentile(sample, [1.0, 99.0])
    return ValueSummary(
        minimum=float(flat.min()),
        maximum=float(flat.max()),
        p1=float(p1),
        p99=float(p99),
        distinct=int(np.unique(sample).size),
        integer_valued=bool(np.all(sample == np.round(sample))),
    )


def ct_problem(summary: ValueSummary) -> str | None:
    """Why the values do not look like a CT in HU, or None."""
    if summary.distinct < MIN_DISTINCT_VALUES and summary.integer_valued:
        return (
            f"it holds only {summary.distinct} distinct integer values "
            f"({summary.minimum:g}..{summary.maximum:g}): it looks like a label map or a "
            "mask, not a CT"
        )
    if summary.p99 - summary.p1 < MIN_HU_SPREAD:
        return (
            f"its values span only {summary.p1:.3g}..{summary.p99:.3g} (1st-99th "
            "percentile): a CT in Hounsfield units spans hundreds (air -1000, tissue 0, "
            "bone > 300); it looks normalised or not a CT"
        )
    if summary.p1 < LOWEST_HU or summary.p1 > HIGHEST_LOW_HU:
        return (
            f"its 1st percentile is {summary.p1:.4g}, far from Hounsfield units (air "
            "-1000, fat -100, tissue 0); it looks like another modality or a shifted "
            "scale (e.g. stored value = HU + 1024 without the rescale)"
        )
    return None


def check_informative(values: np.ndarray, name: str, body_threshold_hu: float) -> None:
    """Refuse images that carry no information: constant, or nothing above the body
    threshold (whatever ``ct_check`` says)."""
    low, high = float(values.min()), float(values.max())
    if low == high:
        raise InputError(
            f"{name} is constant (every voxel is {low:g}); a registration "
            "needs structure in both images: check that the right file was "
            "passed and that it was exported completely."
        )
    if high <= body_threshold_hu:
        raise InputError(
            f"{name} has no voxel above {body_threshold_hu:g} HU (its maximum is "
            f"{high:g}), so no body to register; pass a CT in Hounsfield units, "
            "or lower foreground_threshold_hu."
        )


def check_ct(
    values: np.ndarray, name: str, body_threshold_hu: float, ct_check: bool = True
) -> ValueSummary:
    """All value checks of one input image; returns the summary.

    Raises:
        InputError: constant or bodiless (always); not CT-like (when ``ct_check``).
    """
    check_informative(values, name, body_threshold_hu)
    summary = summarize(values)
    problem = ct_problem(summary)
    if problem is not None:
        if ct_check:
            raise InputError(
                f"{name} does not look like a CT: {problem}. Pass the CT image "
                "(labels go to --moving-labels/--fixed-labels); if this really is "
                "the image to register, turn the check off with ct_check=False "
                "(CLI --no-ct-check)."
            )
        logger.warning(
            "%s does not look like a CT (%s); registering anyway (ct_check off)", name, problem
        )
    return summary


def size_warning(size: tuple[int, ...], spacing: tuple[float, ...], name: str) -> str | None:
    """A warning for an image too small to register meaningfully, or None."""
    extent = [n * s for n, s in zip(size, spacing, strict=True)]
    if min(size) < MIN_VOXELS or min(extent) < MIN_EXTENT_MM:
        shown = " x ".join(f"{e:.0f}" for e in extent)
        return (
            f"{name} is small ({'x'.join(map(str, size))} voxels, {shown} mm): the "
            "coarse levels of the registration have few voxels and the result may be "
            f"unreliable; at least {MIN_VOXELS} voxels and {MIN_EXTENT_MM:g} mm per axis "
            "are advisable"
        )
    return None


__all__ = [
    "ValueSummary",
    "check_ct",
    "check_informative",
    "ct_problem",
    "size_warning",
    "summarize",
]
