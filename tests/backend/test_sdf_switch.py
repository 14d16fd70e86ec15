"""backend/sdf_switch.py: a solid density field becomes an SDF that renders the same; a haze stays density."""

import torch

from backend.cameras import fixed_light, random_cameras
from backend.field import NeRFField
from backend.renderer import RenderSettings, render
from backend.sdf_switch import MIN_PSNR, switch_to_sdf

RESOLUTION = 33


def field_with_log_density(log_density) -> NeRFField:
    """A voxel-grid field whose log density is `log_density(points (R, R, R, 3))`."""
    field = NeRFField("dense", hidden=0, blob_density=0.0, encoding_kwargs={"resolution": RESOLUTION})
    axis = torch.linspace(-1, 1, RESOLUTION)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    with torch.no_grad():
        field.encoding.grid[0, 0] = log_density(torch.stack([x, y, z], dim=-1))
    return field


def views_of(field):
    cameras = random_cameras(2, torch.Generator().manual_seed(0))
    settings = RenderSettings("lambertian", fixed_light(cameras), torch.ones(2, 3))
    return lambda: render(field, cameras, 24, 32, settings)["rgb"]


def test_a_solid_sphere_becomes_an_sdf_that_renders_as_before():
    field = field_with_log_density(lambda p: 6 * torch.tanh((0.5 - p.norm(dim=-1)) / 0.03))  # opaque ball, r 0.5
    render_views = views_of(field)
    before = render_views()
    result = switch_to_sdf(field, render_views, smooth=0.0)
    assert result.done and field.sdf_mode and result.psnr >= MIN_PSNR
    with torch.no_grad():
        assert float((render_views() - before).square().mean()) <= 10 ** (-MIN_PSNR / 10)
        inside, outside = field.sdf(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.8]]))
    assert inside < 0 < outside


def test_a_translucent_haze_stays_log_density_unchanged():
    field = field_with_log_density(lambda p: 1.0 - 2.0 * p.norm(dim=-1))  # density below 3 everywhere: a haze
    grid = field.encoding.grid.detach().clone()
    result = switch_to_sdf(field, views_of(field), smooth=0.0)
    assert not result.done and result.psnr < MIN_PSNR
    assert not field.sdf_mode and torch.equal(field.encoding.grid, grid)
