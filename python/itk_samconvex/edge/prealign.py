"""Initial alignment of CT pairs whose scanner frames are unrelated or whose fields differ.

An affine optimiser started from the images' geometric centres fails when the two images do
not cover the same anatomy around their centres: a moving scan that is a thin slab of the
fixed scan's range, a head-neck scan with the shoulders against one without, two scanners'
coordinate systems hundreds of millimetres apart. This module finds where the moving body
lies before any optimiser runs:

1. Both images are reduced to their body (HU > ``BODY_HU``), low-pass filtered and sampled
   onto coarse isotropic LPS grids covering their body bounding boxes.
2. Every integer shift of one coarse grid against the other is scored at once by normalised
   cross-correlation over the overlap of the two fields of view (FFT correlations), among
   the shifts where the two bodies overlap by at least ``min_overlap`` of the smaller body.
   The best shift is the translation (mm) that maps fixed points to moving points.

:func:`search_translation` returns that translation as an ITK transform (it needs nothing
but ITK and numpy); :func:`itk_samconvex.elastix.elastix_affine` starts elastix from it.

Frames: ITK physical space, LPS mm; transforms map fixed points to moving points.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import itk
import numpy as np
import scipy.fft

from ..errors import InputError
from . import itk_classes
from .space import (
    Grid,
    antialias,
    as_float_image,
    check_image,
    foreground_box,
    matrix_like,
    sample_image,
)

logger = logging.getLogger(__name__)

BODY_HU = -500.0  # body threshold (HU): soft tissue and bone above, air and lung below
# Soft-tissue window for the correlation. With the full CT range the air/body outline
# (~1000 HU of contrast) decides everything and a thin slab matches any level of similar
# body cross-section; in this window organs, fat, bone and the lung bases count as well
# (measured on the abdomen slab case of the shared data: full range put the slab 160 mm too
# low, this window within 25 mm of the organ centroids).
INTENSITY_RANGE_HU = (-200.0, 300.0)
IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class CoarseImage:
    """An image's body region on an axis-aligned isotropic LPS grid.

    Attributes:
        grid: the coarse grid (identity direction, isotropic spacing in mm).
        values: (Z, Y, X) float64 intensities clipped to ``INTENSITY_RANGE_HU``, 0 outside
            the field of view.
        inside: (Z, Y, X) float64, 1 where the grid voxel lies in the image's field of view.
        body: (Z, Y, X) float64, 1 inside the body (HU > ``BODY_HU``) and the field of view.
    """

    grid: Grid
    values: np.ndarray
    inside: np.ndarray
    body: np.ndarray


@dataclass(frozen=True)
class TranslationSearch:
    """Result of :func:`search_translation`.

    Attributes:
        translation_mm: (3,) LPS mm; ``T(x) = x + translation_mm`` maps fixed to moving.
        correlation: normalised cross-correlation at the best shift, in [-1, 1].
        body_overlap: overlapping body volume at the best shift / the smaller body volume.
        spacing_mm: the coarse grid spacing (the translation is exact to about half of it).
    """

    translation_mm: np.ndarray
    correlation: float
    body_overlap: float
    spacing_mm: float

    def transform(self):
        """The translation as ``itk.TranslationTransform[itk.D, 3]`` (fixed -> moving)."""
        transform = itk_classes.translation_transform().New()
        parameters = itk.OptimizerParameters[itk.D](3)
        for axis in range(3):
            parameters.SetElement(axis, float(self.translation_mm[axis]))
        transform.SetParameters(parameters)
        return transform


def body_box_lps(image, threshold: float = BODY_HU) -> tuple[np.ndarray, np.ndarray] | None:
    """Axis-aligned LPS (low, high) corners in mm of the voxels above ``threshold``."""
    grid = Grid.of(image)
    box = foreground_box(image, grid, threshold, margin_mm=0.0)
    if box is None:
        return None
    low, high = box
    corners = np.array(
        [[(high if (c >> a) & 1 else low)[a] for a in range(3)] for c in range(8)]
    )  # (8, 3) in the image's axis frame, mm
    physical = np.asarray(grid.origin) + corners @ grid.direction_matrix.T
    return physical.min(axis=0), physical.max(axis=0)


def coarse_image(image, spacing_mm: float, name: str) -> CoarseImage:
    """The body region of a CT image on an axis-aligned isotropic grid of ``spacing_mm``."""
    box = body_box_lps(image)
    if box is None:
        raise InputError(
            f"{name} has no voxel above {BODY_HU:g} HU, so no body to align; the initial "
            "alignment needs CT in Hounsfield units (pass an initial transform instead)."
        )
    low, high = box
    margin = 2.0 * spacing_mm
    size = np.maximum(np.ceil((high - low + 2 * margin) / spacing_mm).astype(int), 1)
    centre = 0.5 * (low + high)
    origin = centre - 0.5 * (size - 1) * spacing_mm
    grid = Grid(
        size=tuple(int(v) for v in size),
        spacing=(float(spacing_mm),) * 3,
        origin=tuple(float(v) for v in origin),
        direction=IDENTITY_DIRECTION,
    )
    smooth = antialias(as_float_image(image), spacing_mm)
    values, inside = sample_image(smooth, grid)
    values = values.double().numpy()
    inside = inside.double().numpy()
    body = (values > BODY_HU) * inside
    clipped = np.clip(values, *INTENSITY_RANGE_HU) * inside
    return CoarseImage(grid, clipped, inside, body)


class _Correlator:
    """``c[d] = sum_i a[i] * b[i + d]`` for every shift d of a fixed- and a moving-grid array.

    The circular shift grid has at least ``A_f + A_m - 1`` entries per axis (rounded up to a
    fast FFT length), so no two shifts share an index; shift d sits at index ``d mod N``.
    Forward transforms are cached by the identity of the array passed in; the cache holds a
    reference to each array, so an identity is never reused while its entry lives.
    """

    def __init__(self, fixed_shape: tuple[int, ...], moving_shape: tuple[int, ...]):
        self.shape = tuple(
            int(scipy.fft.next_fast_len(a + b - 1, real=True))
            for a, b in zip(fixed_shape, moving_shape, strict=True)
        )
        self._axes = tuple(range(len(self.shape)))
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _spectrum(self, array: np.ndarray) -> np.ndarray:
        key = id(array)
        if key not in self._cache:
            self._cache[key] = (array, scipy.fft.rfftn(array, self.shape, axes=self._axes))
        return self._cache[key][1]

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        product = np.conj(self._spectrum(a)) * self._spectrum(b)
        return scipy.fft.irfftn(product, self.shape, axes=self._axes)

    def signed_shift(self, index: tuple[int, ...], fixed_shape: tuple[int, ...]) -> np.ndarray:
        """The shift d (array order) stored at circular ``index``."""
        return np.array(
            [
                b if b < n - (a - 1) else b - n
                for b, n, a in zip(index, self.shape, fixed_shape, strict=True)
            ],
            dtype=np.float64,
        )


MIN_VARIANCE_HU2 = 1.0  # per-voxel variance below which an overlap carries no pattern


def shift_scores(
    fixed: CoarseImage, moving: CoarseImage, min_overlap: float
) -> tuple[np.ndarray, np.ndarray, _Correlator]:
    """NCC and relative body overlap for every integer shift of ``moving`` against ``fixed``.

    Shift ``d`` (array order z, y, x) pairs fixed voxel ``i`` with moving voxel ``i + d``.
    Returns the NCC (``-inf`` where the bodies overlap by less than ``min_overlap`` of the
    smaller body, fewer than 8 voxels share the field of view, or either side is flat) and
    the body overlap fraction, both on the circular shift grid of the returned correlator.
    """
    correlate = _Correlator(fixed.values.shape, moving.values.shape)
    # centring on the window's middle changes no NCC and shrinks FFT round-off
    middle = 0.5 * sum(INTENSITY_RANGE_HU)
    f, fv = (fixed.values - middle) * fixed.inside, fixed.inside
    m, mv = (moving.values - middle) * moving.inside, moving.inside
    count = np.rint(correlate(fv, mv))
    sum_f, sum_m = correlate(f, mv), correlate(fv, m)
    sum_ff, sum_mm = correlate(f * f, mv), correlate(fv, m * m)
    sum_fm = correlate(f, m)
    bodies = np.rint(correlate(fixed.body, moving.body))
    smaller_body = max(min(fixed.body.sum(), moving.body.sum()), 1.0)
    overlap = bodies / smaller_body
    safe = np.maximum(count, 1.0)
    covariance = sum_fm - sum_f * sum_m / safe
    var_f = sum_ff - sum_f**2 / safe
    var_m = sum_mm - sum_m**2 / safe
    patterned = (var_f > MIN_VARIANCE_HU2 * safe) & (var_m > MIN_VARIANCE_HU2 * safe)
    ncc = np.clip(covariance / np.sqrt(np.maximum(var_f * var_m, 1e-12)), -1.0, 1.0)
    allowed = (overlap >= min_overlap) & (count >= 8.0) & patterned
    return np.where(allowed, ncc, -np.inf), overlap, correlate


def search_translation(
    fixed,
    moving,
    spacing_mm: float = 6.0,
    min_overlap: float = 0.5,
    coarse_fixed: CoarseImage | None = None,
) -> TranslationSearch:
    """The translation (fixed -> moving, LPS mm) that best overlays the moving body.

    Exhaustive over every shift on a ``spacing_mm`` grid, so it finds a thin moving slab
    anywhere in a long fixed scan, and two scanners' frames hundreds of mm apart. Rotations
    and scaling are left to the affine stage.

    Args:
        fixed, moving: 3-D CT images in HU (any grid, oblique included).
        spacing_mm: coarse grid spacing; the result is exact to about half of it.
        min_overlap: least overlapping body volume, as a fraction of the smaller body.
        coarse_fixed: ``coarse_image(fixed, spacing_mm)`` when the caller has it already.

    Raises:
        InputError: an image has no body above ``BODY_HU``, or no shift satisfies
            ``min_overlap``.
    """
    check_image(fixed, "fixed image")
    check_image(moving, "moving image")
    if not (0.0 < min_overlap <= 1.0):
        raise InputError(
            "min_overlap (least overlapping body volume, as a fraction of the "
            f"smaller body) must be in (0, 1]; got {min_overlap}."
        )
    if coarse_fixed is None:
        coarse_fixed = coarse_image(fixed, spacing_mm, "fixed image")
    elif not np.allclose(coarse_fixed.grid.spacing, spacing_mm):
        raise InputError(
            f"coarse_fixed has spacing {coarse_fixed.grid.spacing[0]} mm; the "
            f"search runs at {spacing_mm} mm. Build it with the same spacing."
        )
    coarse_moving = coarse_image(moving, spacing_mm, "moving image")
    ncc, overlap, correlate = shift_scores(coarse_fixed, coarse_moving, min_overlap)
    best = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
    if not np.isfinite(ncc[best]):
        raise InputError(
            "no translation overlays the moving body on the fixed body by "
            f"{min_overlap:.0%} of the smaller body volume; the images may not show the same "
            "anatomy. Pass an initial transform, lower min_overlap, or use "
            'elastix_affine(..., initialization="geometric-centre").'
        )
    shift_zyx = correlate.signed_shift(best, coarse_fixed.values.shape)
    # fixed voxel i (origin o_f) pairs with moving voxel i + d: x + t = o_m + s (i + d)
    translation = (
        np.asarray(coarse_moving.grid.origin)
        - np.asarray(coarse_fixed.grid.origin)
        + spacing_mm * shift_zyx[::-1]
    )
    result = TranslationSearch(translation, float(ncc[best]), float(overlap[best]), spacing_mm)
    logger.info(
        "translation search: t = (%.1f, %.1f, %.1f) mm, NCC %.3f, body overlap %.2f",
        *translation,
        result.correlation,
        result.body_overlap,
    )
    return result


@dataclass(frozen=True)
class AlignmentScore:
    """How well a transform overlays the moving image on the fixed one (coarse grid).

    Attributes:
        correlation: NCC of the windowed intensities over the voxels in both fields of view.
        fixed_body_covered: fraction of the fixed body whose mapped points lie in the
            moving field of view.
    """

    correlation: float
    fixed_body_covered: float


def smoothed_for(coarse: CoarseImage, image):
    """``image`` low-pass filtered for sampling onto ``coarse``'s grid (``alignment_score``)."""
    return antialias(as_float_image(image), coarse.grid.spacing[0])


def alignment_score(fixed: CoarseImage, moving_smooth, transform) -> AlignmentScore:
    """Score ``transform`` (fixed -> moving points) on the fixed image's coarse grid.

    ``moving_smooth`` is ``smoothed_for(fixed, moving)``, computed once per moving image
    for all the transforms scored against it.
    """
    values, inside = sample_image(moving_smooth, fixed.grid, transform)
    both = (inside.double().numpy() * fixed.inside) > 0
    body = fixed.body > 0
    covered = float((both & body).sum() / max(body.sum(), 1))
    if both.sum() < 8:
        return AlignmentScore(-1.0, covered)
    a = fixed.values[both]
    b = np.clip(values.double().numpy()[both], *INTENSITY_RANGE_HU)
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    correlation = float((a * b).sum() / denominator) if denominator > 0 else -1.0
    return AlignmentScore(correlation, covered)


def affine_from_matrix(matrix: np.ndarray, offset: np.ndarray):
    """``itk.AffineTransform[itk.D, 3]`` with ``T(x) = matrix @ x + offset`` (LPS mm)."""
    transform = itk_classes.affine_transform().New()
    transform.SetMatrix(matrix_like(transform.GetMatrix(), np.asarray(matrix)))
    transform.SetTranslation([float(v) for v in offset])
    return transform


def plausible_affine(matrix: np.ndarray, max_scale: float = 1.6) -> bool:
    """Whether a linear part is an orientation-preserving change of at most ``max_scale``.

    Patients differ in size by tens of per cent, not by factors; an affine outside these
    bounds means the optimiser has run away (e.g. collapsed a thin slab).
    """
    singular = np.linalg.svd(matrix, compute_uv=False)
    return bool(
        np.linalg.det(matrix) > 0
        and singular.max() <= max_scale
        and singular.min() >= 1.0 / max_scale
    )
