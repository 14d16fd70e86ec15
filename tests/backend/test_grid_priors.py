"""backend/grid_priors.py: the hand-written gradients of TV and the eikonal term equal autograd's."""

import pytest
import torch

from backend.grid_priors import eikonal, total_variation


def tv_by_autograd(grid: torch.Tensor, first: int) -> torch.Tensor:
    g = grid[:, first:]
    dz = g[:, :, 1:] - g[:, :, :-1]
    dy = g[:, :, :, 1:] - g[:, :, :, :-1]
    dx = g[..., 1:] - g[..., :-1]
    return (dz.square().mean() + dy.square().mean() + dx.square().mean()) / 3


def eikonal_by_autograd(grid: torch.Tensor, scale: float, spacing: float, band: float) -> torch.Tensor:
    s = grid[0, 0] / scale
    corner = s[:-1, :-1, :-1]
    grad = torch.stack([s[1:, :-1, :-1] - corner, s[:-1, 1:, :-1] - corner, s[:-1, :-1, 1:] - corner]) / spacing
    near = corner.detach().abs() < band
    return (((grad.square().sum(0) + 1e-12).sqrt() - 1).square() * near).sum() / near.numel()


def random_grid(resolution: int = 9) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    grid = torch.randn(1, 4, resolution, resolution, resolution, generator=generator, dtype=torch.float64)
    axis = torch.linspace(-1, 1, resolution, dtype=torch.float64)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    grid[0, 0] = 10 * ((x**2 + y**2 + z**2).sqrt() - 0.5) + 0.5 * grid[0, 0]  # a noisy sphere's distance, scale 10
    return grid.requires_grad_()


def value_and_gradient(fn, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    value = fn(grid)
    (gradient,) = torch.autograd.grad(value, grid)
    return value.detach(), gradient


@pytest.mark.parametrize("first", [0, 1])
def test_total_variation_matches_autograd(first):
    grid = random_grid()
    value, gradient = value_and_gradient(lambda g: total_variation(g, first), grid)
    expected_value, expected_gradient = value_and_gradient(lambda g: tv_by_autograd(g, first), grid)
    torch.testing.assert_close(value, expected_value)
    torch.testing.assert_close(gradient, expected_gradient)
    if first:
        assert gradient[:, 0].abs().max() == 0  # SDF mode: the distance channel gets none of it
    assert torch.autograd.gradcheck(lambda g: total_variation(g, first), (grid,))


def test_eikonal_matches_autograd_within_the_band_only():
    grid = random_grid()
    args = (10.0, 2 / 8, 0.3)
    value, gradient = value_and_gradient(lambda g: eikonal(g, *args), grid)
    expected_value, expected_gradient = value_and_gradient(lambda g: eikonal_by_autograd(g, *args), grid)
    assert value > 0
    torch.testing.assert_close(value, expected_value)
    torch.testing.assert_close(gradient, expected_gradient)
    assert gradient[0, 1:].abs().max() == 0  # albedo untouched
    assert 0 < (gradient[0, 0] != 0).sum() < gradient[0, 0].numel()  # only voxels near the surface move
    assert torch.autograd.gradcheck(lambda g: eikonal(g, *args), (grid,))
