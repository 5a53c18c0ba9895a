"""Shared pytest fixtures.

Plain helpers (``rotation``, ``make_image``, point mappings) live in ``helpers.py``; import
them with ``from helpers import ...``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import (
    ANISOTROPIC_SPACING,
    OBLIQUE_AXIS,
    OBLIQUE_DEGREES,
    OFFSET_ORIGIN,
    make_grid,
    rotation,
)
from itk_samconvex.edge.space import Grid

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def oblique_grid() -> Grid:
    """24 x 20 x 12 voxels (x, y, z), 0.7 x 0.7 x 2.5 mm, rotated 20 deg about (1, 2, 3)."""
    return make_grid(
        (24, 20, 12),
        ANISOTROPIC_SPACING,
        OFFSET_ORIGIN,
        rotation(OBLIQUE_AXIS, OBLIQUE_DEGREES),
    )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared CT data folder: $SAMCONVEX_SHARED_DATA or <repo>/../shared/data."""
    override = os.environ.get("SAMCONVEX_SHARED_DATA")
    path = Path(override) if override else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        source = "SAMCONVEX_SHARED_DATA" if override else "the default location"
        pytest.skip(f"shared data folder {path} (from {source}) does not exist")
    return path
