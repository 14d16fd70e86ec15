"""Tests for backend/mesh.py on analytic density fields (tiny CPU grids)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
import trimesh

from backend.mesh import MeshError, chamfer_distance, export_mesh, extract_mesh, sample_surface, srgb_to_linear

R0 = 0.5  # sphere radius
WIDTH = 0.01  # sigmoid edge width of the analytic shells


def sphere(center=(0.0, 0.0, 0.0), radius=R0):
    """Density 20·sigmoid((r0 − |x − c|) / w): equals the default threshold 10 exactly at radius r0."""
    c = torch.tensor(center)

    def density(points):  # (N, 3) -> (N,)
        return 20.0 * torch.sigmoid((radius - (points - c).norm(dim=-1)) / WIDTH)

    return density


def torus(big=0.5, small=0.2):
    def density(points):  # (N, 3) -> (N,), ring in the xy plane
        ring = torch.sqrt(points[:, 0] ** 2 + points[:, 1] ** 2) - big
        return 20.0 * torch.sigmoid((small - torch.sqrt(ring**2 + points[:, 2] ** 2)) / WIDTH)

    return density


def constant(rgb):
    def albedo(points):  # (N, 3) -> (N, 3)
        return torch.tensor(rgb, dtype=torch.float32).expand(len(points), 3)

    return albedo


GREY = constant((0.5, 0.5, 0.5))


@pytest.fixture(scope="module")
def sphere_mesh():
    return extract_mesh(sphere(), constant((0.8, 0.3, 0.1)), resolution=96)


def test_sphere_radius_watertight_and_outward(sphere_mesh):
    radius = np.linalg.norm(sphere_mesh.vertices, axis=1)  # (V,)
    assert abs(radius.mean() - R0) < 0.02 * R0
    assert radius.std() < 0.01
    assert sphere_mesh.is_watertight
    assert sphere_mesh.euler_number == 2
    assert sphere_mesh.volume > 0  # normals point outward
    assert np.isclose(sphere_mesh.volume, 4 / 3 * np.pi * R0**3, rtol=0.03)
    outward = np.einsum("ij,ij->i", sphere_mesh.vertex_normals, sphere_mesh.vertices)
    assert (outward > 0).all()


def test_coarse_to_fine_matches_full_grid_and_queries_fewer_points(sphere_mesh):
    full = extract_mesh(sphere(), GREY, resolution=96, coarse_to_fine=False)
    assert len(full.vertices) == len(sphere_mesh.vertices)
    assert chamfer_distance(full.vertices, sphere_mesh.vertices) < 1e-6
    assert full.metadata["points_evaluated"] == 96**3
    assert sphere_mesh.metadata["grid_points"] == 96**3
    assert sphere_mesh.metadata["points_evaluated"] < 0.5 * 96**3


def test_torus_has_genus_one():
    mesh = extract_mesh(torus(), GREY, resolution=80)
    assert mesh.is_watertight
    assert mesh.euler_number == 0


def test_small_floating_blob_is_removed():
    big, blob = sphere(), sphere(center=(0.8, 0.0, 0.0), radius=0.08)

    def density(points):
        return torch.maximum(big(points), blob(points))

    kept = extract_mesh(density, GREY, resolution=96)
    assert len(kept.split(only_watertight=False)) == 1
    assert np.linalg.norm(kept.vertices, axis=1).max() < R0 + 0.02
    both = extract_mesh(density, GREY, resolution=96, min_component_ratio=0.0)
    assert len(both.split(only_watertight=False)) == 2


def test_surface_touching_the_box_is_closed():
    mesh = extract_mesh(sphere(radius=1.2), GREY, resolution=32)
    assert mesh.is_watertight
    assert np.abs(mesh.vertices).max() <= 1.0


def test_vertex_colours_come_from_albedo(sphere_mesh):
    red = extract_mesh(sphere(), constant((1.0, 0.0, 0.0)), resolution=48)
    colours = red.visual.vertex_colors  # (V, 4) uint8
    assert colours.dtype == np.uint8 and colours.shape == (len(red.vertices), 4)
    assert (colours == [255, 0, 0, 255]).all()

    def by_height(points):  # colour varies with z: checks colours are taken per vertex
        return ((points[:, 2:3] + 1) / 2).expand(-1, 3)

    graded = extract_mesh(sphere(), by_height, resolution=48)
    expected = np.round((graded.vertices[:, 2] + 1) / 2 * 255)
    assert np.abs(graded.visual.vertex_colors[:, 0] - expected).max() <= 1


def test_export_round_trip(sphere_mesh, tmp_path):
    paths = export_mesh(sphere_mesh, tmp_path, formats=("glb", "ply", "obj"))
    assert paths == {fmt: tmp_path / f"mesh.{fmt}" for fmt in ("glb", "ply", "obj")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.glb", "mesh.obj", "mesh.ply"]  # no temp files
    n = len(sphere_mesh.vertices)
    rgba = sphere_mesh.visual.vertex_colors  # (V, 4) sRGB bytes
    for fmt in ("glb", "ply", "obj"):
        loaded = trimesh.load(paths[fmt], force="mesh", process=False)
        assert abs(len(loaded.vertices) - n) <= 0.01 * n, fmt
        assert len(loaded.faces) == len(sphere_mesh.faces), fmt
    ply = trimesh.load(paths["ply"], process=False)
    np.testing.assert_array_equal(ply.visual.vertex_colors, rgba)
    glb = trimesh.load(paths["glb"], force="mesh", process=False)
    linear = np.round(srgb_to_linear(rgba[:, :3] / 255.0) * 255)  # glTF COLOR_0 is linear
    np.testing.assert_array_equal(glb.visual.vertex_colors[:, :3], linear)
    assert {"POSITION", "NORMAL", "COLOR_0"} <= set(_glb_attributes(paths["glb"]))


def _glb_attributes(path):
    """The vertex attributes named in a GLB's JSON chunk (header 12 bytes, chunk header 8)."""
    data = path.read_bytes()
    length = struct.unpack("<I", data[12:16])[0]
    return json.loads(data[20 : 20 + length])["meshes"][0]["primitives"][0]["attributes"]


def test_export_rejects_unknown_format(sphere_mesh, tmp_path):
    with pytest.raises(ValueError, match="glb, ply, obj"):
        export_mesh(sphere_mesh, tmp_path, formats=("fbx",))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("coarse_to_fine", [True, False])
def test_empty_density_raises(coarse_to_fine):
    def empty(points):
        return torch.zeros(len(points))

    with pytest.raises(MeshError, match="threshold 10"):
        extract_mesh(empty, GREY, resolution=32, coarse_to_fine=coarse_to_fine)


def test_chamfer_distance():
    grid = np.stack(np.meshgrid(*[np.arange(5.0)] * 3), -1).reshape(-1, 3)  # (125, 3), spacing 1
    assert chamfer_distance(grid, grid) == 0.0
    shift = np.array([0.1, 0.0, 0.0])
    assert chamfer_distance(grid, grid + shift) == pytest.approx(0.1)


def test_sample_surface_is_on_the_sphere_and_seeded(sphere_mesh):
    a = sample_surface(sphere_mesh, 2000, seed=3)
    assert a.shape == (2000, 3)
    assert np.abs(np.linalg.norm(a, axis=1) - R0).max() < 0.01
    np.testing.assert_array_equal(a, sample_surface(sphere_mesh, 2000, seed=3))
    assert not np.array_equal(a, sample_surface(sphere_mesh, 2000, seed=4))
    assert chamfer_distance(a, sample_surface(sphere_mesh, 2000, seed=4)) < 0.02


def test_hollow_shell_gives_one_outer_surface():
    """An untrained interior (low density inside a dense shell) is filled before marching cubes."""

    def shell(points):
        r = points.norm(dim=-1)
        return 20 * (torch.sigmoid((0.5 - r) / 0.01) - torch.sigmoid((0.4 - r) / 0.01))

    white = lambda p: torch.ones(len(p), 3)  # noqa: E731
    solid = extract_mesh(shell, white, resolution=64, threshold=10.0)
    assert solid.euler_number == 2 and solid.metadata["cavity_points_filled"] > 0
    hollow = extract_mesh(shell, white, resolution=64, threshold=10.0, fill_cavities=False, min_component_ratio=0)
    assert hollow.euler_number == 4  # outer and inner spheres


def test_linear_smoothing_of_a_signed_distance_keeps_its_surface():
    def minus_sdf(points):  # (N, 3) -> (N,): r0 - |x|, positive inside, surface at level 0
        return R0 - points.norm(dim=-1)

    mesh = extract_mesh(minus_sdf, GREY, resolution=64, threshold=0.0, smooth=0.025, smooth_log=False)
    radius = np.linalg.norm(mesh.vertices, axis=1)  # (V,)
    assert np.allclose(radius, R0, rtol=0.005)  # a blur moves a level set of |x| inward by ~sigma^2 / r0
    assert mesh.euler_number == 2
