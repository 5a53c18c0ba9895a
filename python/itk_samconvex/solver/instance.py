"""Instance optimisation: a short Adam refinement of the field in feature space.

Minimises ``N * [mean_p w(p) * 0.5 * sum_c (M_c(p + v(p)) - F_c(p))^2 + lambda * R(v)]`` (N the
number of voxels, a constant that keeps per-voxel gradients O(1) for Adam) where ``v``
is the box-smoothed parameter (as in ConvexAdam/SAMConvex) and ``R`` the diffusion
regulariser (sum over axes of the mean squared forward difference).

The data gradient comes from a Gauss-Newton linearisation of the warped features:
``grad = J^T (r + J delta)`` with ``J`` the spatial gradient of the warped moving features,
refreshed every ``relinearize_every`` steps. With 1 it is the exact gradient up to the
finite-difference image gradient; larger values trade accuracy for speed, because the
feature warp is done once per refresh while each Adam step only touches the 9 numbers per
voxel of ``J^T J`` and ``J^T r``, whatever the number of channels.

The Adam update is written out with tensors (:func:`adam_step`, the same arithmetic as
``torch.optim.Adam``'s single-tensor path) so that the whole refinement exports with
``torch.export``.
"""

from __future__ import annotations

import logging

import torch

from .warp import (
    box_smooth,
    box_smooth_adjoint,
    compose,
    export_friendly,
    normalised_units_scale,
    warp,
)

Tensor = torch.Tensor
logger = logging.getLogger(__name__)

_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def central_difference(x: Tensor, dim: int) -> Tensor:
    """d x / d index along ``dim``: central inside, one-sided at the two ends."""
    n = x.shape[dim]
    if n < 2:
        return torch.zeros_like(x)
    out = torch.empty_like(x)
    if n > 2:
        out.narrow(dim, 1, n - 2).copy_(x.narrow(dim, 2, n - 2) - x.narrow(dim, 0, n - 2))
        out.narrow(dim, 1, n - 2).mul_(0.5)
    out.narrow(dim, 0, 1).copy_(x.narrow(dim, 1, 1) - x.narrow(dim, 0, 1))
    out.narrow(dim, n - 1, 1).copy_(x.narrow(dim, n - 1, 1) - x.narrow(dim, n - 2, 1))
    return out


def linearise(fixed: Tensor, warped: Tensor, weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gauss-Newton terms of the data term, given the moving features ``warped`` by the
    current field (1, C, Z, Y, X; overwritten with the residual).

    Returns ``A`` (1, 6, Z, Y, X): the packed symmetric ``w * J^T J`` (zz, zy, zx, yy, yx,
    xx); ``b`` (1, 3, Z, Y, X): ``w * J^T r``; and the weighted energy sum (0-d tensor).
    """
    grads = [central_difference(warped, d) for d in (2, 3, 4)]
    residual = warped.sub_(fixed)
    energy = 0.5 * (residual.square().sum(1, keepdim=True) * weight).sum()
    b = torch.cat([(g * residual).sum(1, keepdim=True) for g in grads], 1).mul_(weight)
    a = torch.cat([(grads[i] * grads[j]).sum(1, keepdim=True) for i, j in _PAIRS], 1)
    return a.mul_(weight), b, energy


def apply_normal(a: Tensor, delta: Tensor) -> Tensor:
    """``A @ delta`` for the packed symmetric (1, 6, ...) matrix field."""
    dz, dy, dx = delta[:, 0:1], delta[:, 1:2], delta[:, 2:3]
    return torch.cat(
        [
            a[:, 0:1] * dz + a[:, 1:2] * dy + a[:, 2:3] * dx,
            a[:, 1:2] * dz + a[:, 3:4] * dy + a[:, 4:5] * dx,
            a[:, 2:3] * dz + a[:, 4:5] * dy + a[:, 5:6] * dx,
        ],
        1,
    )


def diffusion(v: Tensor) -> Tensor:
    """Sum over the three axes of the mean squared forward difference of (1, 3, Z, Y, X)."""
    total = v.new_zeros(())
    for dim in (2, 3, 4):
        if v.shape[dim] > 1:
            total = total + v.diff(dim=dim).square().mean()
    return total


def diffusion_gradient(v: Tensor) -> Tensor:
    """Gradient of :func:`diffusion` with respect to ``v`` (same shape)."""
    grad = torch.zeros_like(v)
    for dim in (2, 3, 4):
        n = v.shape[dim]
        if n < 2:
            continue
        d = v.diff(dim=dim).mul_(2.0 / (v.numel() // n * (n - 1)))
        grad.narrow(dim, 0, n - 1).sub_(d)
        grad.narrow(dim, 1, n - 1).add_(d)
    return grad


def adam_step(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: int,
    lr: float,
    eps: float,
    betas: tuple[float, float] = (0.9, 0.999),
) -> None:
    """One Adam update of ``param`` in place (``step`` counts from 1).

    The arithmetic of ``torch.optim.Adam`` (single-tensor path, no weight decay, no amsgrad)
    with the step count a Python int, so no tensor value is read on the host.
    """
    beta1, beta2 = betas
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step_size = lr / (1 - beta1**step)
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-step_size)


def instance_optimization(
    fixed: Tensor,
    moving: Tensor,
    init: Tensor,
    iterations: int = 50,
    learning_rate: float = 0.25,
    regularization: float = 1.0,
    adam_eps: float = 1e-2,
    smoothing_passes: int = 3,
    relinearize_every: int = 5,
    parameterization: str = "total",
    return_smoothed: bool = True,
    units: str = "voxel",
    padding: str = "replicate",
    fixed_weight: Tensor | None = None,
    moving_weight: Tensor | None = None,
) -> Tensor:
    """Refine a displacement field with Adam.

    Args:
        fixed: (1, C, Z, Y, X) fixed features on the optimisation grid.
        moving: (1, C, Z, Y, X) moving features on the same grid (not warped).
        init: (1, 3, Z, Y, X) initial displacement, voxels of this grid, (z, y, x) channels.
        parameterization: ``"total"`` optimises the whole field starting from ``init``
            (ConvexAdam); ``"increment"`` optimises a field starting at zero on the moving
            features pre-warped by ``init`` and composes the two (official SAMConvex).
        return_smoothed: return the smoothed parameter (what the loss saw) or the raw one
            (official quirk).
        units: ``"voxel"`` or ``"normalized"``: the units of the parameter, which set what
            ``learning_rate`` and ``regularization`` mean.
        adam_eps: Adam's epsilon, relative to per-voxel gradients (the loss is the mean
            over voxels times the voxel count, so each voxel's gradient is O(1)).
        fixed_weight, moving_weight: optional (1, 1, Z, Y, X) data-term weights (masks).

    Returns:
        (1, 3, Z, Y, X) displacement in voxels of this grid.
    """
    if iterations == 0:
        return init
    shape = tuple(init.shape[2:])
    normalized = units == "normalized"
    scale = normalised_units_scale(shape).to(init.device).view(1, 3, 1, 1, 1)
    if parameterization == "increment":
        source = warp(moving, init)
        mweight = warp(moving_weight, init) if moving_weight is not None else None
        start = torch.zeros_like(init)
    else:
        source, mweight, start = moving, moving_weight, init
    wf = fixed_weight if fixed_weight is not None else torch.ones_like(init[:, :1])
    if mweight is not None:
        source = torch.cat([source, mweight], 1)
    theta = (start * scale if normalized else start).detach().clone()
    exp_avg = torch.zeros_like(theta)
    exp_avg_sq = torch.zeros_like(theta)
    a = b = v_lin = None
    inv_norm: float | Tensor = 1.0
    for step in range(iterations):
        # gradients by hand (no autograd graph): v = S theta, dL/dtheta = S^T dL/dv
        v = box_smooth(theta, smoothing_passes, padding)
        v_vox = v / scale if normalized else v
        if step % relinearize_every == 0:
            # one warp for the features and the moving weight (its last channel)
            warped = warp(source, v_vox)
            weight = wf
            if mweight is not None:
                weight = wf * warped[:, -1:]
                warped = warped[:, :-1]
            # loss scaled by the voxel count: per-voxel gradients are O(1), far above Adam's
            # epsilon, while float round-off (~1e-7) stays below it
            if export_friendly():  # the same factor as a tensor, without a host read
                inv_norm = weight.sum().clamp_min(1.0).reciprocal() * weight.numel()
            else:
                inv_norm = 1.0 / (float(weight.sum().clamp_min(1.0)) / weight.numel())
            a, b, energy = linearise(fixed, warped, weight)
            v_lin = v_vox.clone()
            if logger.isEnabledFor(logging.DEBUG) and not export_friendly():
                logger.debug("IO step %d: data term %.5f", step, float(energy) * inv_norm)
        grad = apply_normal(a, v_vox - v_lin).add_(b).mul_(inv_norm)
        if normalized:
            grad = grad / scale
        grad.add_(diffusion_gradient(v), alpha=regularization * v[0, 0].numel())
        adam_step(
            theta,
            box_smooth_adjoint(grad, smoothing_passes, padding),
            exp_avg,
            exp_avg_sq,
            step + 1,
            learning_rate,
            adam_eps,
        )
    out = box_smooth(theta, smoothing_passes, padding) if return_smoothed else theta
    out = out / scale if normalized else out
    if parameterization == "increment":
        return compose(init, out)
    return out
