"""Training data for SAM: CT volumes on a 2 mm grid and pairs of randomly scaled views.

A *view* is an axis-aligned crop of a volume resampled at spacing ``b * s``, where ``b`` is the
network's input spacing (2 mm as published; the volume's own grid) and ``s`` is drawn per view
in [0.8, 1.2]; its voxel (k, j, i) sits at the physical position
``corner + spacing * (k, j, i)`` (mm, volume frame, z first), which is what defines the
correspondences between two views of the same volume (notes/algorithm.md §3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
BASE_SPACING_MM = 2.0


@dataclass
class Volume:
    """A CT volume on an isotropic grid, cropped to the body.

    Attributes:
        hu: (Z, Y, X) float32 Hounsfield units.
        name: file name (for logs).
        spacing_mm: the grid's spacing (the network's input spacing).
    """

    hu: torch.Tensor
    name: str
    spacing_mm: float = BASE_SPACING_MM

    @property
    def extent_mm(self) -> np.ndarray:
        return (np.asarray(self.hu.shape) - 1) * self.spacing_mm


def find_ct_files(folder: str | Path) -> list[Path]:
    """CT images under ``folder`` (recursive); label maps and masks are skipped later."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(
            f"CT folder {folder} does not exist; pass a folder of CT images "
            "(.nii.gz, .nii, .mha, .nrrd)."
        )
    return sorted(p for p in folder.rglob("*") if p.name.lower().endswith(IMAGE_SUFFIXES))


def load_volume(
    path: Path, min_size_mm: float = 60.0, spacing_mm: float = BASE_SPACING_MM
) -> Volume | None:
    """Read, resample to ``spacing_mm`` (linear, anti-aliased), crop to the body; None if not CT."""
    from ...edge.checks import ct_problem, summarize
    from ...edge.io import read_image
    from ...edge.space import (
        antialias,
        array_view,
        check_image,
        foreground_box,
        sample_image,
        working_grid,
    )

    try:
        image = read_image(path, str(path))
        grid = check_image(image, str(path))
    except Exception as error:  # not a readable 3-D scalar image
        logger.info("skipping %s: %s", path, error)
        return None
    problem = ct_problem(summarize(np.asarray(array_view(image))))
    if problem is not None:
        logger.info("skipping %s: %s", path, problem)
        return None
    box = foreground_box(image, grid, -500.0, 8.0)
    target = working_grid(grid, spacing_mm, 1, box)
    hu, _ = sample_image(antialias(image, spacing_mm), target)
    if min(target.size) * spacing_mm < min_size_mm:
        logger.info("skipping %s: body smaller than %g mm", path, min_size_mm)
        return None
    return Volume(hu.contiguous(), path.name, spacing_mm)


@dataclass
class ViewPair:
    """Two views of one volume.

    Attributes:
        images: (2, 1, Z, Y, X) HU.
        corners: (2, 3) position (mm, z y x, volume frame) of each view's voxel (0, 0, 0).
        spacings: (2,) spacing (mm) of each view.
    """

    images: torch.Tensor
    corners: torch.Tensor
    spacings: torch.Tensor


def sample_view_pair(
    volume: Volume,
    shape: tuple[int, int, int],
    rng: np.random.Generator,
    overlap_probability: float = 0.8,
    scale_range=(0.8, 1.2),
) -> ViewPair:
    """Two randomly scaled crops of ``volume``, overlapping with the given probability.

    Crops are placed per axis: when overlapping, the second crop's start is within the first
    crop's extent minus a minimum overlap (20 voxels in-plane, 5 along z at 2 mm, or what
    the volume allows); otherwise it is drawn anywhere.
    """
    extent = volume.extent_mm
    scales = rng.uniform(*scale_range, size=2)
    spacings = volume.spacing_mm * scales
    sizes = np.asarray(shape, dtype=np.float64)[None] * spacings[:, None]  # (2, 3) mm
    overlap = rng.random() < overlap_probability
    minimum = np.array([5.0, 20.0, 20.0]) * volume.spacing_mm
    corners = np.zeros((2, 3))
    for axis in range(3):
        room0 = extent[axis] - sizes[0, axis]
        corners[0, axis] = rng.uniform(min(0.0, room0), max(0.0, room0))
        if overlap:
            low = corners[0, axis] - sizes[1, axis] + min(minimum[axis], sizes[:, axis].min())
            high = corners[0, axis] + sizes[0, axis] - min(minimum[axis], sizes[:, axis].min())
            corners[1, axis] = rng.uniform(low, max(low, high))
        else:
            room1 = extent[axis] - sizes[1, axis]
            corners[1, axis] = rng.uniform(min(0.0, room1), max(0.0, room1))
    images = torch.stack(
        [_resample(volume.hu, volume.spacing_mm, corners[v], spacings[v], shape) for v in (0, 1)]
    )
    return ViewPair(
        images[:, None],
        torch.as_tensor(corners, dtype=torch.float32),
        torch.as_tensor(spacings, dtype=torch.float32),
    )


def _resample(
    hu: torch.Tensor,
    grid_mm: float,
    corner: np.ndarray,
    spacing: float,
    shape: tuple[int, int, int],
) -> torch.Tensor:
    """Trilinear sample of ``hu`` (grid spacing ``grid_mm``) at ``corner + spacing * index``;
    air outside."""
    axes = [
        torch.as_tensor((corner[a] + spacing * np.arange(shape[a])) / grid_mm, dtype=torch.float32)
        for a in range(3)
    ]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    size = torch.tensor(hu.shape, dtype=torch.float32)
    grid = torch.stack([xx, yy, zz], -1) * (2.0 / (size.flip(0) - 1)) - 1.0
    shifted = hu[None, None] + 1024.0  # zero padding = -1024 HU
    out = F.grid_sample(
        shifted, grid[None], mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return out[0, 0] - 1024.0


def embedding_positions(
    corner: torch.Tensor,
    spacing: torch.Tensor,
    shape: tuple[int, int, int],
    stride: tuple[int, int, int],
    offset: tuple[float, float, float],
) -> torch.Tensor:
    """(Z', Y', X', 3) mm positions of an embedding grid of a view (voxel j at stride*j+o)."""
    axes = [
        corner[a] + spacing * (stride[a] * torch.arange(shape[a], dtype=torch.float32) + offset[a])
        for a in range(3)
    ]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
