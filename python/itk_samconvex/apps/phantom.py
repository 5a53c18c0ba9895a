"""A CT-like synthetic image pair with a known, breathing-like deformation.

Everything here is an analytic function of LPS physical position (mm), so the ground truth
carries no interpolation error:

* ``moving(y) = phantom_hu(y)`` (inhale) at the moving grid's voxel centres;
* ``fixed(x) = phantom_hu(x + u(x))`` (exhale) at the fixed grid's voxel centres, with
  ``u = breathing_displacement``. Hence ``fixed(x) = moving(T(x))`` with ``T(x) = x + u(x)``
  exactly, and the truth field on the fixed grid is ``u`` at its voxel centres.

Body frame (relative to ``centre_mm``, LPS): +x is patient left, +y posterior, +z superior.
The body is an elliptic cylinder 290 mm (x) by 210 mm (y), infinite along z, with a 10 mm
fat layer; the lungs span z = -70..110 mm above diaphragm domes at z = -25 (right) and -34
(left); liver, spleen, stomach and kidneys lie below, down to z = -165. Images are
(z, y, x) arrays; sizes, spacings and origins are in ITK (x, y, z) order. Intensities are
not modulated by the Jacobian (no mass conservation): the pair differs only by the warp and
the noise.

Labels (``LABELS``): 0 other, 1 lungs (with their vessels), 2 liver, 3 spleen, 4 kidneys,
5 heart, 6 spine (vertebral bodies and arches, not the discs), 7 ribs (with cartilage).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..edge.space import Grid, scalar_image

logger = logging.getLogger(__name__)

#: Organ label values of :func:`organ_labels`; 0 is everything else (air, fat, muscle...).
LABELS: dict[int, str] = {
    1: "lungs",
    2: "liver",
    3: "spleen",
    4: "kidneys",
    5: "heart",
    6: "spine",
    7: "ribs",
}
BODY_CENTRE_MM: tuple[float, float, float] = (0.0, 0.0, 0.0)

_EDGE_MM = 1.0  # logistic scale of organ boundaries (10-90 % rise over 4.4 mm)
_THIN_EDGE_MM = 0.6  # ... of vessels, ribs and bone cortex
_VESSEL_CLAMP_MM = 6.0  # vessel distances are clamped here, which makes culling exact
_CHUNK = 1 << 14  # points per evaluation chunk
_U_PEAK = 0.98946  # max |shape| of the unit-amplitude displacement (0.1 mm search)


def _sig(t: np.ndarray) -> np.ndarray:
    """Logistic function 1 / (1 + exp(-t)), overflow-free."""
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def _inside(f: np.ndarray, width: float = _EDGE_MM) -> np.ndarray:
    """Soft occupancy in [0, 1] from an (approximate) signed distance ``f`` in mm."""
    return _sig(-f / width)


def _paint(hu: np.ndarray, occupancy: np.ndarray, value: float | np.ndarray) -> np.ndarray:
    """Blend ``value`` over ``hu`` with the given soft occupancy (painter's order)."""
    return hu + occupancy * (value - hu)


def _ellipsoid_sd(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: Sequence[float], semi: Sequence[float]
) -> np.ndarray:
    """First-order signed distance (mm) to an axis-aligned ellipsoid (exact sign)."""
    qx, qy, qz = (x - centre[0]) / semi[0], (y - centre[1]) / semi[1], (z - centre[2]) / semi[2]
    rho = np.sqrt(qx * qx + qy * qy + qz * qz) + 1e-12
    grad = np.sqrt((qx / semi[0]) ** 2 + (qy / semi[1]) ** 2 + (qz / semi[2]) ** 2) / rho
    return (rho - 1.0) / (grad + 1e-12)


def _ellipse_sd(x: np.ndarray, y: np.ndarray, a: float, b: float) -> np.ndarray:
    """First-order signed distance (mm) to the ellipse x^2/a^2 + y^2/b^2 = 1 (2-D)."""
    return _ellipsoid_sd(x, y, np.zeros_like(x), (0.0, 0.0, 0.0), (a, b, 1.0))


def _dome(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height z (mm) of the diaphragm; the right (-x) dome is higher than the left."""
    gy = -(y * y) / (2 * 55.0**2)
    return (
        -70.0
        + 45.0 * np.exp(gy - (x + 62.0) ** 2 / (2 * 42.0**2))
        + 36.0 * np.exp(gy - (x - 62.0) ** 2 / (2 * 42.0**2))
    )


def _heart_sd(x: np.ndarray, y: np.ndarray, z: np.ndarray, dome: np.ndarray) -> np.ndarray:
    """Heart: an ellipsoid resting on the diaphragm (signed distance, mm)."""
    return np.maximum(_ellipsoid_sd(x, y, z, (12.0, -25.0, -10.0), (50.0, 42.0, 45.0)), dome - z)


def _lung_sd(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, dome: np.ndarray, f_heart: np.ndarray
) -> np.ndarray:
    """Both lungs: ellipsoids above the diaphragm with the heart (plus 3 mm) carved out."""
    f = np.minimum(
        _ellipsoid_sd(x, y, z, (-66.0, 4.0, -40.0), (46.0, 70.0, 150.0)),
        _ellipsoid_sd(x, y, z, (66.0, 4.0, -40.0), (46.0, 70.0, 150.0)),
    )
    return np.maximum(np.maximum(f, dome - z), 3.0 - f_heart)


def _periodic(z: np.ndarray, period: float, duty: float, phase: float, width: float) -> np.ndarray:
    """Smooth periodic indicator along z: 1 on a fraction ``duty`` of every period."""
    c0 = np.cos(np.pi * duty)
    eps = 2 * np.pi / period * np.sin(np.pi * duty) * width
    return _sig((np.cos(2 * np.pi * (z - phase) / period) - c0) / eps)


def _build_vessels(seed: int = 1234) -> tuple[np.ndarray, ...]:
    """Fixed lung vessels (trees from the hila, peripheral branches) and nodules.

    Returns capsule starts a (S, 3), axes b - a (S, 3), radii (S,) and the bounding boxes
    (lo, hi) of the capsules inflated by ``_VESSEL_CLAMP_MM``; body frame, mm.
    """
    rng = np.random.default_rng(seed)

    def inside_lung(p: np.ndarray, margin: float) -> bool:
        x, y, z = (np.array([v]) for v in p)
        dome = _dome(x, y)
        return bool(_lung_sd(x, y, z, dome, _heart_sd(x, y, z, dome))[0] < -margin)

    def sample_near(centre: np.ndarray, spread: np.ndarray | float, margin: float) -> np.ndarray:
        while True:
            p = centre + rng.uniform(-1.0, 1.0, 3) * spread
            if inside_lung(p, margin):
                return p

    caps: list[tuple[np.ndarray, np.ndarray, float]] = []

    def branch(start: np.ndarray, target: np.ndarray, radius: float, depth: int) -> None:
        end = start + 0.7 * (target - start)
        caps.append((start, end, radius))
        if depth < 4:
            for _ in range(2):
                branch(end, sample_near(target, 35.0, 4.0), 0.75 * radius, depth + 1)

    for side in (-1.0, 1.0):
        hilum = np.array([45.0 * side, 5.0, 15.0])
        lung_box = (np.array([66.0 * side, 4.0, 20.0]), np.array([46.0, 70.0, 90.0]))
        for _ in range(7):
            branch(hilum, sample_near(*lung_box, 10.0), 4.0, 1)
        for _ in range(50):  # small peripheral vessels, roughly radial from the hilum
            p = sample_near(*lung_box, 3.0)
            axis = (p - hilum) / np.linalg.norm(p - hilum) + rng.normal(0.0, 0.3, 3)
            half = 0.5 * rng.uniform(12.0, 28.0) * axis / np.linalg.norm(axis)
            caps.append((p - half, p + half, float(rng.uniform(1.4, 2.2))))
        for _ in range(6):
            p = sample_near(*lung_box, 6.0)
            caps.append((p, p, float(rng.uniform(2.5, 4.5))))
    a = np.array([c[0] for c in caps])
    b = np.array([c[1] for c in caps])
    r = np.array([c[2] for c in caps])
    reach = r[:, None] + _VESSEL_CLAMP_MM
    return a, b - a, r, np.minimum(a, b) - reach, np.maximum(a, b) + reach


def _build_texture(
    seed: int = 4321, count: int = 30, rms_hu: float = 12.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wave vectors (rad/mm), phases and amplitudes (HU) of the fine tissue texture."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavelengths = rng.uniform(7.0, 16.0, count)  # above Nyquist of 3.2 mm voxels
    amplitudes = rng.uniform(0.5, 1.5, count)
    amplitudes *= rms_hu / np.sqrt(0.5 * np.sum(amplitudes**2))
    k = directions * (2 * np.pi / wavelengths)[:, None]
    phase = rng.uniform(0, 2 * np.pi, (count, 1))
    return k.astype(np.float32), phase.astype(np.float32), amplitudes.astype(np.float32)


_VESSELS = _build_vessels()
_TEXTURE = _build_texture()
# airways (trachea + main bronchi) as capsules: start, end, radius (mm, body frame)
_AIRWAYS = (
    (np.array([0.0, 0.0, 200.0]), np.array([0.0, 0.0, 45.0]), 9.0),
    (np.array([0.0, 0.0, 45.0]), np.array([-45.0, 5.0, 15.0]), 6.0),
    (np.array([0.0, 0.0, 45.0]), np.array([45.0, 5.0, 15.0]), 6.0),
)


def _capsule_distance(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, a: np.ndarray, ab: np.ndarray, radius: float
) -> np.ndarray:
    """Distance (mm) to the surface of the capsule from ``a`` to ``a + ab`` (negative inside)."""
    dx, dy, dz = x - a[0], y - a[1], z - a[2]
    length2 = float(ab @ ab)
    if length2 > 0:
        t = np.clip((dx * ab[0] + dy * ab[1] + dz * ab[2]) / length2, 0.0, 1.0)
        dx, dy, dz = dx - t * ab[0], dy - t * ab[1], dz - t * ab[2]
    return np.sqrt(dx * dx + dy * dy + dz * dz) - radius


def _vessel_distance(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Distance to the nearest lung vessel/nodule surface, clamped at ``_VESSEL_CLAMP_MM``.

    Capsules whose inflated bounding box misses all the points are skipped; thanks to the
    clamp the result does not depend on which other points share the batch.
    """
    best = np.full_like(x, _VESSEL_CLAMP_MM)
    if x.size == 0:
        return best
    lo = np.array([x.min(), y.min(), z.min()])
    hi = np.array([x.max(), y.max(), z.max()])
    a, ab, r, box_lo, box_hi = _VESSELS
    hits = np.flatnonzero(np.all((box_lo <= hi) & (box_hi >= lo), axis=1))
    for s in hits:
        np.minimum(best, _capsule_distance(x, y, z, a[s], ab[s], r[s]), out=best)
    return best


def _texture(p: np.ndarray) -> np.ndarray:
    """Sum of the fixed sinusoids (HU) at body-frame points (M, 3); float32 for speed."""
    k, phase, amp = _TEXTURE
    q = p.T.astype(np.float32)
    arg = k[:, 0:1] * q[0]
    arg += k[:, 1:2] * q[1]
    arg += k[:, 2:3] * q[2]
    arg += phase
    return amp @ np.sin(arg, out=arg)


def _evaluate_chunk(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HU and labels of body-frame points ``p`` (M, 3) in mm."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    labels = np.zeros(x.shape, np.uint8)
    hu = np.full(x.shape, -1000.0)
    f_body = _ellipse_sd(x, y, 145.0, 105.0)
    m_body = _inside(f_body)
    hu = _paint(hu, m_body, -100.0)  # subcutaneous fat
    hu = _paint(hu, _inside(_ellipse_sd(x, y, 134.0, 95.0)), 35.0)  # muscle and soft tissue
    dome = _dome(x, y)
    f_heart = _heart_sd(x, y, z, dome)
    f_stomach = np.maximum(
        _ellipsoid_sd(x, y, z, (40.0, -40.0, -75.0), (32.0, 26.0, 24.0)), z - dome + 5.0
    )
    organs = (  # (signed distance, HU, label), painted in this order
        (
            np.maximum(
                _ellipsoid_sd(x, y, z, (-55.0, -10.0, -80.0), (80.0, 75.0, 55.0)), z - dome + 4.0
            ),
            65.0,
            2,
        ),
        (
            np.maximum(
                _ellipsoid_sd(x, y, z, (85.0, 45.0, -70.0), (28.0, 40.0, 45.0)), z - dome + 4.0
            ),
            50.0,
            3,
        ),
        (
            np.minimum(
                _ellipsoid_sd(x, y, z, (-55.0, 55.0, -115.0), (24.0, 20.0, 48.0)),
                _ellipsoid_sd(x, y, z, (55.0, 55.0, -105.0), (24.0, 20.0, 48.0)),
            ),
            140.0,
            4,
        ),
        (f_heart, 130.0, 5),  # enhanced blood pool
        (f_stomach, 25.0, 0),
        (np.maximum(f_stomach, -60.0 - z), -950.0, 0),  # gas cap of the stomach
        (np.hypot(x - 22.0, y - 28.0) - 11.0, 180.0, 0),  # descending aorta (enhanced)
    )
    for f, value, label in organs:
        hu = _paint(hu, _inside(f), value)
        if label:
            labels[f < 0] = label

    f_lung = _lung_sd(x, y, z, dome, f_heart)
    m_lung = _inside(f_lung)
    near = np.flatnonzero(f_lung < 12.0)
    vessel = np.full(x.shape, _inside(np.array(_VESSEL_CLAMP_MM), _THIN_EDGE_MM))
    vessel[near] = _inside(_vessel_distance(x[near], y[near], z[near]), _THIN_EDGE_MM)
    hu = _paint(hu, m_lung, -870.0 + 930.0 * vessel)
    labels[f_lung < 0] = 1
    for a, b, radius in _AIRWAYS:
        hu = _paint(hu, _inside(_capsule_distance(x, y, z, a, b - a, radius)), -950.0)

    # ribs: bands around the rib-cage ellipse, sloping down anteriorly, period 30 mm in z
    rho = np.sqrt((x / 128.0) ** 2 + (y / 90.0) ** 2) + 1e-12
    z_eff = z - 18.0 * y / (90.0 * rho)
    dz = np.mod(z_eff + 20.0, 30.0) - 15.0
    f_rib = 4.5 * (np.hypot(_ellipse_sd(x, y, 128.0, 90.0) / 4.5, dz / 6.5) - 1.0)
    f_rib = np.maximum(f_rib, np.maximum(z_eff - 95.0, -110.0 - z_eff))
    cartilage = _sig(-(y + 40.0) / 10.0) * _sig((40.0 - np.abs(x)) / 8.0)
    hu = _paint(hu, _inside(f_rib, _THIN_EDGE_MM), 550.0 - 430.0 * cartilage)
    labels[f_rib < 0] = 7

    # spine: vertebral bodies (cortex + cancellous) with discs, arches around the canal
    vertebra = _periodic(z, 28.0, 22.0 / 28.0, 3.0, _EDGE_MM)
    r_body = np.hypot(x, y - 52.0)
    hu = _paint(hu, _inside(r_body - 17.0), 90.0 + 310.0 * vertebra)
    hu = _paint(
        hu,
        vertebra * _inside(r_body - 17.0, _THIN_EDGE_MM) * _inside(14.5 - r_body, _THIN_EDGE_MM),
        700.0,
    )
    r_canal = np.hypot(x, y - 82.0)
    f_arch = np.minimum(
        np.maximum(r_canal - 14.0, 8.0 - r_canal), _ellipse_sd(x, y - 98.0, 4.0, 10.0)
    )
    hu = _paint(hu, vertebra * _inside(f_arch, _THIN_EDGE_MM), 550.0)
    hu = _paint(hu, _inside(r_canal - 8.0), 15.0)
    labels[((r_body < 17.0) | (f_arch < 0)) & (vertebra > 0.5)] = 6

    # fine texture inside the body (halved in the lungs)
    body = np.flatnonzero(f_body < 15.0)
    hu[body] += _texture(p[body]) * m_body[body] * (1.0 - 0.5 * m_lung[body])
    return hu, labels


def _evaluate(points_mm: np.ndarray, centre_mm: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """HU (float64) and labels (uint8) at LPS points (N, 3), evaluated in chunks."""
    p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3) - np.asarray(centre_mm)
    hu = np.empty(len(p))
    labels = np.empty(len(p), np.uint8)
    for start in range(0, len(p), _CHUNK):
        hu[start : start + _CHUNK], labels[start : start + _CHUNK] = _evaluate_chunk(
            p[start : start + _CHUNK]
        )
    return hu, labels


def phantom_hu(points_mm: np.ndarray, centre_mm: Sequence[float] = BODY_CENTRE_MM) -> np.ndarray:
    """CT value of the phantom at LPS points.

    Args:
        points_mm: (N, 3) LPS positions (x, y, z) in mm.
        centre_mm: LPS position of the body centre (mm).

    Returns:
        (N,) float64 Hounsfield units, noise-free: air -1000, fat -100, soft tissue 35,
        liver 65, spleen 50, lungs -870 with vessels/nodules up to 60, airways -950, heart
        130, kidneys 140, aorta 180, discs 90, bone 400-700, plus +-12 HU RMS texture.
    """
    return _evaluate(points_mm, centre_mm)[0]


def organ_labels(points_mm: np.ndarray, centre_mm: Sequence[float] = BODY_CENTRE_MM) -> np.ndarray:
    """Organ label (see ``LABELS``) at LPS points (N, 3) in mm; returns (N,) uint8."""
    return _evaluate(points_mm, centre_mm)[1]


def breathing_displacement(
    points_mm: np.ndarray, amplitude_mm: float = 12.0, centre_mm: Sequence[float] = BODY_CENTRE_MM
) -> np.ndarray:
    """Smooth breathing-like displacement u(x) from exhale (fixed) to inhale (moving).

    Mostly inferior motion (-z) peaking at the lung bases / diaphragm (z = -45 mm, x = +-60
    mm in the body frame) and fading superiorly, inferiorly, laterally and at the spine
    (vertebrae move by 0.09 ``amplitude_mm`` on average), plus an anterior (-y) chest and
    abdominal wall expansion of up to 0.3 ``amplitude_mm`` and an outward lateral (x)
    expansion of up to 0.15 ``amplitude_mm``. C-infinity (Gaussians and tanh); max |u| =
    ``amplitude_mm``; det(I + grad u) lies in [0.93, 1.23] at 12 mm (min 0.86 at 25 mm).

    Args:
        points_mm: (N, 3) LPS points x (mm).
        amplitude_mm: maximum displacement magnitude (mm).
        centre_mm: LPS body centre (mm).

    Returns:
        (N, 3) float64 displacement u(x) in LPS mm (x, y, z components): T(x) = x + u(x).
    """
    p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3) - np.asarray(centre_mm)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    # superior-inferior: Gaussian in z around the lung bases, 45 mm wide above, 95 mm below
    sigma_z = 70.0 - 25.0 * np.tanh((z + 45.0) / 50.0)
    profile_z = np.exp(-0.5 * ((z + 45.0) / sigma_z) ** 2)
    # ... times two lobes under the lungs, a posterior-centred AP profile, a still spine
    lobes = (np.exp(-0.5 * ((x - 60.0) / 45.0) ** 2) + np.exp(-0.5 * ((x + 60.0) / 45.0) ** 2)) / (
        1.0 + np.exp(-0.5 * (120.0 / 45.0) ** 2)
    )
    profile_y = np.exp(-0.5 * ((y - 10.0) / 70.0) ** 2)
    spine = 1.0 - 0.9 * np.exp(-0.5 * ((x / 30.0) ** 2 + ((y - 60.0) / 30.0) ** 2))
    # chest/abdominal wall motion: anterior and lateral, centred at z = 0
    wall_z = np.exp(-0.5 * (z / 80.0) ** 2)
    anterior = 0.5 * (1.0 - np.tanh((y - 10.0) / 60.0))  # 1 anteriorly, 0 posteriorly
    u = np.empty_like(p)
    u[:, 2] = -lobes * profile_y * spine * profile_z
    u[:, 1] = -0.3 * anterior * np.exp(-0.5 * (x / 110.0) ** 2) * wall_z
    u[:, 0] = (
        0.15
        * (x / 90.0)
        * np.exp(0.5 * (1.0 - (x / 90.0) ** 2))
        * np.exp(-0.5 * (y / 90.0) ** 2)
        * wall_z
    )
    return u * (amplitude_mm / _U_PEAK)


def grid_points_mm(grid: Grid) -> np.ndarray:
    """LPS positions (mm) of the voxel centres of ``grid`` as a (Z, Y, X, 3) float64 array."""
    m = grid.index_to_physical
    k, j, i = (np.arange(n, dtype=np.float64) for n in grid.shape)
    return (
        m[:3, 3]
        + i[None, None, :, None] * m[:3, 0]
        + j[None, :, None, None] * m[:3, 1]
        + k[:, None, None, None] * m[:3, 2]
    )


def centred_grid(
    size: Sequence[int],
    spacing: Sequence[float],
    direction: ArrayLike | None = None,
    centre_mm: Sequence[float] = BODY_CENTRE_MM,
    origin: Sequence[float] | None = None,
) -> Grid:
    """A grid whose centre is ``centre_mm`` (LPS mm), unless ``origin`` is given.

    ``size`` and ``spacing`` are in ITK (x, y, z) order; ``direction`` is a 3x3 matrix or 9
    row-major values (default identity).
    """
    d = np.eye(3) if direction is None else np.asarray(direction, np.float64).reshape(3, 3)
    size = tuple(int(v) for v in size)
    spacing = tuple(float(v) for v in spacing)
    if origin is None:
        half = 0.5 * (np.asarray(size) - 1) * np.asarray(spacing)
        origin = np.asarray(centre_mm, np.float64) - d @ half
    return Grid(
        size=size,
        spacing=spacing,
        origin=tuple(float(v) for v in origin),
        direction=tuple(float(v) for v in d.ravel()),
    )


@dataclass
class PhantomPair:
    """A synthetic pair with its exact truth.

    Attributes:
        fixed: exhale image, ``itk.Image[itk.F, 3]`` in HU on ``fixed_grid``.
        moving: inhale image, ``itk.Image[itk.F, 3]`` in HU on ``moving_grid``.
        fixed_labels, moving_labels: ``itk.Image[itk.UC, 3]`` organ labels (``LABELS``).
        truth: (Z, Y, X, 3) float32 u(x) in LPS mm at the fixed voxel centres, (x, y, z)
            components: fixed(x) = moving(x + u(x)).
        fixed_grid, moving_grid: the two grids.
    """

    fixed: Any
    moving: Any
    fixed_labels: Any
    moving_labels: Any
    truth: np.ndarray
    fixed_grid: Grid
    moving_grid: Grid


def make_phantom_pair(
    size: Sequence[int] = (96, 80, 80),
    spacing: Sequence[float] = (3.2, 3.2, 3.2),
    amplitude_mm: float = 12.0,
    seed: int = 0,
    noise_hu: float = 10.0,
    direction: ArrayLike | None = None,
    origin: Sequence[float] | None = None,
    moving_size: Sequence[int] | None = None,
    moving_spacing: Sequence[float] | None = None,
    moving_direction: ArrayLike | None = None,
    moving_origin: Sequence[float] | None = None,
    centre_mm: Sequence[float] = BODY_CENTRE_MM,
) -> PhantomPair:
    """Build the exhale (fixed) / inhale (moving) phantom pair and its truth displacement.

    Args:
        size, spacing: fixed grid voxels and mm per voxel, ITK (x, y, z) order.
        amplitude_mm: max |u| (mm) of :func:`breathing_displacement`.
        seed: seed of the Gaussian noise (the anatomy never changes).
        noise_hu: standard deviation (HU) of the noise added independently to each image.
        direction: fixed direction (3x3 or 9 row-major values), default identity.
        origin: fixed origin (LPS mm); default puts the grid centre on ``centre_mm``.
        moving_size, moving_spacing, moving_direction, moving_origin: moving grid; all None
            means the fixed grid. Otherwise missing values default to the fixed ones and the
            origin to the one centring the moving grid on the fixed grid's centre.
        centre_mm: LPS body centre (mm).

    Returns:
        The :class:`PhantomPair`.
    """
    if not noise_hu >= 0:
        raise ValueError(f"noise_hu must be >= 0, got {noise_hu}")
    start = time.perf_counter()
    fixed_grid = centred_grid(size, spacing, direction, centre_mm, origin)
    moving_args = (moving_size, moving_spacing, moving_direction, moving_origin)
    if all(v is None for v in moving_args):
        moving_grid = fixed_grid
    else:
        centre_index = 0.5 * (np.asarray(fixed_grid.size) - 1)
        fixed_centre = fixed_grid.index_to_physical @ np.append(centre_index, 1.0)
        moving_grid = centred_grid(
            size if moving_size is None else moving_size,
            spacing if moving_spacing is None else moving_spacing,
            fixed_grid.direction if moving_direction is None else moving_direction,
            fixed_centre[:3],
            moving_origin,
        )
    rng = np.random.default_rng(seed)
    x = grid_points_mm(fixed_grid).reshape(-1, 3)
    u = breathing_displacement(x, amplitude_mm, centre_mm)
    images = []
    for grid, points in (
        (fixed_grid, x + u),
        (moving_grid, grid_points_mm(moving_grid).reshape(-1, 3)),
    ):
        hu, labels = _evaluate(points, centre_mm)
        hu = hu.astype(np.float32).reshape(grid.shape)
        if noise_hu > 0:
            hu += np.float32(noise_hu) * rng.standard_normal(grid.shape, dtype=np.float32)
        images += [
            scalar_image(hu, grid, "F"),
            scalar_image(labels.reshape(grid.shape), grid, "UC"),
        ]
    logger.debug(
        "phantom pair %s -> %s built in %.2f s",
        fixed_grid.size,
        moving_grid.size,
        time.perf_counter() - start,
    )
    return PhantomPair(
        fixed=images[0],
        moving=images[2],
        fixed_labels=images[1],
        moving_labels=images[3],
        truth=u.reshape(*fixed_grid.shape, 3).astype(np.float32),
        fixed_grid=fixed_grid,
        moving_grid=moving_grid,
    )
