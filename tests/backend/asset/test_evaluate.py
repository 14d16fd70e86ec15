"""backend/asset/evaluate.py and reference.py: the target's surface renders, compositing, and
asset-eval on a tiny run (headless Blender in a subprocess, when bpy is installed)."""

import json
import math

import numpy as np
import pytest
import torch

from backend.asset.evaluate import blender_python, evaluate_run, linear_to_srgb, over_white
from backend.asset.reference import surface_albedo
from backend.cameras import evaluation_ring
from backend.config import GenerationConfig
from backend.guidance.targets import targets_from_prompt
from backend.trainer import Trainer


def test_the_surface_reference_of_a_sphere_is_a_disc_of_its_colour():
    ring, resolution = evaluation_ring(n_views=2), 64
    image = surface_albedo(targets_from_prompt("a red sphere")[0], ring, resolution, supersample=4)  # (2, 64, 64, 3)
    red = np.array([0.85, 0.10, 0.10])
    covered = ((1.0 - image[..., 1]) / (1.0 - 0.10)).mean(dim=(1, 2))  # share of the pixels the sphere covers
    radius = math.tan(math.asin(0.5 / 2.4)) / math.tan(math.radians(22.5)) * resolution / 2  # in pixels
    assert torch.allclose(covered, torch.full((2,), math.pi * radius**2 / resolution**2, dtype=covered.dtype), rtol=0.02)
    assert np.allclose(image[0, 32, 32].numpy(), red, atol=1e-6) and torch.all(image[:, 0, 0] == 1.0)


def test_premultiplied_linear_pixels_go_over_white_in_srgb():
    rgba = np.array([[0.0, 0.0, 0.0, 0.0], [0.2, 0.2, 0.2, 1.0], [0.1, 0.1, 0.1, 0.5]], np.float32)
    out = over_white(rgba)
    assert np.allclose(out[0], 1.0) and np.allclose(out[1], linear_to_srgb(np.float32(0.2)))
    assert np.allclose(out[2], 0.5 * linear_to_srgb(np.float32(0.2)) + 0.5)


@pytest.mark.skipif(blender_python() is None, reason="no Python with bpy")
def test_asset_eval_of_a_tiny_run_adds_asset_to_metrics(tmp_path):
    config = GenerationConfig(prompt="a red torus", guidance="analytic", device="cpu", steps=12, resolution=16, preview_resolution=32,
                              samples_per_ray=16, encoding="dense", dense_resolution=24, mlp_hidden=0, lr=0.05, mesh_resolution=40,
                              preview_every=0, checkpoint_every=0, texture_size=256)
    run = tmp_path / "run"
    Trainer(config, run).run()
    result = evaluate_run(run, samples=4, supersample=2)
    print(result)
    assert json.loads((run / "metrics.json").read_text())["asset"] == result
    assert result["target"] == "red torus" and result["views"] == 8 and result["resolution"] == 32
    assert 5 < result["psnr"] < 100 and 5 < result["vertex_color_psnr"] < 100 and 5 < result["same_faces_vertex_color_psnr"] < 100
    assert result["same_faces_gain_db"] == round(result["psnr"] - result["same_faces_vertex_color_psnr"], 2)
    assert result["bake_psnr"] >= 30 and result["bake_pixels"] > 100  # the texture shows the field's albedo
    from PIL import Image

    assert Image.open(run / "asset_ring.png").size == (8 * 32, 4 * 32)  # target, asset, both baselines; 8 views
