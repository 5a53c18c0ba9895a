"""What ITK's NIfTI reader does not tell: the stored header and the stored voxel values.

ITK's NIfTI reader substitutes defaults for some header fields (a zero ``pixdim`` is read as
1.0 mm spacing) and may turn NaN voxels into zeros, after which no check on the ITK image
can see them. These functions read the file itself (NIfTI-1 and NIfTI-2, either byte order,
gzip or not) so the reader can refuse such files with a message that names the problem.
"""

from __future__ import annotations

import gzip
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# NIfTI datatype codes -> numpy dtypes (the ones a CT can hold)
_DTYPES = {
    2: "u1",
    4: "i2",
    8: "i4",
    16: "f4",
    64: "f8",
    256: "i1",
    512: "u2",
    768: "u4",
    1024: "i8",
    1280: "u8",
}
_FLOAT_CODES = (16, 64)


@dataclass(frozen=True)
class NiftiHeader:
    """The fields of a NIfTI header that decide geometry and values.

    Attributes:
        dims: (nx, ny, nz, ...) as stored (``dim[1..dim[0]]``).
        pixdim: stored voxel sizes along those axes (``pixdim[1..3]``).
        datatype: NIfTI datatype code.
        vox_offset: byte offset of the voxel data.
        byte_order: ``"<"`` or ``">"``.
        geometry: the stored orientation numbers (quaternion, offsets, sform rows).
    """

    dims: tuple[int, ...]
    pixdim: tuple[float, float, float]
    datatype: int
    vox_offset: int
    byte_order: str
    geometry: tuple[float, ...]

    @property
    def num_voxels(self) -> int:
        return int(np.prod([max(d, 1) for d in self.dims], dtype=np.int64))

    @property
    def dtype(self) -> np.dtype | None:
        code = _DTYPES.get(self.datatype)
        return None if code is None else np.dtype(self.byte_order + code)


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith((".nii", ".nii.gz"))


def _open(path: Path):
    return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else open(path, "rb")


def read_header(path: str | Path) -> NiftiHeader | None:
    """The header of a NIfTI file, or None when it is not a NIfTI-1/2 header."""
    with _open(Path(path)) as handle:
        raw = handle.read(540)
    if len(raw) < 348:
        return None
    for order in ("<", ">"):
        size = struct.unpack(order + "i", raw[:4])[0]
        if size == 348:
            dim = struct.unpack(order + "8h", raw[40:56])
            pixdim = struct.unpack(order + "8f", raw[76:108])
            datatype = struct.unpack(order + "h", raw[70:72])[0]
            offset = struct.unpack(order + "f", raw[108:112])[0]
            quatern = struct.unpack(order + "6f", raw[256:280])
            srow = struct.unpack(order + "12f", raw[280:328])
            break
        if size == 540 and len(raw) >= 540:
            datatype = struct.unpack(order + "h", raw[12:14])[0]
            dim = struct.unpack(order + "8q", raw[16:80])
            pixdim = struct.unpack(order + "8d", raw[104:168])
            offset = struct.unpack(order + "q", raw[168:176])[0]
            quatern = struct.unpack(order + "6d", raw[352:400])
            srow = struct.unpack(order + "12d", raw[400:496])
            break
    else:
        return None
    ndim = max(0, min(int(dim[0]), 7))
    return NiftiHeader(
        dims=tuple(int(d) for d in dim[1 : 1 + ndim]),
        pixdim=tuple(float(v) for v in pixdim[1:4]),  # type: ignore[arg-type]
        datatype=int(datatype),
        vox_offset=int(offset),
        byte_order=order,
        geometry=tuple(float(v) for v in (*quatern, *srow)),
    )


def header_problem(header: NiftiHeader) -> str | None:
    """Why the stored geometry cannot be trusted (zero or non-finite spacing, non-finite
    orientation), or None."""
    spatial = min(3, len(header.dims))
    spacing = header.pixdim[:spatial]
    if any(not math.isfinite(v) for v in spacing):
        return (
            f"its header stores a non-finite voxel size (pixdim {spacing}), which ITK "
            "would replace by a default"
        )
    if any(v == 0 for v in spacing):
        return (
            f"its header stores a zero voxel size (pixdim {spacing}), which ITK reads as "
            "1 mm: the geometry would be wrong"
        )
    if any(not math.isfinite(v) for v in header.geometry):
        return "its header stores a non-finite origin or orientation (qform/sform)"
    return None


def scan_values(path: str | Path, header: NiftiHeader, chunk_bytes: int = 1 << 24) -> int:
    """Read the whole file once; return the number of NaN or infinite stored voxels (0 for
    integer types).

    Streaming to the end also proves a ``.nii.gz`` complete: a truncated or damaged gzip
    stream raises EOFError, OSError or zlib.error here (ITK would read it without error).
    Memory stays at one chunk whatever the image size.
    """
    dtype = header.dtype if header.datatype in _FLOAT_CODES else None
    data_bytes = header.num_voxels * (dtype.itemsize if dtype is not None else 0)
    if dtype is not None:
        chunk_bytes -= chunk_bytes % dtype.itemsize
    bad = 0
    position = 0
    with _open(Path(path)) as handle:
        while True:
            block = handle.read(chunk_bytes)
            if not block:
                break
            if dtype is not None:
                start = max(header.vox_offset - position, 0)
                stop = min(len(block), header.vox_offset + data_bytes - position)
                if stop > start:
                    part = block[start:stop]
                    usable = len(part) - len(part) % dtype.itemsize
                    values = np.frombuffer(part[:usable], dtype=dtype)
                    bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            position += len(block)
    return bad


__all__ = ["NiftiHeader", "header_problem", "is_nifti", "read_header", "scan_values"]
