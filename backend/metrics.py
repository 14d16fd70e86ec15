"""Quality against the analytic prior's known answers (docs/ARCHITECTURE.md §7).

quality      PSNR of the field's evaluation-ring renders against the best-matching single target k*,
             one k* for all views (the k with the lowest MSE over the whole ring)
consistency  share of ring views whose own nearest target is k*
mesh error   Chamfer distance between the mesh and k*'s surface, over its bounding-box diagonal
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .guidance.targets import Target

PSNR_CAP_DB = 100.0  # the PSNR reported for identical images


def psnr(mse: float | torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1], capped at PSNR_CAP_DB."""
    mse = float(mse)
    return PSNR_CAP_DB if mse <= 10 ** (-PSNR_CAP_DB / 10) else -10 * math.log10(mse)


def ring_quality(renders: torch.Tensor, targets: torch.Tensor, names: list[str]) -> dict:
    """Field renders (V, H, W, 3) against target renders (K, V, H, W, 3) of the same views."""
    mse = ((targets - renders[None]) ** 2).flatten(2).mean(-1)  # (K, V)
    best = int(mse.mean(1).argmin())
    per_view_nearest = mse.argmin(0)  # (V,)
    return {
        "psnr": psnr(mse[best].mean()),
        "best_target": best,
        "best_target_name": names[best],
        "consistency": float((per_view_nearest == best).float().mean()),
        "psnr_per_view": [psnr(m) for m in mse[best]],
        "psnr_per_target": [psnr(m) for m in mse.mean(1)],
    }


def target_surface_points(target: Target, n: int = 20000, resolution: int = 128, seed: int = 0) -> np.ndarray:
    """Area-uniform points (n, 3) on the target's zero level set (marching cubes of its SDF)."""
    import mcubes
    import trimesh

    axis = torch.linspace(-1, 1, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    sdf, _ = target.sdf_and_albedo(grid)
    vertices, faces = mcubes.marching_cubes(-sdf.reshape(resolution, resolution, resolution).numpy(), 0.0)
    vertices = vertices / (resolution - 1) * 2 - 1
    points, _ = trimesh.sample.sample_surface(trimesh.Trimesh(vertices, faces, process=False), n, seed=seed)
    return np.asarray(points)


def relative_chamfer(mesh_points: np.ndarray, target_points: np.ndarray) -> float:
    """Chamfer distance (mesh.chamfer_distance) divided by the target's bounding-box diagonal."""
    from .mesh import chamfer_distance

    diagonal = float(np.linalg.norm(target_points.max(0) - target_points.min(0)))
    return chamfer_distance(mesh_points, target_points) / diagonal
