"""Reading and writing images: the one reader every command and function uses.

``read_image`` checks what can be checked before the voxels are allocated (the file exists,
its header: dimension, components, size against free memory, and for NIfTI the stored voxel
size, orientation and values, which ITK's reader would silently replace), then reads with the
file format's own ImageIO (NIfTI, MetaImage, NRRD; see ``itk_classes``) or ITK's factory for
other formats. A folder is read as a DICOM series with ITK's GDCM series reader.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, ResourceError
from .. import itk_classes
from .atomic import PathLike, atomic_write
from .nifti import header_problem, is_nifti, read_header, scan_values

logger = logging.getLogger(__name__)

#: Single-file formats: written atomically by one rename.
WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
#: What a CT is read as, by the file's component type (other integer types go to float,
#: which holds every integer up to 2^24 exactly).
_PIXEL_OF_COMPONENT = {
    "unsigned_char": "UC",
    "unsigned_short": "US",
    "short": "SS",
    "float": "F",
    "double": "D",
}
#: Bytes per voxel the registration holds besides the image itself (float copies for the
#: anti-aliasing filter and the sampler; see ``memory_needed``).
WORKING_BYTES_PER_VOXEL = 8


@dataclass(frozen=True)
class ImageInfo:
    """An image file's header: what is known before any voxel is read.

    Attributes:
        path: the file (or DICOM folder).
        size: voxels per axis, ITK order (x, y, z, ...).
        spacing: mm per axis.
        components: values per voxel (1 for a CT).
        component_type: ITK's name of the stored type (``"short"``, ``"float"``...).
        component_bytes: bytes per stored value.
    """

    path: Path
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    components: int
    component_type: str
    component_bytes: int

    @property
    def dimension(self) -> int:
        return len(self.size)

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.size, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.num_voxels * self.components * self.component_bytes


def _fail(what: str, path: Path, error: BaseException) -> InputError:
    text = " ".join(str(error).split())
    last = text.rsplit("ITK ERROR:", 1)[-1].strip()[:300] or type(error).__name__
    return InputError(
        f"{what} {path} cannot be read as an image ({last}); use a 3-D image "
        "in a format ITK reads (.nii.gz, .nii, .mha, .nrrd, or a DICOM folder)."
    )


def check_gzip(path: Path, what: str) -> None:
    """Decompress a ``.gz`` file to its end: ITK reads truncated gzip files without error."""
    if not str(path).lower().endswith(".gz"):
        return
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 22):
                pass
    except (EOFError, OSError, zlib.error) as error:
        raise InputError(
            f"{what} {path} is a damaged or truncated gzip file ({error}); copy or export it again."
        ) from error


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist; check the path.")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{what} {path} is an empty file; copy or export it again.")


# ---------------------------------------------------------------------------------------------
# header


def _image_io_for(path: Path):
    io = itk_classes.image_io(path)
    if io is not None:
        return io
    import itk

    return itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)


def read_image_info(path: PathLike, what: str = "image") -> ImageInfo:
    """The header of an image file (or of a DICOM folder's single series)."""
    path = Path(path)
    _require_file(path, what)
    if path.is_dir():
        files = dicom_series_files(path, what)
        info = read_image_info(files[0], what)
        return ImageInfo(
            path,
            (*info.size[:2], len(files)),
            info.spacing,
            info.components,
            info.component_type,
            info.component_bytes,
        )
    io = _image_io_for(path)
    if io is None:
        raise InputError(
            f"{what} {path} is not in an image format ITK reads; use .nii.gz, "
            ".nii, .mha, .nrrd or a DICOM folder."
        )
    try:
        io.SetFileName(str(path))
        if hasattr(io, "CanReadFile") and not io.CanReadFile(str(path)):
            raise InputError(
                f"{what} {path} is not a valid {path.suffix} file (its header "
                "cannot be parsed); copy or export it again."
            )
        io.ReadImageInformation()
    except InputError:
        raise
    except Exception as error:
        raise _fail(what, path, error) from error
    dims = int(io.GetNumberOfDimensions())
    return ImageInfo(
        path=path,
        size=tuple(int(io.GetDimensions(a)) for a in range(dims)),
        spacing=tuple(float(io.GetSpacing(a)) for a in range(dims)),
        components=int(io.GetNumberOfComponents()),
        component_type=str(io.GetComponentTypeAsString(io.GetComponentType())),
        component_bytes=int(io.GetComponentSize()),
    )


def memory_needed(info: ImageInfo) -> int:
    """Bytes the registration holds for this image: the image plus its float copies."""
    return info.nbytes + info.num_voxels * WORKING_BYTES_PER_VOXEL


def check_fits_memory(
    infos: Iterable[tuple[str, ImageInfo]], available: int | None, limit_note: str = ""
) -> None:
    """Refuse, before reading, images whose working copies exceed the available memory."""
    if available is None:
        return
    items = list(infos)
    need = sum(memory_needed(info) for _, info in items)
    if need <= available:
        return
    largest_what, largest = max(items, key=lambda item: memory_needed(item[1]))
    size = "x".join(str(v) for v in largest.size)
    raise ResourceError(
        f"{largest_what} {largest.path} declares {size} voxels ({largest.nbytes / 1e9:.1f} GB "
        f"as {largest.component_type}); the registration would need about {need / 1e9:.1f} GB "
        f"for its inputs but {available / 1e9:.1f} GB of memory is available{limit_note}. "
        "Crop or downsample the image first (e.g. to the body, at 1-2 mm), or use a machine "
        "with more memory."
    )


# ---------------------------------------------------------------------------------------------
# reading


def dicom_series_files(folder: Path, what: str) -> list[str]:
    """The files of the one DICOM series in ``folder`` (slice order by GDCM)."""
    import itk

    names = itk.GDCMSeriesFileNames.New()
    names.SetUseSeriesDetails(True)
    names.SetDirectory(str(folder))
    uids = list(names.GetSeriesUIDs())
    if not uids:
        raise InputError(
            f"{what} {folder} is a folder without a DICOM series; pass an image "
            "file or a folder holding one DICOM series."
        )
    if len(uids) > 1:
        listing = "; ".join(f"{uid} ({len(names.GetFileNames(uid))} files)" for uid in uids[:8])
        raise InputError(
            f"{what} {folder} holds {len(uids)} DICOM series ({listing}); put the "
            "series to register in a folder of its own."
        )
    return [str(f) for f in names.GetFileNames(uids[0])]


def _read_dicom(folder: Path, what: str):
    import itk

    files = dicom_series_files(folder, what)
    try:
        image = itk.imread(files, itk.F)
    except Exception as error:
        raise _fail(what, folder, error) from error
    logger.info("read %s from the DICOM series in %s (%d slices)", what, folder, len(files))
    return image


def _nifti_header(path: Path, what: str):
    """The stored NIfTI header, refused when ITK would replace its geometry silently."""
    try:
        header = read_header(path)
    except (EOFError, OSError, zlib.error) as error:
        raise InputError(
            f"{what} {path} is a damaged or truncated file ({error}); copy or export it again."
        ) from error
    if header is None:
        raise InputError(
            f"{what} {path} has no NIfTI header (not a .nii file); use a NIfTI, "
            ".mha or .nrrd image."
        )
    problem = header_problem(header)
    if problem:
        raise InputError(
            f"{what} {path}: {problem}; fix the header (set the voxel size and "
            "orientation, e.g. with SimpleITK or nibabel) and write it again."
        )
    return header


def _scan_nifti(path: Path, header, what: str) -> None:
    """One pass over the file: complete gzip stream, no NaN/inf stored voxels."""
    try:
        bad = scan_values(path, header)
    except (EOFError, OSError, zlib.error) as error:
        raise InputError(
            f"{what} {path} is a damaged or truncated gzip file ({error}); copy or export it again."
        ) from error
    if bad:
        raise InputError(
            f"{what} {path} stores {bad} NaN or infinite voxel values (ITK's "
            "NIfTI reader would turn them into zeros); replace them (for CT, "
            "with -1024 HU air) before registering."
        )


def read_image(
    path: PathLike,
    what: str = "image",
    *,
    scalar: bool = True,
    check_values: bool = True,
    available_memory: int | None = None,
) -> Any:
    """Read an image file or a DICOM folder, refusing what cannot be used.

    Args:
        path: the file (.nii.gz, .nii, .mha, .nrrd, any other format ITK reads) or a folder
            holding one DICOM series.
        what: how messages name it ("fixed image", "moving label map").
        scalar: require one value per voxel (images, labels, masks); False reads vector
            images (displacement fields) too.
        check_values: scan NIfTI voxel values for NaN/inf (the reader hides them).
        available_memory: bytes; refuse images whose working copies need more.

    Raises:
        FileNotFoundError: the path does not exist.
        InputError: unreadable, damaged, not 3-D, vector pixels when ``scalar``, or a NIfTI
            header or values that ITK would silently replace.
        ResourceError: the header declares more voxels than fit in memory.
    """
    path = Path(path)
    _require_file(path, what)
    if path.is_dir():
        return _read_dicom(path, what)
    header = _nifti_header(path, what) if is_nifti(path) else None
    info = read_image_info(path, what)
    if info.dimension != 3:
        raise InputError(
            f"{what} {path} is {info.dimension}-D; SAMConvex registers 3-D "
            "volumes. Pass a 3-D image (stack the slices of a 2-D series into a "
            "volume first)."
        )
    if scalar and info.components != 1:
        raise InputError(
            f"{what} {path} has {info.components} components per voxel; pass a "
            "scalar image (one value per voxel), e.g. extract one component "
            "first."
        )
    check_fits_memory([(what, info)], available_memory)
    if header is not None and check_values:
        _scan_nifti(path, header, what)
    else:
        check_gzip(path, what)
    if info.components != 1:
        import itk

        try:
            return itk.imread(str(path))
        except Exception as error:
            raise _fail(what, path, error) from error
    code = _PIXEL_OF_COMPONENT.get(info.component_type, "F")
    reader = itk_classes.image_reader(code).New()
    reader.SetFileName(str(path))
    io = itk_classes.image_io(path)
    if io is not None:
        reader.SetImageIO(io)
    try:
        reader.Update()
    except MemoryError as error:
        raise ResourceError(
            f"{what} {path} ({'x'.join(map(str, info.size))} voxels) does not "
            "fit in memory; crop or downsample it first, or use a machine "
            "with more memory."
        ) from error
    except Exception as error:
        if "allocate" in str(error).lower():
            raise ResourceError(
                f"{what} {path} ({'x'.join(map(str, info.size))} voxels) does "
                "not fit in memory; crop or downsample it first, or use a "
                "machine with more memory."
            ) from error
        raise _fail(what, path, error) from error
    return reader.GetOutput()


# ---------------------------------------------------------------------------------------------
# Python objects in


def _from_simpleitk(image: Any, what: str) -> Any:
    import SimpleITK as sitk

    if image.GetDimension() != 3:
        raise InputError(f"{what} is a {image.GetDimension()}-D SimpleITK image; pass a 3-D image.")
    array = sitk.GetArrayFromImage(image)
    code = {
        np.dtype("uint8"): "UC",
        np.dtype("uint16"): "US",
        np.dtype("int16"): "SS",
        np.dtype("float64"): "D",
    }.get(array.dtype, "F")
    if array.ndim != 3:
        raise InputError(
            f"{what} is a SimpleITK image with {image.GetNumberOfComponentsPerPixel()}"
            " components per voxel; pass a scalar image."
        )
    out = itk_classes.image_class(code).New()
    region = itk_classes.image_region()
    region.SetSize([int(v) for v in image.GetSize()])
    out.SetRegions(region)
    out.Allocate()
    out.SetSpacing([float(v) for v in image.GetSpacing()])
    out.SetOrigin([float(v) for v in image.GetOrigin()])
    out.SetDirection(itk_classes.direction_matrix(np.asarray(image.GetDirection()).reshape(3, 3)))
    itk_classes.array_view_from_image(out)[:] = array.astype(
        itk_classes.array_view_from_image(out).dtype
    )
    return out


def as_itk_image(value: Any, what: str) -> Any:
    """An ``itk.Image`` from an image, a path (read with :func:`read_image`) or a SimpleITK
    image (copied with its geometry); None stays None. Each conversion logs one line."""
    if value is None or hasattr(value, "GetLargestPossibleRegion"):
        return value
    if isinstance(value, str | os.PathLike):
        logger.info("%s given as a path: reading %s", what, value)
        return read_image(value, what)
    if type(value).__module__.startswith("SimpleITK"):
        logger.info(
            "%s is a SimpleITK image: copied into an itk.Image with its geometry "
            "(pass an itk.Image to avoid the copy)",
            what,
        )
        return _from_simpleitk(value, what)
    return value  # anything else is refused by the image checks, with the fix


# ---------------------------------------------------------------------------------------------
# writing


def _writer_pixel(image: Any) -> tuple[str, int] | None:
    name = type(image).__name__
    for code in itk_classes.PIXEL_CODES:
        if name == f"itkImage{code}3":
            return code, 1
        if name == f"itkImageV{code}33":
            return code, 3
    return None


def write_image(
    image: Any, path: PathLike, *, overwrite: bool = False, inputs: Iterable[PathLike | None] = ()
) -> Path:
    """Write an ITK image atomically, compressed, in a single-file format."""
    path = Path(path)
    if not path.name.lower().endswith(WRITABLE_SUFFIXES):
        raise InputError(
            f"cannot write {path}: use a single-file image format ({', '.join(WRITABLE_SUFFIXES)})."
        )

    def write_to(temp: Path) -> None:
        pixel = _writer_pixel(image)
        if pixel is None:
            import itk

            itk.imwrite(image, str(temp), compression=True)
            return
        writer = itk_classes.image_writer(*pixel).New()
        writer.SetInput(image)
        writer.SetFileName(str(temp))
        writer.SetUseCompression(True)
        io = itk_classes.image_io(temp)
        if io is not None:
            writer.SetImageIO(io)
        writer.Update()

    return atomic_write(path, write_to, overwrite=overwrite, inputs=inputs)


__all__ = [
    "WRITABLE_SUFFIXES",
    "ImageInfo",
    "as_itk_image",
    "check_fits_memory",
    "check_gzip",
    "dicom_series_files",
    "memory_needed",
    "read_image",
    "read_image_info",
    "write_image",
]
