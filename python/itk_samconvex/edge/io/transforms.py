"""Reading and writing transform files: ITK's (.h5 .tfm .txt .mat) and elastix's.

Every transform maps **fixed physical points to moving physical points** (LPS mm). Several
transforms in one ITK file are composed like ``antsApplyTransforms -t`` lists and ITK's
CompositeTransform: the last one in the file is applied first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ...errors import InputError
from .. import itk_classes
from .atomic import PathLike, atomic_write

logger = logging.getLogger(__name__)

TRANSFORM_SUFFIXES = (".h5", ".hdf5", ".tfm", ".txt", ".mat", ".xfm")

# classes the reader returns without ITK's lazy loader (see itk_classes)
_DIRECT_CLASSES = {
    "DisplacementFieldTransform": itk_classes.displacement_field_transform,
    "CompositeTransform": itk_classes.composite_transform,
    "AffineTransform": itk_classes.affine_transform,
    "TranslationTransform": itk_classes.translation_transform,
    "IdentityTransform": itk_classes.identity_transform,
}


def down_cast(transform: Any) -> Any:
    """The transform as its concrete Python class (the reader returns the base class)."""
    name = transform.GetNameOfClass()
    factory = _DIRECT_CLASSES.get(name)
    if factory is not None:
        try:
            return factory().cast(transform)
        except (TypeError, RuntimeError, AttributeError):
            pass  # e.g. a float transform: let ITK find its class
    import itk

    return itk.down_cast(transform)


def looks_like_elastix(path: Path) -> bool:
    """True for an elastix ``TransformParameters`` text file."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        head = handle.read(4096)
    return "(Transform " in head or "(TransformParameters" in head


def _read_itk_file(path: Path) -> list[Any]:
    io = itk_classes.transform_io(path)
    if io is None:  # a format without a direct IO class (.xfm): ITK's factories
        import itk

        return list(itk.transformread(str(path)))
    reader = itk_classes.transform_reader().New()
    reader.SetFileName(str(path))
    reader.SetTransformIO(io)
    reader.Update()
    transforms = []
    stack = reader.GetModifiableTransformList()
    while not stack.empty():
        transforms.append(down_cast(stack.pop()))
    transforms.reverse()
    return transforms


def read_transform(path: PathLike, fixed: Any = None, what: str = "transform file") -> Any:
    """Read an ITK transform file or an elastix ``TransformParameters`` file.

    Args:
        path: the file.
        fixed: the fixed image; needed only for elastix transforms without a closed form
            (B-splines...), which are densified on its grid with transformix.
        what: how messages name the file.

    Returns:
        One ITK transform (a CompositeTransform when the file holds several).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; check the path.")
    if path.suffix.lower() == ".txt" and looks_like_elastix(path):
        from ..elastix import read_parameter_file

        return read_parameter_file(path, fixed)
    if path.suffix.lower() not in TRANSFORM_SUFFIXES:
        raise InputError(
            f"{what} {path} has an unknown suffix; use one of {', '.join(TRANSFORM_SUFFIXES)} "
            "or an elastix TransformParameters.*.txt file."
        )
    try:
        transforms = _read_itk_file(path)
    except Exception as error:
        text = " ".join(str(error).split())
        raise InputError(f"cannot read {what} {path}: {text[-300:]}") from error
    if not transforms:
        raise InputError(f"{what} {path} holds no transform.")
    if len(transforms) == 1:
        return transforms[0]
    composite = itk_classes.composite_transform().New()
    for transform in transforms:
        composite.AddTransform(transform)
    return composite


def _single_precision_field(transform: Any) -> Any | None:
    """A ``DisplacementFieldTransform[F, 3]`` holding a double one's field as float32 (the
    precision the solver computes in), or None for other transforms or fields that are not
    float32-exact."""
    if transform.GetNameOfClass() != "DisplacementFieldTransform":
        return None
    import numpy as np

    from ..space import Grid, vector_image

    field = transform.GetDisplacementField()
    values = np.asarray(itk_classes.array_view_from_image(field))
    if values.dtype != np.float64 or not np.array_equal(values.astype(np.float32), values):
        return None
    single = itk_classes.displacement_field_transform("F").New()
    single.SetDisplacementField(vector_image(values.astype(np.float32), Grid.of(field), "F"))
    return single


def write_transform(
    transform: Any,
    path: PathLike,
    *,
    overwrite: bool = False,
    inputs: Iterable[PathLike | None] = (),
) -> Path:
    """Write an ITK transform file atomically; ``.h5`` is compressed.

    A DisplacementFieldTransform whose field is float32-exact (every field the registration
    returns) is stored in single precision in ``.h5`` files: fewer bytes, nothing lost, and
    ITK, SimpleITK and ANTs read it back as double.
    """
    path = Path(path)
    if path.suffix.lower() not in TRANSFORM_SUFFIXES:
        raise InputError(
            f"cannot write transform {path}: use one of {', '.join(TRANSFORM_SUFFIXES)}."
        )

    def write_to(temp: Path) -> None:
        single = (
            _single_precision_field(transform) if path.suffix.lower() in (".h5", ".hdf5") else None
        )
        pixel = "D" if single is None else "F"
        io = itk_classes.transform_io(temp, pixel)
        if io is None:
            import itk

            itk.transformwrite([transform], str(temp), compression=True)
            return
        writer = itk_classes.transform_writer(pixel).New()
        writer.SetFileName(str(temp))
        writer.SetInput(transform if single is None else single)
        writer.SetUseCompression(True)
        writer.SetTransformIO(io)
        writer.Update()

    return atomic_write(path, write_to, overwrite=overwrite, inputs=inputs)


__all__ = [
    "TRANSFORM_SUFFIXES",
    "down_cast",
    "looks_like_elastix",
    "read_transform",
    "write_transform",
]
