"""The ITK classes the edge layer uses, loaded from their own SWIG submodules.

``itk.<Name>`` goes through ITK's lazy loader, which loads the whole wrapping *module* of a
class and every module it depends on. For ``itk.DisplacementFieldTransform`` that is
ITKDisplacementField plus ITKSmoothing, ITKImageIntensity, ITKImageGrid, ITKFFT, ... : about
6 s on a 2-core machine, more than a warm registration. Importing the class's own SWIG
submodule (``itk.itkDisplacementFieldTransformPython``) gives the same class object
(``itk.DisplacementFieldTransform[itk.D, 3] is`` the class returned here) in about 0.1 s.
File IO is the same story: ``itk.imread`` registers every image IO factory (about 25 IO
modules), while a reader given the NIfTI, MetaImage or NRRD IO object loads none of them.

Every function falls back to the lazy ``itk`` attribute when a submodule or class name is
missing (another ITK build), so only speed depends on these names, never behaviour.
Measurements: ``benchmarks/cold_start.py``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Pixel codes of ITK's Python wrapping (``itkImageSS3`` holds ``short``).
PIXEL_CODES = ("UC", "US", "SS", "F", "D")

_cache: dict[tuple[str, str], Any] = {}


def _swig(module: str, name: str, fallback: Callable[[], Any]) -> Any:
    """``itk.<module>.<name>`` (a SWIG submodule's class), else ``fallback()``."""
    key = (module, name)
    if key not in _cache:
        try:
            _cache[key] = getattr(importlib.import_module(f"itk.{module}"), name)
        except (ImportError, AttributeError):
            logger.debug("itk.%s.%s not found; using ITK's lazy loader", module, name)
            _cache[key] = fallback()
    return _cache[key]


def _itk() -> Any:
    import itk

    return itk


def itk_version() -> str:
    """The ITK version of the Python wrapping (e.g. ``"5.4.7"``)."""
    return str(getattr(_itk(), "__version__", "unknown"))


def _pixel(code: str) -> Any:
    return getattr(_itk(), code)


def image_class(pixel: str, components: int = 1) -> Any:
    """``itk.Image[pixel, 3]`` (``components=1``) or ``itk.Image[itk.Vector[pixel, 3], 3]``."""
    if components == 1:
        return _swig("itkImagePython", f"itkImage{pixel}3", lambda: _itk().Image[_pixel(pixel), 3])
    return _swig(
        "itkImagePython",
        f"itkImageV{pixel}{components}3",
        lambda: _itk().Image[_itk().Vector[_pixel(pixel), components], 3],
    )


def image_region() -> Any:
    """A new ``itk.ImageRegion[3]`` (from its submodule: the lazy name loads ITKCommon)."""
    return _swig("itkImageRegionPython", "itkImageRegion3", lambda: _itk().ImageRegion[3])()


def direction_matrix(rows: Any) -> Any:
    """An ``itk.Matrix[itk.D, 3, 3]`` holding the 3x3 ``rows`` (an image direction).

    Built from the SWIG submodules' ``vnl_matrix_fixed``: ITK converts a numpy direction
    through ``itk.PyVnl``, whose lazy name loads the whole ITKCommon wrapping.
    """
    try:
        matrix = importlib.import_module("itk.itkMatrixPython").itkMatrixD33
        vnl = importlib.import_module("itk.vnl_matrix_fixedPython").vnl_matrix_fixedD_3_3()
    except (ImportError, AttributeError):
        import numpy as np

        return _itk().GetMatrixFromArray(np.ascontiguousarray(rows, dtype=np.float64))
    for r in range(3):
        for c in range(3):
            vnl.put(r, c, float(rows[r][c]))
    return matrix(vnl)


def pixel_code(image: Any) -> str | None:
    """The wrapping pixel code of a 3-D scalar image (``"SS"``, ``"F"``...), else None."""
    name = type(image).__name__
    for code in PIXEL_CODES:
        if name == f"itkImage{code}3":
            return code
    return None


#: numpy dtype of each wrapping pixel code an array view can hold.
_VIEW_DTYPES = {
    "UC": "uint8",
    "SC": "int8",
    "US": "uint16",
    "SS": "int16",
    "UI": "uint32",
    "SI": "int32",
    "UL": "uint64",
    "SL": "int64",
    "F": "float32",
    "D": "float64",
}


def _view_layout(image: Any) -> tuple[str, int] | None:
    """(pixel code, components) of an ``itkImage<code>3`` or ``itkImageV<code>33``, else None."""
    name = type(image).__name__
    if not (name.startswith("itkImage") and name.endswith("3")):
        return None
    code = name[len("itkImage") : -1]
    if code in _VIEW_DTYPES:
        return code, 1
    if code.startswith("V") and code.endswith("3") and code[1:-1] in _VIEW_DTYPES:
        return code[1:-1], 3
    return None


def array_view_from_image(image: Any) -> Any:
    """``itk.array_view_from_image(image)``: the voxels as a (Z, Y, X[, 3]) numpy view.

    For 3-D scalar and 3-vector images the view comes from the image's own ``PyBuffer``
    SWIG class: ITK's wrapper function checks ``isinstance(image, itk.VectorImage)``, and
    that name makes the lazy loader import the whole ITKCommon wrapping (about 0.4-0.6 s of a
    one-shot registration). The result is the same kind of array (``NDArrayITKBase``, which
    keeps the image alive) on the same buffer; other images use ITK's function.
    """
    layout = _view_layout(image)
    module = None
    if layout is not None:
        try:
            module = importlib.import_module("itk.itkPyBufferPython")
            buffer_class = getattr(module, "itkPyBufferI" + type(image).__name__[len("itkImage") :])
        except (ImportError, AttributeError):
            module = None
    if module is None or image.GetBufferPointer() is None:
        return _itk().array_view_from_image(image)
    import numpy as np

    source = image.GetSource()
    if source:
        source.UpdateLargestPossibleRegion()
    size = image.GetBufferedRegion().GetSize()
    shape = [int(size[axis]) for axis in (2, 1, 0)]
    code, components = layout
    if components > 1:
        shape.append(components)
    memory = buffer_class._GetArrayViewFromImage(image)
    view = np.asarray(memory).view(dtype=_VIEW_DTYPES[code]).reshape(shape).view(np.ndarray)
    return module.NDArrayITKBase(view, image)


def displacement_field_transform(pixel: str = "D") -> Any:
    """``itk.DisplacementFieldTransform[itk.D, 3]`` (``[itk.F, 3]`` with ``pixel="F"``)."""
    return _swig(
        "itkDisplacementFieldTransformPython",
        f"itkDisplacementFieldTransform{pixel}3",
        lambda: _itk().DisplacementFieldTransform[_pixel(pixel), 3],
    )


def composite_transform() -> Any:
    """``itk.CompositeTransform[itk.D, 3]``."""
    return _swig(
        "itkCompositeTransformPython",
        "itkCompositeTransformD3",
        lambda: _itk().CompositeTransform[_itk().D, 3],
    )


def affine_transform() -> Any:
    """``itk.AffineTransform[itk.D, 3]``."""
    return _swig(
        "itkAffineTransformPython",
        "itkAffineTransformD3",
        lambda: _itk().AffineTransform[_itk().D, 3],
    )


def translation_transform() -> Any:
    """``itk.TranslationTransform[itk.D, 3]``."""
    return _swig(
        "itkTranslationTransformPython",
        "itkTranslationTransformD3",
        lambda: _itk().TranslationTransform[_itk().D, 3],
    )


def identity_transform() -> Any:
    """``itk.IdentityTransform[itk.D, 3]``."""
    return _swig(
        "itkIdentityTransformPython",
        "itkIdentityTransformD3",
        lambda: _itk().IdentityTransform[_itk().D, 3],
    )


def transform_to_field_filter() -> Any:
    """``itk.TransformToDisplacementFieldFilter[Image[Vector[F, 3], 3], itk.D]``."""
    return _swig(
        "itkTransformToDisplacementFieldFilterPython",
        "itkTransformToDisplacementFieldFilterIVF33D",
        lambda: _itk().TransformToDisplacementFieldFilter[
            _itk().Image[_itk().Vector[_itk().F, 3], 3], _itk().D
        ],
    )


def resample_filter(pixel: str) -> Any:
    """``itk.ResampleImageFilter[Image[pixel, 3], Image[pixel, 3]]``."""
    return _swig(
        "itkResampleImageFilterPython",
        f"itkResampleImageFilterI{pixel}3I{pixel}3",
        lambda: _itk().ResampleImageFilter[image_class(pixel), image_class(pixel)],
    )


def interpolator(pixel: str, nearest: bool) -> Any:
    """Linear or nearest-neighbour ``InterpolateImageFunction[Image[pixel, 3], itk.D]``."""
    kind = "NearestNeighbor" if nearest else "Linear"
    return _swig(
        f"itk{kind}InterpolateImageFunctionPython",
        f"itk{kind}InterpolateImageFunctionI{pixel}3D",
        lambda: getattr(_itk(), f"{kind}InterpolateImageFunction")[image_class(pixel), _itk().D],
    )


def smoothing_filter() -> Any:
    """``itk.SmoothingRecursiveGaussianImageFilter[Image[F, 3], Image[F, 3]]``."""
    return _swig(
        "itkSmoothingRecursiveGaussianImageFilterPython",
        "itkSmoothingRecursiveGaussianImageFilterIF3IF3",
        lambda: _itk().SmoothingRecursiveGaussianImageFilter[image_class("F"), image_class("F")],
    )


def image_reader(pixel: str) -> Any:
    return _swig(
        "itkImageFileReaderPython",
        f"itkImageFileReaderI{pixel}3",
        lambda: _itk().ImageFileReader[image_class(pixel)],
    )


def image_writer(pixel: str, components: int = 1) -> Any:
    suffix = f"I{pixel}3" if components == 1 else f"IV{pixel}{components}3"
    return _swig(
        "itkImageFileWriterPython",
        f"itkImageFileWriter{suffix}",
        lambda: _itk().ImageFileWriter[image_class(pixel, components)],
    )


_IMAGE_IOS = {
    (".nii.gz", ".nii"): ("itkNiftiImageIOPython", "itkNiftiImageIO", "NiftiImageIO"),
    (".mha", ".mhd"): ("itkMetaImageIOPython", "itkMetaImageIO", "MetaImageIO"),
    (".nrrd", ".nhdr"): ("itkNrrdImageIOPython", "itkNrrdImageIO", "NrrdImageIO"),
}

_TRANSFORM_IOS = {
    (".h5", ".hdf5"): (
        "itkHDF5TransformIOPython",
        "itkHDF5TransformIOTemplateD",
        "HDF5TransformIOTemplate",
    ),
    (".tfm", ".txt"): (
        "itkTxtTransformIOPython",
        "itkTxtTransformIOTemplateD",
        "TxtTransformIOTemplate",
    ),
    (".mat",): (
        "itkMatlabTransformIOPython",
        "itkMatlabTransformIOTemplateD",
        "MatlabTransformIOTemplate",
    ),
}


def _suffix_entry(path: str | Path, table: dict) -> tuple[str, str, str] | None:
    name = str(path).lower()
    for suffixes, entry in table.items():
        if name.endswith(suffixes):
            return entry
    return None


def image_io(path: str | Path) -> Any | None:
    """A new ImageIO object for NIfTI, MetaImage or NRRD files (by suffix), else None."""
    entry = _suffix_entry(path, _IMAGE_IOS)
    if entry is None:
        return None
    module, name, lazy = entry
    return _swig(module, name, lambda: getattr(_itk(), lazy)).New()


def transform_io(path: str | Path, pixel: str = "D") -> Any | None:
    """A new TransformIO (double, or float with ``pixel="F"``) for .h5/.hdf5, .tfm/.txt or
    .mat files, else None."""
    entry = _suffix_entry(path, _TRANSFORM_IOS)
    if entry is None:
        return None
    module, name, lazy = entry
    return _swig(module, name[:-1] + pixel, lambda: getattr(_itk(), lazy)[_pixel(pixel)]).New()


def transform_reader() -> Any:
    return _swig(
        "itkTransformFileReaderPython",
        "itkTransformFileReaderTemplateD",
        lambda: _itk().TransformFileReaderTemplate[_itk().D],
    )


def transform_writer(pixel: str = "D") -> Any:
    return _swig(
        "itkTransformFileWriterPython",
        f"itkTransformFileWriterTemplate{pixel}",
        lambda: _itk().TransformFileWriterTemplate[_pixel(pixel)],
    )


__all__ = [
    "PIXEL_CODES",
    "affine_transform",
    "composite_transform",
    "displacement_field_transform",
    "identity_transform",
    "image_class",
    "image_io",
    "image_reader",
    "image_writer",
    "interpolator",
    "itk_version",
    "pixel_code",
    "resample_filter",
    "smoothing_filter",
    "transform_io",
    "transform_reader",
    "transform_to_field_filter",
    "transform_writer",
    "translation_transform",
]
