"""backend/cameras.py: frames, rays and the evaluation ring."""

import math

import torch

from backend.cameras import evaluation_ring, make_cameras, random_cameras


def test_front_camera_sits_at_minus_y_and_looks_at_origin():
    cam = make_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([3.0]), torch.tensor([40.0]))
    assert torch.allclose(cam.position[0], torch.tensor([0.0, -3.0, 0.0]), atol=1e-6)
    origins, dirs = cam.rays(9)
    centre = dirs[0, 4, 4]
    assert torch.allclose(centre, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)  # looks along +y
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(1, 9, 9))
    # image up is world up, image right is world +x (seen from the front)
    assert dirs[0, 0, 4, 2] > 0 and dirs[0, 4, 8, 0] > 0


def test_field_of_view_spans_the_image():
    cam = make_cameras(torch.tensor([0.0]), torch.tensor([90.0]), torch.tensor([2.0]), torch.tensor([60.0]))
    _, dirs = cam.rays(1000)
    top, bottom = dirs[0, 0, 500], dirs[0, -1, 500]
    angle = math.degrees(math.acos(float((top * bottom).sum())))
    assert abs(angle - 60.0) < 0.2


def test_overhead_camera_is_not_degenerate():
    cam = make_cameras(torch.tensor([90.0]), torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([45.0]))
    assert torch.isfinite(cam.c2w).all()
    _, dirs = cam.rays(5)
    assert torch.allclose(dirs[0, 2, 2], torch.tensor([0.0, 0.0, -1.0]), atol=1e-6)


def test_random_cameras_are_seeded_and_in_range():
    a = random_cameras(64, torch.Generator().manual_seed(1))
    b = random_cameras(64, torch.Generator().manual_seed(1))
    assert torch.equal(a.c2w, b.c2w)
    assert a.elevation.min() >= -10 and a.elevation.max() <= 80
    assert torch.allclose(a.position.norm(dim=-1), a.distance, atol=1e-5)


def test_evaluation_ring_is_evenly_spaced():
    ring = evaluation_ring(8)
    assert len(ring) == 8
    assert torch.allclose(torch.diff(ring.azimuth[:4]), torch.full((3,), 45.0))
    assert torch.allclose(ring.position[:, 2], ring.position[0, 2].expand(8))
