"""The artist's asset: marching cubes' mesh -> decimated to a
face budget (decimate.py) -> UV atlas and baked albedo texture (uv_bake.py) -> GLB / OBJ + MTL +
PNG / PLY (export.py, glb.py). `evaluate.py` measures it as Blender shows it.

`make_asset` never loses the mesh: if the atlas or the bake fails (a degenerate mesh) the asset
keeps per-vertex colours and says why in `warning`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import trimesh

from .decimate import decimate
from .uv_bake import UnwrapError, UVMesh, bake, unwrap

log = logging.getLogger(__name__)
CHUNK = 2**18


@dataclass
class Asset:
    mesh: trimesh.Trimesh  # decimated, not split at seams; vertex colours (sRGB uint8) from the field
    uv_mesh: UVMesh | None  # the same surface split at UV seams; None when unwrapping failed
    texture: np.ndarray | None  # (S, S, 3) uint8 sRGB albedo, or None (vertex colours only)
    normals: np.ndarray | None  # (V', 3) smooth normals of uv_mesh's vertices
    seconds: dict[str, float] = field(default_factory=dict)
    texel_coverage: float = 0.0  # share of texels inside a chart (before dilation)
    warning: str = ""


def numpy_albedo(albedo_fn: Callable[[torch.Tensor], torch.Tensor],
                 device: str | torch.device = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """The field's albedo as numpy points (N, 3) -> colours (N, 3), evaluated in chunks without gradients."""

    def albedo(points: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([
                albedo_fn(torch.as_tensor(points[s : s + CHUNK], dtype=torch.float32, device=device)).float().cpu().numpy().reshape(-1, 3)
                for s in range(0, len(points), CHUNK)
            ] or [np.zeros((0, 3), np.float32)])

    return albedo


def decimate_coloured(mesh: trimesh.Trimesh, albedo: Callable[[np.ndarray], np.ndarray], faces: int) -> trimesh.Trimesh:
    """`mesh` decimated to `faces` (0: all kept), its vertices coloured (sRGB uint8) by `albedo` there."""
    small = decimate(mesh, faces)
    rgb = np.round(np.clip(albedo(np.asarray(small.vertices)), 0, 1) * 255).astype(np.uint8)
    small.visual.vertex_colors = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    small.metadata.update(mesh.metadata)
    return small


def make_asset(mesh: trimesh.Trimesh, albedo: Callable[[np.ndarray], np.ndarray], faces: int, texture_size: int) -> Asset:
    """Decimate `mesh` to `faces` (0: keep all), colour its vertices and bake a texture_size² albedo
    texture from `albedo` (numpy points -> colours in [0, 1]); each stage's seconds in `seconds`."""
    seconds = {}
    tick = time.perf_counter()
    small = decimate_coloured(mesh, albedo, faces)
    seconds["decimate"] = time.perf_counter() - tick
    asset = Asset(small, None, None, None, seconds)
    try:
        tick = time.perf_counter()
        uv_mesh = unwrap(np.asarray(small.vertices), np.asarray(small.faces), texture_size)
        seconds["unwrap"] = time.perf_counter() - tick
        tick = time.perf_counter()
        asset.texture, asset.texel_coverage = bake(uv_mesh, albedo, texture_size)
        seconds["bake"] = time.perf_counter() - tick
    except UnwrapError as exc:
        asset.warning = f"no UV atlas ({exc}); the mesh keeps per-vertex colours"
        log.warning("%s", asset.warning)
        return asset
    asset.uv_mesh = uv_mesh
    asset.normals = np.asarray(small.vertex_normals)[uv_mesh.source]
    log.info("asset: %d -> %d faces, %d charts' vertices, %dx%d texture (%.0f %% of texels in charts)",
             len(mesh.faces), len(small.faces), len(uv_mesh.vertices), texture_size, texture_size, 100 * asset.texel_coverage)
    return asset
