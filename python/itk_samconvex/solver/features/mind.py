"""MIND-SSC: modality-independent neighbourhood descriptor, self-similarity context.

Heinrich et al., MICCAI 2013. For the 12 pairs of non-opposite face neighbours of a voxel
(offsets scaled by ``dilation``), the patch SSD between the two shifted images is averaged
over a ``(2 radius + 1)^3`` box; the descriptor is ``exp(-D_k / V)`` with ``V`` the mean of
the min-subtracted distances, clamped to [1e-3, 1e3] times its global mean. 12 channels in
(0, 1], no weights, same grid as the input (stride 1).
"""

from __future__ import annotations

import itertools

import torch

from ..warp import export_friendly
from .base import FeatureMap

Tensor = torch.Tensor

_FACES = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 0, 1), (0, 1, 0), (1, 0, 0)]
# the 12 unordered pairs of face neighbours at squared distance 2 (i.e. not opposite)
_PAIRS = [
    (a, b)
    for a, b in itertools.combinations(_FACES, 2)
    if sum((p - q) ** 2 for p, q in zip(a, b, strict=True)) == 2
]


def _box_valid(x: Tensor, radius: int) -> Tensor:
    """Sum over a (2r+1)^3 box in valid mode (each spatial axis shrinks by 2r)."""
    for dim in (2, 3, 4):
        n = x.shape[dim] - 2 * radius
        acc = x.narrow(dim, 0, n)
        for t in range(1, 2 * radius + 1):
            acc = acc + x.narrow(dim, t, n)
        x = acc
    return x


def _direction_classes() -> tuple[list[tuple[int, int, int]], list[tuple[int, tuple]]]:
    """Group the 12 pairs by their difference vector up to sign.

    ``(I(x + a) - I(x + b))^2 = S_v(x + b)`` with ``v = a - b`` and
    ``S_v(y) = (I(y + v) - I(y))^2``; and ``S_{-v}(y) = S_v(y - v)``. So 6 images ``S_v``
    (one per class) give all 12 channels as shifted crops: channel (a, b) reads ``S_v``
    at ``x + b`` when ``a - b = v`` and at ``x + a`` when ``a - b = -v``.
    """
    classes: list[tuple[int, int, int]] = []
    reads: list[tuple[int, tuple]] = []
    for a, b in _PAIRS:
        v = tuple(p - q for p, q in zip(a, b, strict=True))
        neg = tuple(-c for c in v)
        if v in classes:
            reads.append((classes.index(v), b))
        elif neg in classes:
            reads.append((classes.index(neg), a))
        else:
            classes.append(v)
            reads.append((len(classes) - 1, b))
    return classes, reads


_CLASSES, _READS = _direction_classes()


def mind_ssc(image: Tensor, radius: int = 1, dilation: int = 2) -> Tensor:
    """MIND-SSC descriptors of a (1, 1, Z, Y, X) image -> (1, 12, Z, Y, X) in (0, 1]."""
    if image.dim() != 5 or image.shape[:2] != (1, 1):
        raise ValueError(f"mind_ssc() expects (1, 1, Z, Y, X), got {tuple(image.shape)}")
    d, r = dilation, radius
    _, _, nz, ny, nx = image.shape
    p = 2 * d + r  # S_v is needed at x + b + t (|b| <= d, |t| <= r) and reads I at +v (|v| <= d)
    padded = torch.nn.functional.pad(image, (p,) * 6, mode="replicate")
    m = (nz + 2 * d + 2 * r, ny + 2 * d + 2 * r, nx + 2 * d + 2 * r)  # domain of S_v
    squares = []
    for v in _CLASSES:
        # S_v on [d, d + m) of the padded grid: I(y + v) - I(y)
        shifted = padded[
            :,
            :,
            d + d * v[0] : d + d * v[0] + m[0],
            d + d * v[1] : d + d * v[1] + m[1],
            d + d * v[2] : d + d * v[2] + m[2],
        ]
        base = padded[:, :, d : d + m[0], d : d + m[1], d : d + m[2]]
        diff = shifted - base
        squares.append(diff * diff)
    boxed = _box_valid(torch.cat(squares, 1), r) * (1.0 / (2 * r + 1) ** 3)
    # boxed index i <-> padded index i + d + r = image index i - d
    distances = torch.cat(
        [
            boxed[
                :,
                c : c + 1,
                d + d * o[0] : d + d * o[0] + nz,
                d + d * o[1] : d + d * o[1] + ny,
                d + d * o[2] : d + d * o[2] + nx,
            ]
            for c, o in _READS
        ],
        1,
    )
    distances -= distances.min(dim=1, keepdim=True).values
    variance = distances.mean(dim=1, keepdim=True)
    # the clamp bounds as a tensor when exporting (no host read of a value)
    mean_var = variance.mean() if export_friendly() else float(variance.mean())
    variance = variance.clamp(min=mean_var * 1e-3 + 1e-12, max=mean_var * 1e3 + 1e-12)
    return distances.mul_(-1.0 / variance).exp_()


class MINDExtractor:
    """Feature backend ``"mind"``: MIND-SSC of the HU-clamped image (weight-free)."""

    name = "mind"

    def __init__(
        self, radius: int = 1, dilation: int = 2, hu_min: float = -1024.0, hu_max: float = 3071.0
    ) -> None:
        self.radius = radius
        self.dilation = dilation
        self.hu_min = hu_min
        self.hu_max = hu_max

    def __call__(self, image: Tensor) -> list[FeatureMap]:
        scaled = (image.clamp(self.hu_min, self.hu_max) - self.hu_min) / (self.hu_max - self.hu_min)
        values = mind_ssc(scaled, self.radius, self.dilation)
        return [FeatureMap(values=values, stride=(1, 1, 1), kind="local")]
