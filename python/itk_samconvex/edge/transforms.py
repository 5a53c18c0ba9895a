"""ITK transforms: initial-transform intake, baking ``A(x + u(x))`` into one field, file IO.

Every transform here maps **fixed physical points to moving physical points** (LPS mm),
the ITK registration convention: ``warped(x) = moving(T(x))``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import itk
import numpy as np
import torch

from ..errors import InputError
from .space import Grid, field_to_grid, vector_image

Tensor = torch.Tensor

TRANSFORM_SUFFIXES = (".h5", ".hdf5", ".tfm", ".txt", ".mat", ".xfm")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")  # single-file: atomic rename works


# ------------------------------------------------------------------------------------------
# intake of initial transforms


def as_transform(initial, fixed=None):
    """Turn anything a user may pass as an initial transform into an ``itk.Transform``.

    Accepts an ITK transform object (any type, including the result of itk-elastix's
    ``ConvertToItkTransform``), an ``itk.ElastixRegistrationMethod`` that has run, an
    elastix ``ParameterObject``, or a path to an ITK transform file (.h5, .tfm, .txt, .mat)
    or an elastix ``TransformParameters.*.txt`` file. ``fixed`` (the fixed image) is needed
    only for elastix transforms without a closed form (e.g. B-splines), which are densified
    on its grid with transformix.
    """
    if initial is None:
        return None
    if isinstance(initial, str | os.PathLike):
        return read_transform(initial, fixed)
    name = type(initial).__name__
    if "ElastixRegistrationMethod" in name:
        from .elastix import from_registration_method

        return from_registration_method(initial)
    if "ParameterObject" in name:
        from .elastix import from_parameter_object

        return from_parameter_object(initial, fixed)
    if hasattr(initial, "TransformPoint") and hasattr(initial, "GetNumberOfParameters"):
        return _as_double_transform(initial)
    raise TypeError(
        f"initial_transform must be an itk.Transform, an itk-elastix registration/parameter "
        f"object or a transform file path; got {name}."
    )


def _as_double_transform(transform):
    """A 3-D double-precision transform (what ITK's resampler and our baking accept)."""
    dims = (int(transform.GetInputSpaceDimension()), int(transform.GetOutputSpaceDimension()))
    if dims != (3, 3):
        raise InputError(
            f"initial_transform maps {dims[0]}-D to {dims[1]}-D points "
            f"({type(transform).__name__}); SAMConvex needs a 3-D transform."
        )
    probe = transform.TransformPoint([0.0, 0.0, 0.0])
    if "itkPointF" in type(probe).__name__:
        raise InputError(
            f"initial_transform is a single-precision transform ({type(transform).__name__}); "
            "build it as itk.<Type>[itk.D, 3] (ITK's resampler needs double precision)."
        )
    return transform


def read_transform(path: str | os.PathLike, fixed=None):
    """Read an ITK transform file or an elastix ``TransformParameters`` file.

    Several transforms in one ITK file are composed like ``antsApplyTransforms -t`` lists
    and ITK's CompositeTransform: the last one in the file is applied first.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"initial transform file {path} does not exist; check the path.")
    if path.suffix.lower() == ".txt" and _looks_like_elastix(path):
        from .elastix import read_parameter_file

        return read_parameter_file(path, fixed)
    if path.suffix.lower() not in TRANSFORM_SUFFIXES:
        raise InputError(
            f"initial transform file {path} has an unknown suffix; use one of "
            f"{', '.join(TRANSFORM_SUFFIXES)} or an elastix TransformParameters.*.txt file."
        )
    try:
        transforms = itk.transformread(str(path))
    except Exception as error:
        raise InputError(f"cannot read transform file {path}: {error}") from error
    if not transforms:
        raise InputError(f"transform file {path} holds no transform.")
    if len(transforms) == 1:
        return transforms[0]
    composite = itk.CompositeTransform[itk.D, 3].New()
    for transform in transforms:
        composite.AddTransform(transform)
    return composite


def _looks_like_elastix(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as handle:
        head = handle.read(4096)
    return "(Transform " in head or "(TransformParameters" in head


def linear_parts(transform) -> tuple[np.ndarray, np.ndarray] | None:
    """(M, t) with ``T(x) = M x + t`` when ``transform`` is linear, else None.

    Read by probing the transform at the origin and the unit points, which is exact for
    every ITK linear transform (affine, Euler, similarity, versor, translation, composites
    of those) whatever its centre or parameterisation.
    """
    if transform is None:
        return np.eye(3), np.zeros(3)
    try:
        linear = bool(transform.IsLinear())
    except AttributeError:
        return None
    if not linear:
        return None
    t = np.asarray(transform.TransformPoint([0.0, 0.0, 0.0]), dtype=np.float64)
    m = np.empty((3, 3))
    for axis in range(3):
        e = [0.0, 0.0, 0.0]
        e[axis] = 1.0
        m[:, axis] = np.asarray(transform.TransformPoint(e), dtype=np.float64) - t
    return m, t


# ------------------------------------------------------------------------------------------
# solver field -> ITK fields and transforms


def deformable_field(field_vox: Tensor, working: Grid, target: Grid) -> np.ndarray:
    """u(x) in LPS mm on ``target`` (Z, Y, X, 3) from a voxel field on ``working``."""
    return field_to_grid(field_vox, working, target)


def baked_field(field_vox: Tensor, working: Grid, target: Grid, initial) -> np.ndarray:
    """``A(x + u(x)) - x`` in LPS mm on ``target``: the initial transform baked in.

    Linear ``A`` is applied in closed form; any other transform through ITK's
    TransformToDisplacementFieldFilter on the composite ``A o (id + u)``.
    """
    parts = linear_parts(initial)
    if parts is not None:
        m, t = parts
        d_s = target.direction_matrix @ np.diag(target.spacing)
        delta = m - np.eye(3)
        c0 = delta @ np.asarray(target.origin) + t
        return field_to_grid(field_vox, working, target, linear_map=m,
                             index_affine=(c0, delta @ d_s))
    u = deformable_field(field_vox, working, target)
    composite = itk.CompositeTransform[itk.D, 3].New()
    composite.AddTransform(initial)
    composite.AddTransform(displacement_transform(u, target))
    return dense_field_of(composite, target)


def dense_field_of(transform, grid: Grid) -> np.ndarray:
    """``T(x) - x`` of any ITK transform at the voxels of ``grid``, float32 (Z, Y, X, 3)."""
    reference = itk.Image[itk.UC, 3].New()
    region = itk.ImageRegion[3]()
    region.SetSize([int(v) for v in grid.size])
    reference.SetRegions(region)
    grid.apply_to(reference)
    field_type = itk.Image[itk.Vector[itk.F, 3], 3]
    filt = itk.TransformToDisplacementFieldFilter[field_type, itk.D].New()
    filt.SetTransform(transform)
    filt.SetUseReferenceImage(True)
    filt.SetReferenceImage(reference)
    filt.Update()
    return np.asarray(itk.array_view_from_image(filt.GetOutput()), dtype=np.float32).copy()


def displacement_transform(field_mm: np.ndarray, grid: Grid):
    """``itk.DisplacementFieldTransform[itk.D, 3]`` with ``T(x) = x + u(x)``.

    ``field_mm`` is (Z, Y, X, 3) LPS mm on ``grid``. The transform owns a float64 copy, as
    ITK's resampler only accepts double-precision transforms.
    """
    transform = itk.DisplacementFieldTransform[itk.D, 3].New()
    transform.SetDisplacementField(vector_image(field_mm.astype(np.float64), grid, itk.D))
    return transform


def transform_field_image(transform):
    """The displacement field image of a DisplacementFieldTransform (float32 copy)."""
    field = transform.GetDisplacementField()
    array = np.asarray(itk.array_view_from_image(field), dtype=np.float32)
    return vector_image(array, Grid.of(field), itk.F)


# ------------------------------------------------------------------------------------------
# atomic output


def default_file_mode() -> int:
    """Permissions of a new file under the current umask (mkstemp alone gives 0600).

    Reads the umask from /proc (Linux) so as not to change it, even briefly, in a
    multi-threaded worker; elsewhere it is read by setting and restoring it.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_target(path: Path) -> str:
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    os.chmod(temp, default_file_mode())
    return temp


def _replace(temp: str, path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        os.unlink(temp)
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace "
                              "it.")
    os.replace(temp, path)


def write_transform(transform, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write an ITK transform file atomically (temp file + rename); .h5 is compressed."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace "
                              "it.")
    temp = _atomic_target(path)
    try:
        itk.transformwrite([transform], temp, compression=True)
        _replace(temp, path, overwrite)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return path


def write_image(image, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write an ITK image atomically (temp file + rename), compressed.

    Only single-file formats (.nii.gz, .nii, .mha, .nrrd) can be renamed atomically;
    header + data pairs such as .mhd/.raw are refused.
    """
    path = Path(path)
    if not path.name.lower().endswith(IMAGE_SUFFIXES):
        raise InputError(f"cannot write {path}: use a single-file image format "
                         f"({', '.join(IMAGE_SUFFIXES)}).")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace "
                              "it.")
    temp = _atomic_target(path)
    try:
        itk.imwrite(image, temp, compression=True)
        _replace(temp, path, overwrite)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return path
