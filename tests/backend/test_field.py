"""backend/field.py: log-density and SDF modes of the voxel-grid field, on tiny CPU grids."""

import numpy as np
import pytest
import torch

from backend.field import EIKONAL_BAND, SDF_GRID_SCALE, NeRFField
from backend.mesh import extract_mesh

RESOLUTION = 49  # voxels per side of the test grids: spacing 2 / 48, so the axes and r = 0.5 lie on vertices


def voxel_field(**kwargs) -> NeRFField:
    return NeRFField("dense", hidden=0, encoding_kwargs={"resolution": RESOLUTION}, **kwargs)


def vertex_points(resolution: int = RESOLUTION) -> torch.Tensor:
    """World positions (R, R, R, 3) of the grid's vertices, in its [z, y, x] storage order."""
    axis = torch.linspace(-1, 1, resolution)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def sphere_sdf_field(radius: float, **kwargs) -> NeRFField:
    """A field in SDF mode whose grid holds the exact distance to a sphere."""
    field = voxel_field(**kwargs)
    field.sdf_mode = True
    with torch.no_grad():
        field.encoding.grid[0, 0] = (vertex_points().norm(dim=-1) - radius) * SDF_GRID_SCALE
    return field


def test_sdf_density_is_a_logistic_of_the_distance():
    field = sphere_sdf_field(0.5, sdf_beta=0.02, sdf_max_density=300.0)
    radii = torch.tensor([0.0, 0.46, 0.5, 0.54, 0.9])
    points = torch.stack([radii, torch.zeros(5), torch.zeros(5)], dim=-1)  # (5, 3) along +x
    with torch.no_grad():
        sigma = field.density(points)
    expected = 300.0 * torch.sigmoid(-(radii - 0.5) / 0.02)
    assert torch.allclose(sigma, expected, rtol=1e-3, atol=1e-3)
    assert sigma[2] == pytest.approx(150.0, rel=1e-3)  # half the maximum on the surface s = 0
    assert sigma[0] == pytest.approx(300.0, rel=1e-3) and sigma[-1] < 1e-6


def test_sdf_normals_point_outward():
    field = sphere_sdf_field(0.5)
    points = torch.tensor([[0.5, 0.0, 0.0], [0.0, -0.5, 0.0], [0.3, 0.3, 0.3]])
    normals = field.normals(points)
    expected = points / points.norm(dim=-1, keepdim=True)
    assert torch.allclose(normals, expected, atol=0.05)


def test_sdf_and_surface_need_sdf_mode():
    field = voxel_field()
    with pytest.raises(RuntimeError, match="convert_to_sdf"):
        field.sdf(torch.zeros(1, 3))
    inside, level = field.surface(7.0)
    assert level == 7.0 and inside == field.density


def test_mesh_of_an_analytic_sdf_field_is_its_zero_level_set():
    field = sphere_sdf_field(0.5)
    inside, level = field.surface(25.0)
    assert level == 0.0
    with torch.no_grad():
        mesh = extract_mesh(inside, field.albedo, resolution=64, threshold=level)
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(radius.mean() - 0.5) < 0.02 * 0.5
    assert mesh.euler_number == 2 and mesh.is_watertight and mesh.volume > 0


def test_eikonal_is_zero_for_a_distance_and_not_for_a_scaled_one():
    field = sphere_sdf_field(0.5)
    with torch.no_grad():
        assert float(field.eikonal()) < 1e-3  # forward differences of |x| - r: |grad| ~ 1 except at the centre
        field.encoding.grid[0, 0] *= 2  # |grad s| = 2: (2 - 1)^2 = 1 on the voxels within the band
        corner = 2 * (vertex_points()[:-1, :-1, :-1].norm(dim=-1) - 0.5)
        share_in_band = float((corner.abs() < EIKONAL_BAND).float().mean())
        assert 0 < share_in_band < 0.2
        assert float(field.eikonal()) == pytest.approx(share_in_band, rel=0.05)


def test_eikonal_leaves_voxels_far_from_the_surface_alone():
    field = sphere_sdf_field(0.5)
    with torch.no_grad():
        field.encoding.grid[0, 0] *= 1.5
    field.eikonal().backward()
    grad = field.encoding.grid.grad[0, 0]  # (R, R, R)
    centre, surface = RESOLUTION // 2, RESOLUTION // 2 + 12  # |x| = 0 and |x| = 0.5 along +x
    assert grad[centre, centre, centre] == 0  # s = -0.75: deep inside
    assert grad[centre, centre, surface] != 0


def test_total_variation_leaves_the_distance_to_the_eikonal_term():
    field = sphere_sdf_field(0.5)
    with torch.no_grad():
        field.encoding.grid[0, 1:] = 0.0  # flat albedo
    with torch.no_grad():
        assert float(field.total_variation()) == 0.0
        field.sdf_mode = False  # the same grid read as log density: the distance channel varies
        assert float(field.total_variation()) > 0.0


def test_convert_to_sdf_gives_the_distance_to_the_density_level_set():
    field = voxel_field(blob_density=0.0)
    points = vertex_points()
    with torch.no_grad():  # log density 10 inside a sphere of radius 0.5, -10 outside, sharp edge
        field.encoding.grid[0, 0] = 10 * torch.tanh((0.5 - points.norm(dim=-1)) / 0.01)
    field.convert_to_sdf(threshold=1.0)
    assert field.sdf_mode
    on_axis = torch.tensor([[r, 0.0, 0.0] for r in (0.0, 0.25, 0.5, 0.75)])
    expected = on_axis[:, 0] - 0.5
    spacing = 2 / (RESOLUTION - 1)
    assert torch.allclose(field.sdf(on_axis), expected, atol=spacing)
    field.offset_sdf(0.1)  # the surface moves 0.1 inward
    assert torch.allclose(field.sdf(on_axis), expected + 0.1, atol=spacing)


def test_convert_to_sdf_of_an_empty_field_starts_from_the_blob_sphere():
    field = voxel_field(blob_density=0.0, blob_radius=0.4)
    field.convert_to_sdf(threshold=5.0)  # log density ~0 everywhere: nothing reaches density 5
    assert field.sdf(torch.tensor([[0.0, 0.0, 0.0]])).item() == pytest.approx(-0.4, abs=1e-3)


def test_convert_to_sdf_needs_a_voxel_grid():
    field = NeRFField("dense", hidden=8, encoding_kwargs={"resolution": 8})
    assert not field.is_voxel_grid()
    with pytest.raises(ValueError, match="plain voxel grid"):
        field.convert_to_sdf(5.0)


def test_sdf_grid_scale_slows_the_distance_not_the_albedo():
    field = sphere_sdf_field(0.5)
    points = torch.tensor([[0.5, 0.0, 0.0]])
    s_before = field.sdf(points)
    with torch.no_grad():
        field.encoding.grid[0, 0] += 1.0  # one unit of the grid
    assert (field.sdf(points) - s_before).item() == pytest.approx(1 / SDF_GRID_SCALE)


@pytest.mark.parametrize("sdf_mode", [False, True])
def test_density_reads_the_same_values_and_gradients_from_the_density_channel_alone(sdf_mode):
    field = voxel_field()
    field.sdf_mode = sdf_mode
    with torch.no_grad():
        field.encoding.grid.normal_(generator=torch.Generator().manual_seed(0))
    points = torch.rand(5000, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    all_channels = field._raw(points)[:, 0]
    alone = field._raw_density(points)
    assert torch.equal(all_channels, alone)
    all_channels.square().sum().backward()
    expected = field.encoding.grid.grad.clone()
    field.encoding.grid.grad = None
    (field.sdf(points) * SDF_GRID_SCALE if sdf_mode else field._raw_density(points)).square().sum().backward()
    assert torch.allclose(field.encoding.grid.grad, expected, rtol=1e-5, atol=1e-6)
    assert not field.encoding.grid.grad[0, 1:].any()  # the albedo channels get nothing from the density
