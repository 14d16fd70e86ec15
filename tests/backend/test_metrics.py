"""backend/metrics.py on hand-made cases."""

import numpy as np
import pytest
import torch

from backend.guidance.targets import targets_from_prompt
from backend.metrics import PSNR_CAP_DB, psnr, relative_chamfer, ring_quality, target_surface_points


def test_psnr_values():
    assert psnr(0.0) == PSNR_CAP_DB
    assert psnr(0.01) == pytest.approx(20.0)
    assert psnr(torch.tensor(1e-3)) == pytest.approx(30.0)


def test_render_identical_to_a_target_is_capped_psnr_and_full_consistency():
    targets = torch.rand(3, 4, 8, 8, 3)  # K=3 targets, V=4 views
    quality = ring_quality(targets[1].clone(), targets, ["a", "b", "c"])
    assert quality["best_target"] == 1 and quality["best_target_name"] == "b"
    assert quality["psnr"] == PSNR_CAP_DB and quality["consistency"] == 1.0


def test_consistency_counts_views_whose_nearest_target_is_the_best():
    targets = torch.zeros(2, 4, 2, 2, 3)
    targets[1] += 1.0
    renders = torch.tensor([0.1, 0.2, 0.3, 0.9]).reshape(4, 1, 1, 1).expand(4, 2, 2, 3)
    quality = ring_quality(renders, targets, ["dark", "light"])
    assert quality["best_target"] == 0 and quality["consistency"] == 0.75


def test_target_surface_points_lie_on_the_surface():
    (sphere,) = targets_from_prompt("a red sphere")
    points = target_surface_points(sphere, n=2000)
    assert np.abs(np.linalg.norm(points, axis=1) - 0.5).max() < 0.01
    assert relative_chamfer(points, points) == 0.0
    shifted = points + np.array([0.01, 0.0, 0.0])
    assert 0 < relative_chamfer(shifted, points) < 0.01
