"""elastix interop: TransformParameters files, itk-elastix objects, affine pre-alignment.

elastix transforms map fixed points to moving points, like ITK's. With
``HowToCombineTransforms "Compose"`` a transform T1 with an initial transform T0 is
``T(x) = T1(T0(x))``: the initial stage acts first (verified against itk-elastix's own
CombinationTransform in test_transforms.py), so a chain of maps [T0, T1, ..., Tn] is the ITK
composite with Tn added first and T0 added last (ITK applies the last-added first).

Closed forms are built for the linear elastix transforms (Translation, Euler, Similarity,
Affine). Others (B-spline, ...) are densified with transformix on the fixed grid, which
needs itk-elastix and the fixed image.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import itk
import numpy as np

from ..errors import InputError
from . import itk_classes

logger = logging.getLogger(__name__)

ParameterMap = dict[str, list[str]]
LINEAR_TYPES = ("TranslationTransform", "EulerTransform", "SimilarityTransform", "AffineTransform")


def parse_parameter_text(text: str) -> ParameterMap:
    """Parse elastix parameter-file text: ``(Key value value ...)`` lines, ``//`` comments."""
    params: ParameterMap = {}
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].strip()
        match = re.fullmatch(r"\(\s*(\w+)\s*(.*)\)", line)
        if not match:
            continue
        key, rest = match.groups()
        params[key] = shlex.split(rest) if rest.strip() else []
    return params


def _floats(params: ParameterMap, key: str, count: int | None = None) -> list[float]:
    if key not in params:
        raise InputError(f"elastix parameters lack ({key} ...); the file is incomplete.")
    values = [float(v) for v in params[key]]
    if count is not None and len(values) != count:
        raise InputError(f"elastix ({key} ...) has {len(values)} values, expected {count}.")
    return values


def transform_from_map(params: ParameterMap):
    """The ITK transform of one elastix parameter map of a linear type (no chaining)."""
    kind = (params.get("Transform") or [""])[0]
    dim = int((params.get("FixedImageDimension") or ["3"])[0])
    if dim != 3:
        raise InputError(f"elastix transform is {dim}-D; SAMConvex needs 3-D transforms.")
    if kind == "TranslationTransform":
        transform = itk_classes.translation_transform().New()
        transform.SetParameters(_parameters(_floats(params, "TransformParameters", 3)))
        return transform
    centre = _floats(params, "CenterOfRotationPoint", 3)
    if kind == "EulerTransform":
        transform = itk.Euler3DTransform[itk.D].New()
        zyx = (params.get("ComputeZYX") or ["false"])[0].lower() == "true"
        transform.SetComputeZYX(zyx)
        values = _floats(params, "TransformParameters", 6)
    elif kind == "SimilarityTransform":
        transform = itk.Similarity3DTransform[itk.D].New()
        values = _floats(params, "TransformParameters", 7)
    elif kind == "AffineTransform":
        transform = itk_classes.affine_transform().New()
        values = _floats(params, "TransformParameters", 12)
    else:
        raise InputError(f"elastix transform type {kind!r} has no closed form here.")
    transform.SetCenter(centre)
    transform.SetParameters(_parameters(values))
    return transform


def _parameters(values: list[float]):
    array = itk.OptimizerParameters[itk.D](len(values))
    for i, v in enumerate(values):
        array.SetElement(i, float(v))
    return array


def read_parameter_file(path: str | os.PathLike, fixed=None):
    """ITK transform of an elastix ``TransformParameters.*.txt`` file, following its chain.

    ``InitialTransformParameterFileName`` entries are resolved relative to the file's folder
    when they are not found as given.
    """
    path = Path(path)
    chain: list[ParameterMap] = []
    seen: set[Path] = set()
    current: Path | None = path
    while current is not None:
        if current.resolve() in seen:
            raise InputError(f"elastix transform chain loops at {current}.")
        seen.add(current.resolve())
        params = parse_parameter_text(current.read_text(encoding="utf-8", errors="replace"))
        if "Transform" not in params:
            raise InputError(
                f"{current} is not an elastix TransformParameters file (no (Transform ...) entry)."
            )
        chain.append(params)
        initial = (params.get("InitialTransformParameterFileName") or ["NoInitialTransform"])[0]
        if initial in ("NoInitialTransform", ""):
            current = None
        else:
            candidate = Path(initial)
            if not candidate.is_file():
                candidate = current.parent / Path(initial).name
            if not candidate.is_file():
                raise InputError(
                    f"{current} chains to initial transform {initial}, which does not exist; "
                    "keep the TransformParameters files of all stages in one folder."
                )
            current = candidate
    return _compose_maps(list(reversed(chain)), fixed)


def _compose_maps(maps: list[ParameterMap], fixed=None):
    """ITK transform of elastix maps [T0 (first, the initial), ..., Tn]: Tn o ... o T0."""
    for params in maps[1:]:
        how = (params.get("HowToCombineTransforms") or ["Compose"])[0]
        if how != "Compose":
            raise InputError(
                f"elastix HowToCombineTransforms {how!r} is not supported; re-run elastix with "
                '(HowToCombineTransforms "Compose") or pass a dense transformix field.'
            )
    if all((p.get("Transform") or [""])[0] in LINEAR_TYPES for p in maps):
        transforms = [transform_from_map(p) for p in maps]
        if len(transforms) == 1:
            return transforms[0]
        composite = itk_classes.composite_transform().New()
        for transform in reversed(transforms):
            composite.AddTransform(transform)
        return composite
    return _dense_from_maps(maps, fixed)


def from_parameter_object(parameter_object, fixed=None):
    """ITK transform of an itk-elastix ``ParameterObject`` (maps chained in order)."""
    maps = []
    for i in range(parameter_object.GetNumberOfParameterMaps()):
        source = parameter_object.GetParameterMap(i)
        maps.append({k: list(source[k]) for k in source})
    if not maps:
        raise InputError("the elastix ParameterObject holds no parameter map.")
    return _compose_maps(maps, fixed)


def from_registration_method(method):
    """``ConvertToItkTransform(GetCombinationTransform())`` of a finished elastix run."""
    try:
        combined = method.GetCombinationTransform()
    except Exception as error:
        raise InputError(
            "the ElastixRegistrationMethod has no transform; call Update() on it first."
        ) from error
    if combined is None:
        raise InputError("the ElastixRegistrationMethod has no transform; call Update() first.")
    return method.ConvertToItkTransform(combined)


def _require_elastix():
    if not hasattr(itk, "ElastixRegistrationMethod"):
        raise InputError("this needs itk-elastix: pip install 'itk-samconvex[elastix]'.")
    try:
        itk.ParameterObject  # noqa: B018 - triggers itk's lazy load
    except AttributeError as error:
        raise InputError("this needs itk-elastix: pip install 'itk-samconvex[elastix]'.") from error


def _dense_from_maps(maps: list[ParameterMap], fixed):
    """DisplacementFieldTransform of any elastix chain, densified by transformix."""
    from .space import Grid, as_float_image
    from .transforms import displacement_transform

    if fixed is None:
        kinds = [(p.get("Transform") or ["?"])[0] for p in maps]
        raise InputError(
            f"elastix transform(s) {kinds} have no closed form; pass the fixed image so they "
            "can be densified on its grid."
        )
    _require_elastix()
    parameter_object = itk.ParameterObject.New()
    for index, params in enumerate(maps):
        params = dict(params)
        params["InitialTransformParameterFileName"] = ["NoInitialTransform"]
        del index
        parameter_object.AddParameterMap(params)
    import tempfile

    float_fixed = as_float_image(fixed)
    with tempfile.TemporaryDirectory(prefix="samconvex-transformix-") as scratch:
        # transformix writes deformationField.nii into its output directory (default: cwd)
        field = itk.transformix_deformation_field(
            float_fixed, parameter_object, output_directory=scratch
        )
        array = np.asarray(itk_classes.array_view_from_image(field), dtype=np.float32).copy()
    logger.info("densified elastix transform(s) on the fixed grid with transformix")
    return displacement_transform(array, Grid.of(fixed))


INITIALIZATIONS = ("search", "geometric-centre")


@dataclass
class PreAlignment:
    """What the affine pre-alignment did, for reports (``report.json``, ``summary.csv``).

    Attributes:
        transform: the ITK transform, fixed -> moving (LPS mm).
        method: what was returned: ``"affine"``, ``"similarity (inverted)"`` (registered
            moving to fixed because the moving field of view is partial), ``"translation"``
            (the search alone) or ``"affine (geometric-centre start)"``.
        fallback: why the translation replaced elastix's result (None when it did not).
        seconds: wall time of the whole pre-alignment.
        details: the search translation (mm), the alignment scores (NCC) and the coverage.
    """

    transform: Any
    method: str
    fallback: str | None = None
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for reports (the transform itself is written as ``affine.h5``)."""
        return {
            "method": self.method,
            "fallback": self.fallback,
            "seconds": round(self.seconds, 3),
            **self.details,
            "transform_class": self.transform.GetNameOfClass(),
        }


def elastix_affine(
    fixed,
    moving,
    iterations: int = 500,
    resolutions: int = 4,
    fixed_mask=None,
    moving_mask=None,
    threads: int | None = None,
    initialization: str = "search",
):
    """Affine pre-alignment with itk-elastix (fixed -> moving ITK transform).

    :func:`elastix_prealignment` does the same and also says what it did.

    elastix's default affine map (Mattes mutual information, adaptive stochastic gradient
    descent, ``resolutions`` levels of ``iterations`` each).

    ``initialization="search"`` (default) first finds where the moving body lies by an
    exhaustive translation search (:mod:`itk_samconvex.prealign`), which handles unrelated
    scanner frames and a moving scan that covers only part of the fixed one. When the moving
    field of view covers less than ``SWAP_BELOW`` of the fixed body, elastix registers the
    moving image to the fixed one instead (it samples its fixed image, and most fixed samples
    would fall outside a small moving image) with a similarity transform (a partial field of
    view does not constrain shear), and the result is inverted. The affine is kept
    only if it is plausible (``prealign.plausible_affine``) and overlays the images at least
    as well as the translation (windowed NCC on the search grid); otherwise, or when elastix
    fails, the translation is returned with a warning.

    ``initialization="geometric-centre"`` is elastix's own centre-of-images start, which
    suffices when the two scans cover the same anatomy.
    """
    return elastix_prealignment(
        fixed, moving, iterations, resolutions, fixed_mask, moving_mask, threads, initialization
    ).transform


def elastix_prealignment(
    fixed,
    moving,
    iterations: int = 500,
    resolutions: int = 4,
    fixed_mask=None,
    moving_mask=None,
    threads: int | None = None,
    initialization: str = "search",
    pair: str | None = None,
) -> PreAlignment:
    """:func:`elastix_affine` with a record of what it did (:class:`PreAlignment`).

    ``pair`` names the pair in the fallback warnings (batch runs many).
    """
    _require_elastix()
    if initialization not in INITIALIZATIONS:
        raise InputError(
            f"initialization must be one of {INITIALIZATIONS}; got {initialization!r}."
        )
    start = time.perf_counter()
    if initialization == "geometric-centre":
        transform = _elastix_affine_run(
            fixed,
            moving,
            iterations,
            resolutions,
            fixed_mask,
            moving_mask,
            threads,
            centre_start=True,
        )
        result = PreAlignment(transform, "affine (geometric-centre start)")
    else:
        result = _searched_affine(
            fixed, moving, iterations, resolutions, fixed_mask, moving_mask, threads, pair
        )
    result.seconds = time.perf_counter() - start
    return result


SEARCH_SPACING_MM = 6.0  # translation search grid
SWAP_BELOW = 0.7  # fixed-body coverage by the moving field of view below which roles swap
SCORE_SLACK = 0.02  # NCC the affine may lose against the translation before it is refused


def _searched_affine(
    fixed,
    moving,
    iterations: int,
    resolutions: int,
    fixed_mask,
    moving_mask,
    threads: int | None,
    pair: str | None = None,
) -> PreAlignment:
    """``elastix_affine`` with ``initialization="search"``.

    The transform is an ``itk.AffineTransform[itk.D, 3]`` when elastix gives a plausible
    affine that overlays the images at least as well as the translation, else the search's
    ``itk.TranslationTransform[itk.D, 3]`` (with a logged warning and the reason recorded).
    """
    where = f"pair {pair}: " if pair else ""
    from .prealign import (
        affine_from_matrix,
        alignment_score,
        coarse_image,
        plausible_affine,
        search_translation,
        smoothed_for,
    )
    from .space import check_image, linear_parts

    check_image(fixed, "fixed image")
    check_image(moving, "moving image")
    coarse_fixed = coarse_image(fixed, SEARCH_SPACING_MM, "fixed image")
    search = search_translation(fixed, moving, SEARCH_SPACING_MM, coarse_fixed=coarse_fixed)
    translation = search.translation_mm
    start = search.transform()
    moving_smooth = smoothed_for(coarse_fixed, moving)  # shared by both scores below
    start_score = alignment_score(coarse_fixed, moving_smooth, start)
    # the moving image moved by -t: elastix then starts from the identity
    shifted = _shifted(moving, -translation)
    shifted_mask = None if moving_mask is None else _shifted(moving_mask, -translation)
    swap = start_score.fixed_body_covered < SWAP_BELOW
    details: dict[str, Any] = {
        "search_translation_mm": [round(float(v), 2) for v in translation],
        "fixed_body_covered": round(float(start_score.fixed_body_covered), 3),
        "ncc_translation": round(float(start_score.correlation), 4),
    }

    def fallback(reason: str) -> PreAlignment:
        logger.warning(
            "%s%s; using the translation (%.1f, %.1f, %.1f) mm", where, reason, *translation
        )
        return PreAlignment(start, "translation", reason, details=details)

    try:
        if swap:
            # a partial field of view does not constrain shear and anisotropic scaling: a
            # similarity transform (rotation, translation, one scale), inverted afterwards
            logger.info(
                "moving field of view covers %.0f%% of the fixed body: registering "
                "moving to fixed (similarity) and inverting",
                100 * start_score.fixed_body_covered,
            )
            backward = _elastix_affine_run(
                shifted,
                fixed,
                iterations,
                resolutions,
                shifted_mask,
                fixed_mask,
                threads,
                centre_start=False,
                transform="SimilarityTransform",
            )
            m_back, t_back = linear_parts(backward)
            matrix = np.linalg.inv(m_back)
            offset = -matrix @ t_back
        else:
            forward = _elastix_affine_run(
                fixed,
                shifted,
                iterations,
                resolutions,
                fixed_mask,
                shifted_mask,
                threads,
                centre_start=False,
            )
            matrix, offset = linear_parts(forward)
    except RuntimeError as error:  # elastix reports its failures as RuntimeError
        last_line = (str(error).strip().splitlines() or [type(error).__name__])[-1]
        return fallback(f"elastix failed after the translation search ({last_line})")
    affine = affine_from_matrix(matrix, offset + translation)
    singular = np.round(np.linalg.svd(matrix, compute_uv=False), 2)
    details["singular_values"] = [float(v) for v in singular]
    if not plausible_affine(matrix):
        return fallback(f"elastix affine is implausible (singular values {singular.tolist()})")
    score = alignment_score(coarse_fixed, moving_smooth, affine)
    details["ncc_affine"] = round(float(score.correlation), 4)
    # NCC alone: between scans of different extent a good affine often moves part of the
    # fixed body out of the moving view (a guard on that coverage refused good affines on 4
    # of 12 head-neck pairs and lowered their mean affine Dice, benchmarks/prealignment.py)
    if score.correlation < start_score.correlation - SCORE_SLACK:
        return fallback(
            f"elastix affine overlays the images worse than the translation (NCC "
            f"{score.correlation:.3f} vs {start_score.correlation:.3f})"
        )
    logger.info(
        "%selastix affine: NCC %.3f (translation %.3f)",
        where,
        score.correlation,
        start_score.correlation,
    )
    return PreAlignment(
        affine, "similarity (inverted)" if swap else "affine", None, details=details
    )


def _shifted(image, delta_mm: np.ndarray):
    """The image with its origin moved by ``delta_mm`` (LPS): a translation of its content."""
    origin = np.asarray(image.GetOrigin(), dtype=np.float64) + delta_mm
    return itk.change_information_image_filter(
        image, output_origin=[float(v) for v in origin], change_origin=True
    )


def _elastix_affine_run(
    fixed,
    moving,
    iterations: int,
    resolutions: int,
    fixed_mask,
    moving_mask,
    threads: int | None,
    centre_start: bool,
    transform: str = "AffineTransform",
):
    """One elastix run of ``transform`` (its default affine map otherwise); returns the ITK
    transform mapping ``fixed`` points to ``moving`` points. ``centre_start``: elastix's
    geometric-centre initialisation, else it starts from the identity."""
    parameter_object = itk.ParameterObject.New()
    params = parameter_object.GetDefaultParameterMap("affine", resolutions)
    params["Transform"] = [transform]
    params["MaximumNumberOfIterations"] = [str(iterations)]
    params["AutomaticTransformInitialization"] = ["true" if centre_start else "false"]
    if centre_start:
        params["AutomaticTransformInitializationMethod"] = ["GeometricalCenter"]
    params["FinalBSplineInterpolationOrder"] = ["1"]
    parameter_object.AddParameterMap(params)
    from .space import as_float_image

    float_type = itk.Image[itk.F, 3]
    method = itk.ElastixRegistrationMethod[float_type, float_type].New(
        as_float_image(fixed),
        as_float_image(moving),
        parameter_object=parameter_object,
        log_to_console=False,
    )
    if fixed_mask is not None:
        method.SetFixedMask(_as_uc(fixed_mask))
    if moving_mask is not None:
        method.SetMovingMask(_as_uc(moving_mask))
    if threads:
        method.SetNumberOfThreads(int(threads))
    method.Update()
    return from_registration_method(method)


def _as_uc(mask):
    uc = itk.Image[itk.UC, 3]
    if isinstance(mask, uc):
        return mask
    binary = itk.binary_threshold_image_filter(
        mask, lower_threshold=1, inside_value=1, outside_value=0, ttype=(type(mask), uc)
    )
    return binary
