"""The voxel grid's priors with hand-written gradients: total variation and the eikonal term.

Autograd's versions differentiate every slice of the grid on its own: each of the ~10 slices gets
a full grid-sized zero tensor in backward and the pieces are summed, ~40 ms a CPU-preset step
(96^3). Here each prior writes its gradient into one grid-sized tensor, in place; the values and
gradients are the same (tests/backend/test_grid_priors.py checks both against autograd's).
"""

from __future__ import annotations

import torch


class _TotalVariation(torch.autograd.Function):
    """TV(g) = (mean(dz^2) + mean(dy^2) + mean(dx^2)) / 3 over channels `first`: of g (1, C, R, R, R)
    (Plenoxels' TV prior), d the forward difference along each spatial axis; other channels get 0."""

    @staticmethod
    def forward(ctx, grid: torch.Tensor, first: int) -> torch.Tensor:
        values = grid[:, first:]
        diffs = [values.diff(dim=axis) for axis in (2, 3, 4)]
        ctx.save_for_backward(*diffs)
        ctx.first, ctx.shape = first, grid.shape
        return sum(d.square().mean() for d in diffs) / 3

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad = grad_out.new_zeros(ctx.shape)
        values = grad[:, ctx.first:]
        for axis, d in zip((2, 3, 4), ctx.saved_tensors):
            scaled = d * (2 / (3 * d.numel()) * grad_out)  # d TV / d(difference)
            n = d.shape[axis]
            values.narrow(axis, 1, n).add_(scaled)  # each difference is g[k+1] - g[k]
            values.narrow(axis, 0, n).sub_(scaled)
        return grad, None


def total_variation(grid: torch.Tensor, first_channel: int = 0) -> torch.Tensor:
    """Mean squared difference of neighbouring voxels of grid (1, C, R, R, R), channels first_channel: on."""
    return _TotalVariation.apply(grid, first_channel)


class _Eikonal(torch.autograd.Function):
    """E(s) = sum over voxels within `band` of the surface of (|grad s| - 1)^2, divided by all voxels
    (Gropp et al. 2020, Eq. 2), grad s by forward differences at the corner voxel of each cell,
    s = grid[0, 0] / scale."""

    @staticmethod
    def forward(ctx, grid: torch.Tensor, scale: float, spacing: float, band: float) -> torch.Tensor:
        s = grid[0, 0] / scale  # (R, R, R)
        corner = s[:-1, :-1, :-1]
        grad = torch.stack([s[1:, :-1, :-1] - corner, s[:-1, 1:, :-1] - corner, s[:-1, :-1, 1:] - corner]) / spacing
        norm = (grad.square().sum(0) + 1e-12).sqrt()
        near = corner.abs() < band
        residual = (norm - 1) * near
        ctx.save_for_backward(grad, norm, residual)
        ctx.scale, ctx.spacing, ctx.shape, ctx.count = scale, spacing, grid.shape, near.numel()
        return residual.square().sum() / near.numel()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad, norm, residual = ctx.saved_tensors
        # dE/d(grad s)_a = 2 r (grad s)_a / |grad s| / count; then through the differences and the scale
        per_axis = grad * (residual * (2 * grad_out / (ctx.count * ctx.spacing * ctx.scale)) / norm)  # (3, R-1, R-1, R-1)
        out = grad_out.new_zeros(ctx.shape)
        s = out[0, 0]
        s[1:, :-1, :-1].add_(per_axis[0])
        s[:-1, 1:, :-1].add_(per_axis[1])
        s[:-1, :-1, 1:].add_(per_axis[2])
        s[:-1, :-1, :-1].sub_(per_axis.sum(0))
        return out, None, None, None


def eikonal(grid: torch.Tensor, scale: float, spacing: float, band: float) -> torch.Tensor:
    """The eikonal prior of the signed distance grid[0, 0] / scale (grid (1, C, R, R, R), voxels `spacing` apart)."""
    return _Eikonal.apply(grid, scale, spacing, band)
