"""backend/renderer.py on volumes whose images are known in closed form."""

import pytest
import torch

from backend.cameras import make_cameras
from backend.renderer import RenderSettings, ray_sphere_bounds, render


class Ball:
    """A solid ball of radius r: density `value` inside, colour `albedo`, outward normals."""

    def __init__(self, radius=0.5, value=1e4, albedo=(1.0, 0.0, 0.0)):
        self.radius, self.value, self.albedo = radius, value, torch.tensor(albedo)

    def sample(self, points):
        inside = points.norm(dim=-1) < self.radius
        return inside.float() * self.value, self.albedo.expand(len(points), 3)

    def normals(self, points):
        return points / points.norm(dim=-1, keepdim=True)


def front_camera(distance=3.0, fov=40.0):
    return make_cameras(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([distance]), torch.tensor([fov]))


def test_ray_sphere_bounds():
    near, far = ray_sphere_bounds(torch.tensor([[0.0, -3.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]]), 1.0)
    assert torch.allclose(near, torch.tensor([2.0])) and torch.allclose(far, torch.tensor([4.0]))
    near, far = ray_sphere_bounds(torch.tensor([[0.0, -3.0, 2.0]]), torch.tensor([[0.0, 1.0, 0.0]]), 1.0)
    assert near == far  # a miss


def test_silhouette_of_a_sphere_matches_projection():
    res, distance, fov = 128, 3.0, 40.0
    out = render(Ball(), front_camera(distance, fov), res, 256, RenderSettings("albedo", background=torch.zeros(1, 3)))
    opacity = out["opacity"][0, ..., 0]
    # the ball's silhouette is a disc of angular radius asin(r/d)
    tan_r = torch.tan(torch.asin(torch.tensor(0.5 / distance)))
    pixel_radius = tan_r / torch.tan(torch.deg2rad(torch.tensor(fov / 2))) * res / 2
    expected_area = torch.pi * pixel_radius**2
    assert abs(float((opacity > 0.5).sum()) - float(expected_area)) / float(expected_area) < 0.03
    assert opacity[0, 0] < 1e-6 and opacity[res // 2, res // 2] > 0.999
    # red where opaque, the black background elsewhere
    assert torch.allclose(out["rgb"][0, res // 2, res // 2], torch.tensor([1.0, 0.0, 0.0]), atol=1e-3)
    # depth at the centre is distance - radius
    assert abs(float(out["depth"][0, res // 2, res // 2, 0]) - 2.5) < 0.02


def test_background_shows_through_empty_space():
    out = render(Ball(value=0.0), front_camera(), 16, 16, RenderSettings("albedo", background=torch.tensor([[0.2, 0.4, 0.6]])))
    assert torch.allclose(out["rgb"], torch.tensor([0.2, 0.4, 0.6]).expand(1, 16, 16, 3), atol=1e-6)


def test_lambertian_lit_from_the_camera_is_brightest_at_the_centre():
    light = torch.tensor([[0.0, -1.0, 0.0]])  # towards the front camera
    settings = RenderSettings("lambertian", light=light, background=torch.zeros(1, 3), ambient=0.2)
    out = render(Ball(), front_camera(), 65, 256, settings)
    centre = out["rgb"][0, 32, 32]
    assert torch.allclose(centre, torch.tensor([1.0, 0.0, 0.0]), atol=0.02)  # n.l = 1
    assert out["rgb"][0, 32, 20, 0] < centre[0]  # darker towards the rim
    textureless = render(Ball(), front_camera(), 65, 256, RenderSettings("textureless", light, torch.zeros(1, 3), 0.2))
    assert torch.allclose(textureless["rgb"][0, 32, 32], torch.ones(3), atol=0.02)  # white albedo


def test_jitter_changes_samples_but_not_a_solid_image_much():
    settings = RenderSettings("albedo", background=torch.zeros(1, 3))
    a = render(Ball(), front_camera(), 32, 64, settings)
    b = render(Ball(), front_camera(), 32, 64, settings, generator=torch.Generator().manual_seed(0))
    assert (a["opacity"] - b["opacity"]).abs().mean() < 0.05


def test_normals_at_the_most_visible_samples_only():
    """shaded_diffuse: n.l at each ray's SHADED_SAMPLES_PER_RAY heaviest samples above the weight threshold, 0 elsewhere
    (fixed shapes: no boolean mask, so a GPU never waits to learn how many samples are visible)."""
    from backend.renderer import NORMAL_WEIGHT_THRESHOLD, SHADED_SAMPLES_PER_RAY, shaded_diffuse

    torch.manual_seed(0)
    rays, samples = 5, 20
    points = torch.randn(rays, samples, 3)
    weights = torch.rand(rays, samples) * 0.1
    weights[0] = 0  # a ray that misses: no normal counts
    weights[1, :] = NORMAL_WEIGHT_THRESHOLD / 2
    weights[1, 3] = 0.5  # one visible sample
    light = torch.nn.functional.normalize(torch.randn(rays, 3), dim=-1)
    light[1] = torch.nn.functional.normalize(points[1, 3], dim=-1)  # lit head-on: n.l = 1
    diffuse = shaded_diffuse(Ball(), points, weights, light)
    lit = ((points / points.norm(dim=-1, keepdim=True)) * light[:, None]).sum(-1).clamp(min=0)
    assert torch.all(diffuse[0] == 0) and diffuse[1].nonzero().flatten().tolist() == [3] and diffuse[1, 3] == pytest.approx(1.0)
    for ray in range(2, rays):
        top = weights[ray].topk(SHADED_SAMPLES_PER_RAY).indices
        expected = torch.zeros(samples)
        expected[top] = lit[ray, top]
        torch.testing.assert_close(diffuse[ray], expected)
