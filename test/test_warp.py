"""Tests of itk_samconvex.solver.warp: box filters, level changes, warping and composition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from itk_samconvex.solver.warp import (
    box_smooth,
    box_smooth_adjoint,
    box_taps,
    change_level,
    compose,
    level_coordinates,
    pool,
    warp,
)


def _index_grids(shape, dtype=torch.float64):
    """(z, y, x) index tensors of ``shape`` (each (Z, Y, X))."""
    axes = [torch.arange(n, dtype=dtype) for n in shape]
    return torch.meshgrid(*axes, indexing="ij")


def _linear_volume(shape, coeffs=(0.7, -1.3, 0.45), offset=2.5, dtype=torch.float64):
    """(1, 1, Z, Y, X) volume a*z + b*y + c*x + d."""
    z, y, x = _index_grids(shape, dtype)
    v = coeffs[0] * z + coeffs[1] * y + coeffs[2] * x + offset
    return v[None, None]


def _linear_field(shape, dtype=torch.float64):
    """(1, 3, Z, Y, X) field whose three channels are different linear functions."""
    return torch.cat(
        [
            _linear_volume(shape, (0.3, -0.2, 0.1), 1.0, dtype),
            _linear_volume(shape, (-0.15, 0.25, 0.05), -2.0, dtype),
            _linear_volume(shape, (0.05, 0.1, -0.35), 0.5, dtype),
        ],
        dim=1,
    )


# ---------------------------------------------------------------------------------------------
# box_smooth
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("passes", [1, 2, 3])
def test_box_smooth_zeros_is_repeated_avg_pool(passes):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 9, 8, dtype=torch.float64)
    expected = x
    for _ in range(passes):
        expected = F.avg_pool3d(expected, 3, 1, 1, count_include_pad=True)
    out = box_smooth(x, passes, "zeros")
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_box_smooth_zeros_damps_a_constant_at_the_corner():
    x = torch.ones(1, 1, 5, 5, 5, dtype=torch.float64)
    out = box_smooth(x, 1, "zeros")
    # corner voxel sees 2x2x2 = 8 of 27 taps inside the volume
    assert out[0, 0, 0, 0, 0].item() == pytest.approx(8 / 27, abs=1e-14)
    assert out[0, 0, 2, 2, 2].item() == pytest.approx(1.0, abs=1e-14)
    # face centre: 2x3x3 = 18 taps
    assert out[0, 0, 0, 2, 2].item() == pytest.approx(18 / 27, abs=1e-14)


def test_box_smooth_zero_passes_is_identity():
    x = torch.randn(1, 1, 4, 4, 4)
    assert box_smooth(x, 0) is x
    assert box_smooth_adjoint(x, 0) is x


@pytest.mark.parametrize("passes", [1, 2, 3])
def test_box_smooth_replicate_keeps_a_constant(passes):
    x = torch.full((1, 2, 6, 5, 7), 3.25, dtype=torch.float64)
    out = box_smooth(x, passes, "replicate")
    assert out.shape == x.shape
    torch.testing.assert_close(out, x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("passes", [1, 2, 3])
def test_box_smooth_replicate_reproduces_a_linear_field_in_the_interior(passes):
    shape = (12, 11, 13)
    x = _linear_volume(shape)
    out = box_smooth(x, passes, "replicate")
    inner = (slice(None), slice(None), *(slice(passes, n - passes) for n in shape))
    torch.testing.assert_close(out[inner], x[inner], rtol=0, atol=1e-12)
    # ... and it does differ at the border (the replicated edge is not linear)
    assert (out[0, 0, 0, 5, 6] - x[0, 0, 0, 5, 6]).abs().item() > 1e-3


def test_box_smooth_replicate_single_pass_border_value():
    # 1-D profile along x: [0, 1, 2, ..., 5]; replicate pad -> the first output is
    # mean(0, 0, 1) = 1/3 and the last mean(4, 5, 5) = 14/3.
    x = torch.arange(6, dtype=torch.float64).view(1, 1, 1, 1, 6).expand(1, 1, 3, 3, 6).clone()
    out = box_smooth(x, 1, "replicate")
    assert out[0, 0, 1, 1, 0].item() == pytest.approx(1 / 3, abs=1e-12)
    assert out[0, 0, 1, 1, 5].item() == pytest.approx(14 / 3, abs=1e-12)
    assert out[0, 0, 1, 1, 3].item() == pytest.approx(3.0, abs=1e-12)


@pytest.mark.parametrize("shape", [(1, 2, 6, 7, 5), (2, 1, 1, 3, 9), (1, 3, 2, 1, 4)])
@pytest.mark.parametrize("passes", [1, 2, 3, 4])
def test_box_smooth_replicate_is_repeated_box_means_after_one_padding(passes, shape):
    # the definition: pad once by `passes` border copies, then `passes` valid 3x3x3 means
    # (the implementation folds them into one (2 passes + 1)-tap filter per axis)
    gen = torch.Generator().manual_seed(passes)
    x = torch.randn(*shape, dtype=torch.float64, generator=gen)
    expected = F.pad(x, (passes,) * 6, mode="replicate")
    for _ in range(passes):
        expected = F.avg_pool3d(expected, 3, stride=1)
    torch.testing.assert_close(box_smooth(x, passes, "replicate"), expected, rtol=0, atol=1e-12)


def test_box_taps_are_the_trinomial_rows():
    assert box_taps(1) == (1.0, 1.0, 1.0)
    assert box_taps(2) == (1.0, 2.0, 3.0, 2.0, 1.0)
    assert box_taps(3) == (1.0, 3.0, 6.0, 7.0, 6.0, 3.0, 1.0)
    assert sum(box_taps(5)) == 3.0**5


# ---------------------------------------------------------------------------------------------
# box_smooth_adjoint
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("padding", ["zeros", "replicate"])
@pytest.mark.parametrize("passes", [1, 2, 3])
def test_box_smooth_adjoint_identity(passes, padding):
    gen = torch.Generator().manual_seed(10 * passes + len(padding))
    x = torch.randn(1, 2, 6, 7, 5, dtype=torch.float64, generator=gen)
    y = torch.randn(1, 2, 6, 7, 5, dtype=torch.float64, generator=gen)
    lhs = (box_smooth(x, passes, padding) * y).sum().item()
    rhs = (x * box_smooth_adjoint(y, passes, padding)).sum().item()
    assert box_smooth_adjoint(y, passes, padding).shape == y.shape
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


def test_box_smooth_adjoint_replicate_matches_autograd():
    torch.manual_seed(3)
    x = torch.randn(1, 1, 5, 6, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(1, 1, 5, 6, 4, dtype=torch.float64)
    (box_smooth(x, 2, "replicate") * g).sum().backward()
    torch.testing.assert_close(box_smooth_adjoint(g, 2, "replicate"), x.grad, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# level_coordinates / change_level / pool
# ---------------------------------------------------------------------------------------------


def test_level_coordinates_centre_convention():
    # level voxel j of factor f is centred on working index f*j + (f-1)/2
    working = level_coordinates(5, 4, 1)
    torch.testing.assert_close(working, torch.tensor([1.5, 5.5, 9.5, 13.5, 17.5]))
    # factor-2 centres (0.5, 2.5, 4.5, 6.5) in factor-4 units: (w - 1.5) / 4
    to_coarse = level_coordinates(4, 2, 4)
    torch.testing.assert_close(to_coarse, torch.tensor([-0.25, 0.25, 0.75, 1.25]))
    # factor-8 centres (3.5, 11.5) in factor-2 units: (w - 0.5) / 2
    torch.testing.assert_close(level_coordinates(2, 8, 2), torch.tensor([1.5, 5.5]))
    # same level: identity
    torch.testing.assert_close(level_coordinates(3, 2, 2), torch.tensor([0.0, 1.0, 2.0]))


def _working_linear(level_shape, factor, coeffs=(0.5, -0.25, 0.75), offset=1.0):
    """Values a.w + d of a linear function of WORKING index w at the level voxel centres."""
    z, y, x = _index_grids(level_shape)
    wz, wy, wx = (factor * v + (factor - 1) / 2 for v in (z, y, x))
    return (coeffs[0] * wz + coeffs[1] * wy + coeffs[2] * wx + offset)[None, None]


def test_change_level_coarse_to_fine_is_exact_at_unclamped_centres():
    src = _working_linear((4, 4, 4), 4)  # 16^3 working grid, factor 4
    out = change_level(src, 4, 2, (8, 8, 8))
    expected = _working_linear((8, 8, 8), 2)
    assert out.shape == (1, 1, 8, 8, 8)
    # factor-2 voxel j sits at factor-4 coordinate (2j - 1)/4: inside [0, 3] for j = 1..6
    inner = (0, 0, slice(1, 7), slice(1, 7), slice(1, 7))
    torch.testing.assert_close(out[inner], expected[inner], rtol=0, atol=1e-5)
    # j = 0 is clamped onto the first coarse centre (working 1.5 instead of 0.5)
    first = _working_linear((1, 1, 1), 4)[0, 0, 0, 0, 0]
    assert out[0, 0, 0, 0, 0].item() == pytest.approx(first.item(), abs=1e-5)


def test_change_level_fine_to_coarse_non_integer_ratio_is_trilinear():
    src = _working_linear((6, 6, 6), 2)  # 12^3 working grid
    # factor 2 -> 3 is not an integer ratio: trilinear at exact centres w = 3j + 1
    out = change_level(src, 2, 3, (4, 4, 4))
    expected = _working_linear((4, 4, 4), 3)
    # w = 1, 4, 7, 10 -> factor-2 coords 0.25 .. 4.75: all inside [0, 5]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_change_level_per_axis_factors():
    src = _working_linear((4, 4, 4), 2)
    out = change_level(src, (2, 2, 2), (2, 4, 1), (4, 2, 8))
    z, y, x = _index_grids((4, 2, 8))
    w = (0.5 * (2 * z + 0.5) - 0.25 * (4 * y + 1.5) + 0.75 * x + 1.0)[None, None]
    # x: factor-1 centres w = 0..7 -> factor-2 coords (w - 0.5)/2, clamped for w=0 and w=7
    inner = (0, 0, slice(None), slice(None), slice(1, 7))
    torch.testing.assert_close(out[inner], w[inner], rtol=0, atol=1e-5)


def test_change_level_block_averages_by_integer_ratio():
    torch.manual_seed(1)
    x = torch.randn(1, 2, 8, 12, 4, dtype=torch.float64)
    out = change_level(x, 1, 4, (2, 3, 1))
    expected = x.reshape(1, 2, 2, 4, 3, 4, 1, 4).mean(dim=(3, 5, 7))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    # a factor 2 -> 8 move is a ratio-4 block average of the factor-2 grid
    out2 = change_level(x, 2, 8, (2, 3, 1))
    torch.testing.assert_close(out2, expected, rtol=0, atol=1e-12)


def test_pool_matches_block_mean():
    x = torch.arange(64, dtype=torch.float64).view(1, 1, 4, 4, 4)
    out = pool(x, 2)
    assert out.shape == (1, 1, 2, 2, 2)
    # block (0,0,0) = indices {0,1,4,5,16,17,20,21}: mean 10.5
    assert out[0, 0, 0, 0, 0].item() == pytest.approx(10.5)
    assert out[0, 0, 1, 1, 1].item() == pytest.approx(16 * 2.5 + 4 * 2.5 + 2.5)
    assert pool(x, 1) is x


def test_change_level_rescales_fields():
    field = torch.ones(1, 3, 4, 4, 4, dtype=torch.float64)
    field[:, 1] *= 2.0
    field[:, 2] *= -3.0
    # coarse -> fine: displacement in finer voxels is larger by src/dst = 4
    fine = change_level(field, 8, 2, (16, 16, 16), is_field=True)
    torch.testing.assert_close(
        fine[0, :, 5, 6, 7], torch.tensor([4.0, 8.0, -12.0], dtype=torch.float64), rtol=0, atol=1e-6
    )
    # fine -> coarse by block averaging: scaled by 1/2
    coarse = change_level(field, 2, 4, (2, 2, 2), is_field=True)
    torch.testing.assert_close(
        coarse[0, :, 1, 0, 1],
        torch.tensor([0.5, 1.0, -1.5], dtype=torch.float64),
        rtol=0,
        atol=1e-12,
    )
    # per-axis factors rescale each channel by its own axis ratio
    mixed = change_level(field, (2, 2, 2), (4, 2, 1), (2, 4, 8), is_field=True)
    torch.testing.assert_close(
        mixed[0, :, 1, 2, 3], torch.tensor([0.5, 2.0, -6.0], dtype=torch.float64), rtol=0, atol=1e-6
    )
    # non-fields are not rescaled
    same = change_level(field, 8, 2, (16, 16, 16), is_field=False)
    torch.testing.assert_close(
        same[0, :, 5, 6, 7], torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64), rtol=0, atol=1e-6
    )


def test_change_level_same_level_same_shape_is_identity():
    x = torch.randn(1, 3, 2, 3, 4)
    assert change_level(x, 2, 2, (2, 3, 4), is_field=True) is x


# ---------------------------------------------------------------------------------------------
# warp / compose
# ---------------------------------------------------------------------------------------------


def test_warp_linear_image_by_constant_displacement():
    shape = (10, 12, 11)
    image = _linear_volume(shape, dtype=torch.float32)
    shift = (1.25, -0.5, 2.0)  # voxels along (z, y, x)
    disp = torch.tensor(shift, dtype=torch.float32).view(1, 3, 1, 1, 1).expand(1, 3, *shape)
    out = warp(image, disp.contiguous())
    expected = _linear_volume(shape, dtype=torch.float32) + (
        0.7 * shift[0] - 1.3 * shift[1] + 0.45 * shift[2]
    )
    # interior: p + shift stays inside the volume
    inner = (0, 0, slice(0, 8), slice(1, 12), slice(0, 9))
    torch.testing.assert_close(out[inner], expected[inner], rtol=0, atol=1e-4)
    # border padding: z = 9 samples z = 10.25 -> clamped to the last plane (z = 9)
    z9 = _linear_volume(shape, dtype=torch.float32)[0, 0, 9, 4, 3] - 1.3 * -0.5 + 0.45 * 2.0
    assert out[0, 0, 9, 4, 3].item() == pytest.approx(z9.item(), abs=1e-4)


def test_warp_samples_channels_in_zyx_order():
    # A displacement along tensor axis 0 (z) only must change only the z-term.
    shape = (6, 6, 6)
    z, y, x = _index_grids(shape, torch.float32)
    image = (100 * z + 10 * y + x)[None, None]
    disp = torch.zeros(1, 3, *shape)
    disp[:, 0] = 1.0
    out = warp(image, disp)
    assert out[0, 0, 2, 3, 4].item() == pytest.approx(100 * 3 + 10 * 3 + 4, abs=1e-3)
    disp = torch.zeros(1, 3, *shape)
    disp[:, 2] = 1.0
    out = warp(image, disp)
    assert out[0, 0, 2, 3, 4].item() == pytest.approx(100 * 2 + 10 * 3 + 5, abs=1e-3)


def test_warp_zero_displacement_is_identity():
    torch.manual_seed(5)
    image = torch.randn(1, 2, 5, 6, 7)
    out = warp(image, torch.zeros(1, 3, 5, 6, 7))
    torch.testing.assert_close(out, image, rtol=0, atol=1e-5)


def test_compose_constant_displacements_sum():
    shape = (8, 9, 10)
    a = torch.tensor([0.75, -1.5, 0.25]).view(1, 3, 1, 1, 1).expand(1, 3, *shape).contiguous()
    b = torch.tensor([-0.5, 0.5, 1.0]).view(1, 3, 1, 1, 1).expand(1, 3, *shape).contiguous()
    out = compose(a, b)
    expected = torch.tensor([0.25, -1.0, 1.25]).view(1, 3, 1, 1, 1).expand(1, 3, *shape)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_compose_linear_outer_with_constant_inner():
    shape = (10, 10, 10)
    outer = _linear_field(shape, torch.float32)
    inner = torch.tensor([1.0, -0.5, 0.5]).view(1, 3, 1, 1, 1).expand(1, 3, *shape).contiguous()
    out = compose(outer, inner)
    # outer evaluated at p + inner, plus inner
    shifted = _linear_field(shape, torch.float32)
    expected = torch.stack(
        [
            inner[0, 0] + shifted[0, 0] + 0.3 * 1.0 - 0.2 * -0.5 + 0.1 * 0.5,
            inner[0, 1] + shifted[0, 1] - 0.15 * 1.0 + 0.25 * -0.5 + 0.05 * 0.5,
            inner[0, 2] + shifted[0, 2] + 0.05 * 1.0 + 0.1 * -0.5 - 0.35 * 0.5,
        ]
    )[None]
    inner_region = (0, slice(None), slice(0, 9), slice(1, 10), slice(0, 9))
    torch.testing.assert_close(out[inner_region], expected[inner_region], rtol=0, atol=1e-4)
