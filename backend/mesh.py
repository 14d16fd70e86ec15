"""From a density field to an exported, coloured mesh (docs/ARCHITECTURE.md §4.8).

Query the density on an R³ grid over [-bound, bound]^3 → PyMCubes marching cubes at a density
threshold → drop small floating components → vertex colours from the albedo field → export
(GLB / PLY / OBJ, each written atomically). `chamfer_distance` and `sample_surface` measure the
result (docs/ARCHITECTURE.md §7, mesh error).

Coarse-to-fine: the field is first queried on every COARSE_STRIDE-th grid point; only coarse
cells whose corners straddle the threshold (dilated by one cell) are queried at full
resolution, the rest copy their nearest coarse value, which lies on the same side of the
threshold. A feature smaller than a coarse cell that touches no straddling cell is missed;
such specks are floaters that component filtering would drop anyway.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import mcubes
import numpy as np
import torch
import trimesh
from scipy import ndimage
from scipy.spatial import cKDTree

from .config import EXPORT_FORMATS
from .run_folder import atomic_path

log = logging.getLogger(__name__)

Field = Callable[[torch.Tensor], torch.Tensor]  # (N, 3) world points -> (N,) or (N, C)
COARSE_STRIDE = 4  # fine grid steps per coarse cell: 256³ is first seen at 64³


class MeshError(ValueError):
    """The field has no surface to extract (the message says what was looked for; the caller says what to change)."""


def _query(fn: Field, xs: np.ndarray, flat: np.ndarray | None, chunk: int, device: str) -> np.ndarray:
    """Evaluate `fn` at grid points of the n³ grid with axis coordinates `xs` (n,).

    `flat` (M,) holds C-order indices into the grid; None means all n³ points.
    Returns (M,) or (M, C) float32 on the CPU.
    """
    n = len(xs)
    axis = torch.as_tensor(xs, dtype=torch.float32, device=device)  # (n,)
    total = n**3 if flat is None else len(flat)
    out = []
    with torch.no_grad():
        for start in range(0, total, chunk):
            stop = min(start + chunk, total)
            ids = torch.arange(start, stop) if flat is None else torch.from_numpy(flat[start:stop])
            ids = ids.to(device)  # (m,)
            points = torch.stack([axis[ids // (n * n)], axis[(ids // n) % n], axis[ids % n]], dim=-1)  # (m, 3)
            out.append(fn(points).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def _query_points(fn: Field, points: np.ndarray, chunk: int, device: str) -> np.ndarray:
    """Evaluate `fn` at arbitrary points (V, 3); returns (V, C) float32 on the CPU."""
    with torch.no_grad():
        out = [
            fn(torch.as_tensor(points[s : s + chunk], dtype=torch.float32, device=device)).float().cpu()
            for s in range(0, len(points), chunk)
        ]
    return torch.cat(out).numpy()


def _density_grid(density_fn, xs, threshold, chunk, device, coarse_to_fine) -> tuple[np.ndarray, int]:
    """The (R, R, R) density grid and how many points were queried to fill it."""
    r = len(xs)
    if not coarse_to_fine or r <= 2 * COARSE_STRIDE:
        return _query(density_fn, xs, None, chunk, device).reshape(r, r, r), r**3

    idx = np.unique(np.r_[np.arange(0, r, COARSE_STRIDE), r - 1])  # (n,) fine indices of coarse points
    n = len(idx)
    coarse = _query(density_fn, xs[idx], None, chunk, device).reshape(n, n, n)
    corners = np.stack([coarse[i : n - 1 + i, j : n - 1 + j, k : n - 1 + k]
                        for i in (0, 1) for j in (0, 1) for k in (0, 1)])  # (8, n-1, n-1, n-1)
    active = (corners.min(0) <= threshold) & (corners.max(0) >= threshold)  # (n-1,)³ straddling cells
    active = ndimage.binary_dilation(active, structure=np.ones((3, 3, 3), bool))

    fine = np.arange(r)
    cell = np.minimum(np.searchsorted(idx, fine, side="right") - 1, n - 2)  # (R,) cell below each index
    nearest = np.abs(fine[:, None] - idx[None, :]).argmin(1)  # (R,) nearest coarse point
    grid = coarse[np.ix_(nearest, nearest, nearest)]  # (R, R, R) filled from the coarse grid
    todo = active[np.ix_(cell, cell, cell)]  # (R, R, R) points inside active cells
    todo[np.ix_(idx, idx, idx)] = False  # coarse points are already exact
    flat = np.flatnonzero(todo)  # (M,)
    grid.reshape(-1)[flat] = _query(density_fn, xs, flat, chunk, device).reshape(-1)
    return grid, n**3 + len(flat)


def extract_mesh(
    density_fn: Field,
    albedo_fn: Field,
    resolution: int = 256,
    threshold: float = 10.0,
    bound: float = 1.0,
    chunk: int = 2**18,
    min_component_ratio: float = 0.05,
    coarse_to_fine: bool = True,
    device: str = "cpu",
    fill_cavities: bool = True,
    smooth: float = 0.0,
    smooth_log: bool = True,
) -> trimesh.Trimesh:
    """Marching cubes of {density >= threshold} on a `resolution`³ grid over [-bound, bound]^3.

    Faces are wound so normals point outward (density is high inside); components with fewer
    than `min_component_ratio` × (faces of the largest) faces are dropped; vertex colours are
    `albedo_fn` at the vertices (uint8 RGBA, sRGB as rendered). `mesh.metadata` records
    `points_evaluated` and `grid_points` (= resolution³). With `fill_cavities`, empty space that
    the outside cannot reach is filled first, so a hollow shell gives one closed outer surface.
    `smooth` > 0 blurs the grid with a Gaussian of that width (world units) first: log density, or
    the values themselves with `smooth_log` False (a signed distance, which a blur leaves in place
    where the surface is flat; it removes marching cubes' sub-voxel tunnels at sharp edges).
    Raises MeshError if nothing is found.
    """
    xs = np.linspace(-bound, bound, resolution, dtype=np.float32)  # (R,) grid axis in world units
    grid, evaluated = _density_grid(density_fn, xs, threshold, chunk, device, coarse_to_fine)
    if not (grid >= threshold).any():
        raise MeshError(
            f"no surface above density threshold {threshold:g} (the densest point found is {np.nanmax(grid):.3g})"
        )
    if smooth > 0:  # Gaussian blur: removes voxel-scale speckle, keeps the surface
        sigma = smooth * (resolution - 1) / 2 / bound
        if smooth_log:
            grid = np.exp(ndimage.gaussian_filter(np.log(np.maximum(grid, 1e-6)), sigma)).astype(np.float32)
        else:
            grid = ndimage.gaussian_filter(grid, sigma).astype(np.float32)
    if fill_cavities:  # a hollow shell (unseen, untrained interior) becomes solid: one outer surface
        inside = grid >= threshold
        enclosed = ndimage.binary_fill_holes(inside) & ~inside
        grid[enclosed] = max(2 * threshold, threshold + 1.0)  # inside, also for a level of 0 (an SDF)
        mesh_metadata = {"cavity_points_filled": int(enclosed.sum())}
    else:
        mesh_metadata = {}
    empty = min(0.0, threshold - 1.0)  # a padding layer below threshold closes surfaces at the box
    vertices, faces = mcubes.marching_cubes(np.pad(grid, 1, constant_values=empty), threshold)
    # PyMCubes winds faces towards decreasing values: outward here, no flip needed.
    vertices = np.clip((vertices - 1.0) * (2.0 * bound / (resolution - 1)) - bound, -bound, bound)  # (V, 3)
    mesh = trimesh.Trimesh(vertices, faces, process=True)  # merges duplicate vertices
    mesh.update_faces(mesh.nondegenerate_faces())
    if len(mesh.faces) == 0:  # smoothing can lower thin peaks below the threshold
        raise MeshError(f"no surface above density threshold {threshold:g} once smoothed by {smooth:g}")

    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))  # (F,)
    sizes = np.bincount(labels)  # faces per component
    mesh.update_faces(sizes[labels] >= min_component_ratio * sizes.max())
    mesh.remove_unreferenced_vertices()

    albedo = _query_points(albedo_fn, mesh.vertices, chunk, device).reshape(-1, 3)  # (V, 3) in [0, 1]
    rgb = np.round(np.clip(albedo, 0.0, 1.0) * 255.0).astype(np.uint8)
    mesh.visual.vertex_colors = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)  # (V, 4)
    mesh.metadata.update(points_evaluated=evaluated, grid_points=resolution**3, **mesh_metadata)
    log.info("mesh: %d vertices, %d faces; queried %d of %d grid points",
             len(mesh.vertices), len(mesh.faces), evaluated, resolution**3)
    return mesh


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The sRGB decoding curve (IEC 61966-2-1) on values in [0, 1]."""
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


# (x, y, z) -> (x, z, -y): a -90° turn about x, from Blender's z-up frame to glTF's y-up.
Z_UP_TO_Y_UP = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def export_mesh(
    mesh: trimesh.Trimesh, run_dir: str | Path, formats: tuple[str, ...] = ("glb",), stem: str = "mesh"
) -> dict[str, Path]:
    """Write `<run_dir>/<stem>.<fmt>` for each format, atomically, with colours and normals.

    GLB stores COLOR_0 in linear RGB as glTF requires (Blender converts it back), so its
    colours are `srgb_to_linear` of the mesh's; PLY and OBJ keep the sRGB bytes. The field is
    z-up (Blender's frame) and glTF is y-up, so GLB vertices are rotated into glTF's frame and
    Blender's importer turns them back upright.
    Returns {format: path}.
    """
    unknown = [fmt for fmt in formats if fmt not in EXPORT_FORMATS]
    if unknown:
        raise ValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {unknown[0]!r}")
    paths = {}
    for fmt in formats:
        path = Path(run_dir) / f"{stem}.{fmt}"
        with atomic_path(path) as tmp:
            if fmt == "glb":
                out = mesh.copy()
                rgba = mesh.visual.vertex_colors  # (V, 4) uint8, sRGB
                rgb = np.round(srgb_to_linear(rgba[:, :3] / 255.0) * 255.0).astype(np.uint8)
                out.visual.vertex_colors = np.concatenate([rgb, rgba[:, 3:]], axis=1)
                out.apply_transform(Z_UP_TO_Y_UP)
                out.export(tmp, file_type="glb", include_normals=True)
            elif fmt == "ply":
                mesh.export(tmp, file_type="ply", vertex_normal=True)
            else:
                mesh.export(tmp, file_type="obj", include_normals=True)
        paths[fmt] = path
    return paths


def chamfer_distance(points_a: np.ndarray, points_b: np.ndarray) -> float:
    """Symmetric Chamfer distance between point sets a (N, 3) and b (M, 3):

        CD(a, b) = ½ (mean_{x∈a} min_{y∈b} |x − y| + mean_{y∈b} min_{x∈a} |x − y|)

    with Euclidean (not squared) distances, in the units of the points.
    """
    d_ab, _ = cKDTree(points_b).query(points_a)  # (N,)
    d_ba, _ = cKDTree(points_a).query(points_b)  # (M,)
    return float(0.5 * (d_ab.mean() + d_ba.mean()))


def sample_surface(mesh: trimesh.Trimesh, n: int, seed: int = 0) -> np.ndarray:
    """`n` points (n, 3) drawn uniformly by area from the mesh surface, reproducibly by `seed`."""
    points, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return np.asarray(points)
