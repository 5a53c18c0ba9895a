"""Tensor-level solver stages: MIND-SSC, cost volume, coupled convex, IO, pyramid."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from itk_samconvex.solver.config import LevelConfig, preset_config
from itk_samconvex.solver.convex import coupled_convex
from itk_samconvex.solver.cost import cost_volume, label_offsets
from itk_samconvex.solver.features import MINDExtractor, mind_ssc
from itk_samconvex.solver.instance import instance_optimization
from itk_samconvex.solver.pyramid import register_tensors
from itk_samconvex.solver.warp import warp


def smooth_volume(shape, seed=0, scale=4):
    """A smooth random (1, 1, Z, Y, X) volume with texture at several scales."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(1, 1, *shape)
    for s in (scale, 2 * scale):
        coarse = torch.randn(1, 1, *[n // s + 2 for n in shape], generator=g)
        out += F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)
    return out


def constant_field(shape, zyx):
    field = torch.zeros(1, 3, *shape)
    for c, v in enumerate(zyx):
        field[0, c] = v
    return field


# --------------------------------------------------------------------------- MIND-SSC


def reference_mind(image, radius, dilation):
    """Direct MIND-SSC definition: 12 pairs, patch SSD, variance normalisation."""
    faces = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 0, 1), (0, 1, 0), (1, 0, 0)]
    pairs = [
        (a, b)
        for a, b in itertools.combinations(faces, 2)
        if sum((p - q) ** 2 for p, q in zip(a, b, strict=True)) == 2
    ]
    d, r = dilation, radius
    pad = 2 * d + r
    padded = F.pad(image, (pad,) * 6, mode="replicate")
    nz, ny, nx = image.shape[2:]
    channels = []
    for a, b in pairs:

        def crop(o):
            return padded[
                :,
                :,
                pad + d * o[0] - r : pad + d * o[0] + nz + r,
                pad + d * o[1] - r : pad + d * o[1] + ny + r,
                pad + d * o[2] - r : pad + d * o[2] + nx + r,
            ]

        channels.append(F.avg_pool3d((crop(a) - crop(b)) ** 2, 2 * r + 1, stride=1))
    dist = torch.cat(channels, 1)
    dist = dist - dist.min(1, keepdim=True).values
    var = dist.mean(1, keepdim=True)
    m = float(var.mean())
    var = var.clamp(m * 1e-3 + 1e-12, m * 1e3 + 1e-12)
    return torch.exp(-dist / var)


@pytest.mark.parametrize(("radius", "dilation"), [(1, 2), (2, 1), (1, 1)])
def test_mind_matches_direct_definition(radius, dilation):
    image = torch.rand(1, 1, 13, 17, 19, generator=torch.Generator().manual_seed(1))
    ours = mind_ssc(image, radius, dilation)
    assert ours.shape == (1, 12, 13, 17, 19)
    assert torch.allclose(ours, reference_mind(image, radius, dilation), atol=2e-5)
    assert float(ours.min()) > 0 and float(ours.max()) <= 1.0


def test_mind_extractor_clamps_hounsfield_window():
    image = torch.full((1, 1, 8, 8, 8), 5000.0)
    image[..., 4:, :, :] = -3000.0
    clamped = image.clamp(-1024, 3071)
    maps = MINDExtractor()(image)
    assert len(maps) == 1 and maps[0].stride == (1, 1, 1)
    assert torch.allclose(maps[0].values, MINDExtractor()(clamped)[0].values)


# --------------------------------------------------------------------------- cost volume


def naive_cost(fixed, moving, radius):
    _, _, nz, ny, nx = fixed.shape
    padded = F.pad(moving, (radius,) * 6, mode="replicate")
    costs = []
    for dz, dy, dx in itertools.product(range(2 * radius + 1), repeat=3):
        shifted = padded[:, :, dz : dz + nz, dy : dy + ny, dx : dx + nx]
        costs.append(0.5 * ((fixed - shifted) ** 2).sum(1)[0])
    return torch.stack(costs, -1)


@pytest.mark.parametrize("radius", [1, 2])
def test_cost_volume_matches_naive_ssd_and_label_order(radius):
    g = torch.Generator().manual_seed(2)
    fixed = torch.rand(1, 5, 6, 7, 9, generator=g)
    moving = torch.rand(1, 5, 6, 7, 9, generator=g)
    cost = cost_volume(fixed, moving, radius, chunk_elements=64)
    assert cost.shape == (6, 7, 9, (2 * radius + 1) ** 3)
    assert torch.allclose(cost, naive_cost(fixed, moving, radius), atol=1e-5)
    offsets = label_offsets(radius)
    assert offsets[0].tolist() == [-radius] * 3 and offsets[1].tolist() == [
        -radius,
        -radius,
        1 - radius,
    ]


def test_cost_volume_finds_an_integer_shift():
    moving = smooth_volume((12, 14, 16), seed=3).repeat(1, 4, 1, 1, 1)
    moving = moving + torch.rand(1, 4, 12, 14, 16, generator=torch.Generator().manual_seed(4))
    fixed = torch.roll(moving, shifts=(-1, 2, 1), dims=(2, 3, 4))  # fixed(p) = moving(p + d)
    cost = cost_volume(fixed, moving, 2)
    best = label_offsets(2)[cost[3:-3, 3:-3, 3:-3].argmin(-1)]
    assert (best == torch.tensor([1.0, -2.0, -1.0])).all(-1).float().mean() == 1.0


def test_masked_cost_is_flat_where_the_fixed_mask_excludes():
    g = torch.Generator().manual_seed(5)
    fixed, moving = torch.rand(1, 3, 5, 6, 7, generator=g), torch.rand(1, 3, 5, 6, 7, generator=g)
    mask = torch.ones(1, 1, 5, 6, 7)
    mask[..., 2, :, :] = 0
    cost = cost_volume(fixed, moving, 1, fixed_weight=mask)
    assert torch.all(cost[2] == 0)
    assert torch.allclose(cost[0], naive_cost(fixed, moving, 1)[0], atol=1e-6)


# --------------------------------------------------------------------------- coupled convex


def test_convex_breaks_ties_towards_zero_and_keeps_clear_minima():
    cost = torch.zeros(4, 5, 6, 27)
    offsets = label_offsets(1)
    target = torch.tensor([1.0, 0.0, -1.0])
    label = int(((offsets - target).abs().sum(1) == 0).nonzero())
    cost[:2, :, :, :] = 1.0
    cost[:2, :, :, label] = 0.0  # clear minimum in the first two planes
    field = coupled_convex(cost, 1, weights=(), initial_smoothing_passes=0)
    assert torch.allclose(field[0, :, :2], target.view(3, 1, 1, 1).expand(3, 2, 5, 6))
    assert torch.all(field[0, :, 2:] == 0)  # flat cost: no motion


def test_convex_coupling_pulls_outliers_towards_their_neighbours():
    cost = torch.ones(8, 8, 8, 27)
    offsets = label_offsets(1)
    one = int(((offsets - torch.tensor([0.0, 1.0, 0.0])).abs().sum(1) == 0).nonzero())
    minus = int(((offsets - torch.tensor([0.0, -1.0, 0.0])).abs().sum(1) == 0).nonzero())
    cost[..., one] = 0.5
    cost[4, 4, 4, minus] = 0.45  # a lone voxel that weakly prefers the opposite label
    plain = coupled_convex(cost, 1, weights=(), initial_smoothing_passes=0)
    coupled = coupled_convex(cost, 1, weights=(0.1, 1.0, 2.0), smoothing_passes=1)
    assert float(plain[0, 1, 4, 4, 4]) == -1.0
    assert float(coupled[0, 1, 4, 4, 4]) > 0.5


# --------------------------------------------------------------------------- IO


def test_instance_optimisation_recovers_a_subvoxel_shift():
    moving = smooth_volume((24, 24, 24), seed=6, scale=3).repeat(1, 3, 1, 1, 1)
    moving[:, 1] = moving[:, 1] ** 2
    moving[:, 2] = torch.sin(2 * moving[:, 2])
    shift = constant_field((24, 24, 24), (0.6, -0.4, 0.3))
    fixed = warp(moving, shift)
    out = instance_optimization(
        fixed,
        moving,
        torch.zeros_like(shift),
        iterations=60,
        learning_rate=0.1,
        regularization=0.1,
        relinearize_every=5,
    )
    inner = out[0, :, 4:-4, 4:-4, 4:-4].mean((1, 2, 3))
    assert torch.allclose(inner, torch.tensor([0.6, -0.4, 0.3]), atol=0.05)


def test_instance_optimisation_increment_mode_composes_with_the_initial_field():
    moving = smooth_volume((20, 20, 20), seed=7, scale=3).repeat(1, 2, 1, 1, 1)
    moving[:, 1] = moving[:, 1] ** 2
    truth = constant_field((20, 20, 20), (1.5, -1.0, 0.5))
    fixed = warp(moving, truth)
    init = constant_field((20, 20, 20), (1.0, -1.0, 0.0))
    out = instance_optimization(
        fixed,
        moving,
        init,
        iterations=60,
        learning_rate=0.1,
        regularization=0.1,
        parameterization="increment",
    )
    inner = out[0, :, 4:-4, 4:-4, 4:-4].mean((1, 2, 3))
    assert torch.allclose(inner, torch.tensor([1.5, -1.0, 0.5]), atol=0.06)


# --------------------------------------------------------------------------- pyramid


def ct_like(shape, seed=8):
    """Smooth texture scaled to HU with an air background and a body."""
    body = smooth_volume(shape, seed=seed, scale=3) * 300.0
    zz, yy, xx = torch.meshgrid(*[torch.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = (yy**2 / 0.8 + xx**2 / 0.8 + zz**2 / 1.2) < 1
    return torch.where(inside, body, torch.full_like(body, -1000.0))


@pytest.mark.parametrize("preset", ["default", "paper"])
def test_register_tensors_recovers_a_translation(preset):
    shape = (48, 48, 48)
    moving = ct_like(shape)
    truth = constant_field(shape, (2.4, -1.6, 3.2))  # working-grid voxels
    fixed = warp(moving, truth)
    cfg = preset_config(
        preset, levels=(LevelConfig(8, 2), LevelConfig(4, 2), LevelConfig(2, 2, False))
    )
    result = register_tensors(fixed, moving, cfg, MINDExtractor())
    assert result.factor == 2 and result.field.shape == (1, 3, 24, 24, 24)
    body = (fixed > -500)[0, 0, ::2, ::2, ::2]
    recovered = torch.stack([result.field[0, c][body].mean() for c in range(3)]) * 2
    assert torch.allclose(recovered, torch.tensor([2.4, -1.6, 3.2]), atol=0.3)


def test_register_tensors_is_deterministic():
    shape = (32, 32, 32)
    moving = ct_like(shape, seed=9)
    fixed = warp(moving, constant_field(shape, (1.0, 0.5, -1.0)))
    cfg = preset_config("fast")
    a = register_tensors(fixed, moving, cfg, MINDExtractor()).field
    b = register_tensors(fixed, moving, cfg, MINDExtractor()).field
    assert torch.equal(a, b)
