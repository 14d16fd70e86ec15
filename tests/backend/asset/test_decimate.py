"""backend/asset/decimate.py: face budgets, and the analytic shapes keep their topology."""

import pytest
import trimesh

from backend.asset.decimate import decimate
from backend.guidance.targets import targets_from_prompt
from backend.mesh import extract_mesh

SHAPES = {"sphere": 2, "cube": 2, "torus": 0, "cone": 2, "cylinder": 2, "capsule": 2}  # Euler characteristic V - E + F


def analytic_mesh(shape: str, resolution: int = 96) -> trimesh.Trimesh:
    """Marching cubes of a target's own signed distance (the shape the prior asks for)."""
    target = targets_from_prompt(f"a red {shape}")[0]
    return extract_mesh(lambda p: -target.sdf_and_albedo(p)[0], lambda p: target.sdf_and_albedo(p)[1], resolution, 0.0)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_decimation_keeps_the_euler_characteristic_of_every_analytic_shape(shape):
    mesh = analytic_mesh(shape)
    assert mesh.euler_number == SHAPES[shape] and len(mesh.faces) > 10000
    for budget in (5000, 1000, 300):
        small = decimate(mesh, budget)
        assert budget * 0.9 <= len(small.faces) <= budget, (budget, len(small.faces))
        assert small.is_watertight and small.euler_number == SHAPES[shape], (shape, budget, small.euler_number)


def test_a_budget_of_zero_or_above_the_face_count_keeps_every_face():
    mesh = trimesh.creation.icosphere(subdivisions=3)  # 1280 faces
    assert len(decimate(mesh, 0).faces) == 1280
    assert len(decimate(mesh, 5000).faces) == 1280
    assert len(decimate(mesh, 640).faces) <= 640


def test_decimation_stays_on_the_surface():
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=0.5)  # 20480 faces
    small = decimate(mesh, 2000)
    radii = (small.vertices**2).sum(1) ** 0.5
    assert abs(radii - 0.5).max() < 0.01
