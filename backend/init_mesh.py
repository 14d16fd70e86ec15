"""Start a run from a shape (config `init_mesh`, `strength`; docs/ARCHITECTURE.md §4.9).

A mesh file (.glb/.gltf, .ply, .obj) becomes the field's initial density and, where the file has
them (vertex colours or a texture), its initial albedo:

1. Frame. The mesh is centred on its bounding box's centre c and scaled by k so its bounding
   sphere (about c) has radius INIT_FILL · scene_radius: field point x = (p − c)·k for a point p
   of the file. The run's meshes are exported back through p = x/k + c (`to_source_frame`), so
   the result lands where the source was, at its size. A GLB is y-up (glTF); PLY and OBJ are
   taken z-up, as this backend and Blender's z-up exporters write them.
2. Inside. The generalized winding number w(x) (Jacobson et al. 2013, by libigl's fast
   Barnes-Hut evaluation, Barill et al. 2018) is 1 inside a closed mesh, 0 outside, and still
   about ½ across the holes of an open one, so {w ≥ ½} is a sensible solid for any surface soup.
   (trimesh's `contains` is ray parity, right only for closed meshes, and took 57 s on a 96³ grid
   of a 9k-face torus against libigl's 0.6 s, both contended.)
3. Distance. s(x) = ±(Euclidean distance transform of that inside mask), exact distances to the
   triangles (libigl) within BAND_VOXELS voxels of the surface: a signed distance, negative inside.
4. The field. A plain voxel grid (the CPU preset) is written directly: as an SDF s when the run
   starts after its SDF switch (field.py's SDF mode, with the same sigma_max and beta as the
   analytic targets, so a mesh of a target renders as that target), else as log density
   log σ = LOG_OUTSIDE + (LOG_INSIDE − LOG_OUTSIDE)·sigmoid(−s/EDGE) less the field's centre blob.
   Any other field (hash grid + MLP) is fitted to the same log density and albedo by FIT_STEPS
   steps of Adam on random points. Albedo: the colour at each voxel's nearest surface point
   (barycentric vertex colours, or the texture at the barycentric UV), copied inwards; a mesh
   without colours leaves the field's initial grey.

Bad files raise ConfigError("init_mesh", …): missing, empty, not a mesh, no faces.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from .adam import FieldAdam
from .config import ConfigError
from .field import SDF_GRID_SCALE, NeRFField

log = logging.getLogger("dreamtime")

MESH_SUFFIXES = (".glb", ".gltf", ".ply", ".obj")
INIT_FILL = 0.7  # bounding-sphere radius / scene_radius: 0.63 at the default 0.9, the analytic torus's own outer radius
BAND_VOXELS = 3  # exact triangle distances this close to the surface; the distance transform beyond
# log density inside and outside: as easy to carve and to grow as the centre blob it replaces (the CPU
# preset's blob is 2 at the centre, -0.8 at r = 0.7); outside, a haze of ~8 % over the bounding sphere
LOG_INSIDE, LOG_OUTSIDE = 3.0, -3.0
EDGE_VOXELS = 0.75  # width of the log-density edge, in voxels
FIT_STEPS = 300  # Adam steps fitting a hash-grid/MLP field to the init mesh
FIT_POINTS = 2**14  # random points per fitting step
Y_UP_TO_Z_UP = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)  # glTF's y-up into z-up


@dataclass
class InitShape:
    """The init mesh on the field's grid: signed distance (R, R, R) and albedo (R, R, R, 3) or None,
    indexed [k, j, i] for the vertex (x_i, y_j, z_k), as the voxel grid stores them."""

    sdf: np.ndarray
    albedo: np.ndarray | None
    frame: dict  # {"center": [3], "scale": k}: field x = (p - center) * scale
    colours: str  # "vertex", "texture" or "none"
    faces: int


def load_init_mesh(path: str):
    """The mesh in `path` (z-up, one Trimesh, a scene's parts joined with their transforms)."""
    import trimesh

    file = Path(path)
    if not file.is_file():
        raise ConfigError("init_mesh", f"no mesh file at {path}")
    if file.suffix.lower() not in MESH_SUFFIXES:
        raise ConfigError("init_mesh", f"{file.name} is not a mesh file this backend reads ({', '.join(MESH_SUFFIXES)})")
    if file.stat().st_size == 0:
        raise ConfigError("init_mesh", f"{path} is empty")
    try:
        loaded = trimesh.load(str(file), force="mesh", process=False)
    except Exception as exc:  # trimesh raises many kinds on a corrupt file: say which, never a traceback
        raise ConfigError("init_mesh", f"{file.name} is not a readable mesh ({type(exc).__name__}: {exc})") from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise ConfigError("init_mesh", f"{file.name} holds no triangles")
    if not np.isfinite(loaded.vertices).all() or np.ptp(loaded.vertices, axis=0).max() <= 0:
        raise ConfigError("init_mesh", f"{file.name} has no extent (every vertex in one place, or non-finite ones)")
    if file.suffix.lower() in (".glb", ".gltf"):
        loaded.apply_transform(Y_UP_TO_Z_UP)
    return loaded


def fit_frame(vertices: np.ndarray, scene_radius: float) -> dict:
    """Centre and scale that put the vertices' bounding sphere (about the box centre) at INIT_FILL·scene_radius."""
    center = (vertices.min(0) + vertices.max(0)) / 2
    radius = float(np.linalg.norm(vertices - center, axis=1).max())
    return {"center": [float(c) for c in center], "scale": INIT_FILL * scene_radius / radius}


def to_source_frame(mesh, frame: dict | None):
    """A copy of a field-frame mesh in the init mesh's own frame (p = x/scale + center); the mesh itself without a frame."""
    if not frame:
        return mesh
    out = mesh.copy()
    out.vertices = out.vertices / frame["scale"] + np.asarray(frame["center"])
    return out


def voxelize(mesh, frame: dict, resolution: int, bound: float = 1.0, linear_colours: bool = False) -> InitShape:
    """The mesh's signed distance and albedo on the field's resolution³ grid over [-bound, bound]³;
    `linear_colours`: the vertex colours are linear (glTF's COLOR_0), turned into the field's sRGB."""
    import igl

    vertices = (np.asarray(mesh.vertices, np.float64) - frame["center"]) * frame["scale"]
    faces = np.asarray(mesh.faces, np.int64)
    axis = np.linspace(-bound, bound, resolution)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    points = np.stack([x, y, z], -1).reshape(-1, 3)  # (R³, 3), [k, j, i] order
    inside = (igl.fast_winding_number(vertices, faces, points) >= 0.5).reshape(resolution, resolution, resolution)
    if not inside.any():
        raise ConfigError("init_mesh", "the mesh encloses no volume (its winding number is below 1/2 everywhere)")
    spacing = 2 * bound / (resolution - 1)
    distance = np.where(inside, -(ndimage.distance_transform_edt(inside) - 0.5), ndimage.distance_transform_edt(~inside) - 0.5) * spacing
    band = np.abs(distance) < BAND_VOXELS * spacing
    exact, face_index, closest, _ = igl.signed_distance(points[band.reshape(-1)], vertices, faces,
                                                        sign_type=igl.SIGNED_DISTANCE_TYPE_UNSIGNED)
    distance[band] = np.where(inside[band], -1, 1) * exact
    albedo, colours = _albedo(mesh, faces, vertices, face_index, closest, band, linear_colours)
    return InitShape(distance.astype(np.float32), albedo, frame, colours, len(faces))


def _albedo(mesh, faces, vertices, face_index, closest, band, linear_colours: bool) -> tuple[np.ndarray | None, str]:
    """Colour of each band voxel's nearest surface point, copied to every voxel from its nearest band voxel."""
    import trimesh

    visual = mesh.visual
    kind = getattr(visual, "kind", None)
    if kind not in ("vertex", "texture"):
        return None, "none"
    bary = trimesh.triangles.points_to_barycentric(vertices[faces[face_index]], closest)  # (B, 3)
    if kind == "texture":
        uv = visual.uv[faces[face_index]] if visual.uv is not None else None
        if uv is None:
            return None, "none"
        rgb = np.asarray(visual.material.to_color((bary[..., None] * uv).sum(1)))[:, :3] / 255.0
    else:
        per_vertex = np.asarray(visual.vertex_colors)[:, :3] / 255.0
        rgb = (bary[..., None] * per_vertex[faces[face_index]]).sum(1)
        if linear_colours:
            rgb = _linear_to_srgb(rgb)
    grid = np.zeros((*band.shape, 3), np.float32)
    grid[band] = np.clip(rgb, 0, 1)
    _, nearest = ndimage.distance_transform_edt(~band, return_indices=True)  # (3, R, R, R): nearest band voxel
    return grid[tuple(nearest)], kind


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(np.clip(c, 0, 1), 1 / 2.4) - 0.055)


def read_init_mesh(path: str, scene_radius: float, resolution: int):
    """load_init_mesh → fit_frame → voxelize, with GLB vertex colours (linear in glTF) taken as sRGB."""
    mesh = load_init_mesh(path)
    gltf = Path(path).suffix.lower() in (".glb", ".gltf")
    return voxelize(mesh, fit_frame(np.asarray(mesh.vertices), scene_radius), resolution, linear_colours=gltf)


# ---------------------------------------------------------------------- into the field
def log_density(sdf: np.ndarray, spacing: float) -> np.ndarray:
    """log σ from a signed distance: LOG_INSIDE deep inside, LOG_OUTSIDE outside, an edge of EDGE_VOXELS voxels."""
    return LOG_OUTSIDE + (LOG_INSIDE - LOG_OUTSIDE) / (1 + np.exp(np.clip(sdf / (EDGE_VOXELS * spacing), -60, 60)))


@torch.no_grad()
def write_voxel_grid(field: NeRFField, shape: InitShape, as_sdf: bool) -> None:
    """Set a plain voxel grid field (field.is_voxel_grid()) to the shape: an SDF, or log density."""
    grid = field.encoding.grid  # (1, 4, R, R, R)
    resolution = grid.shape[-1]
    if shape.sdf.shape != (resolution,) * 3:
        raise ValueError(f"init shape is {shape.sdf.shape[0]}³, the field's grid {resolution}³")
    device, dtype = grid.device, grid.dtype
    if as_sdf:
        grid[0, 0] = torch.as_tensor(shape.sdf, dtype=dtype, device=device) * SDF_GRID_SCALE
        field.sdf_mode = True
    else:
        spacing = 2 * field.bound / (resolution - 1)
        axis = torch.linspace(-field.bound, field.bound, resolution, device=device)
        z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
        blob = field.blob(torch.stack([x, y, z], -1).reshape(-1, 3)).reshape(resolution, resolution, resolution)
        grid[0, 0] = torch.as_tensor(log_density(shape.sdf, spacing), dtype=dtype, device=device) - blob
        field.sdf_mode = False
    if shape.albedo is not None:
        albedo = torch.as_tensor(shape.albedo, dtype=dtype, device=device).clamp(0.02, 0.98)
        grid[0, 1:] = torch.logit(albedo).permute(3, 0, 1, 2)


def fit_field(field: NeRFField, shape: InitShape, steps: int = FIT_STEPS, seed: int = 0, n_points: int = FIT_POINTS) -> float:
    """Fit any field's log density (and albedo) to the shape by Adam on random points; returns the last loss."""
    resolution = shape.sdf.shape[0]
    device = next(field.parameters()).device
    spacing = 2 * field.bound / (resolution - 1)
    # (1, C, D, H, W) volumes read with grid_sample: log density and, where known, albedo
    volumes = [torch.as_tensor(log_density(shape.sdf, spacing), dtype=torch.float32)[None]]
    if shape.albedo is not None:
        volumes.append(torch.as_tensor(shape.albedo, dtype=torch.float32).permute(3, 0, 1, 2))
    target_grid = torch.cat(volumes)[None].to(device)
    optimizer = FieldAdam([{"params": field.parameters(), "lr": 1e-2}])
    generator = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    for _ in range(steps):
        points = (torch.rand(n_points, 3, generator=generator) * 2 - 1).to(device) * field.bound
        target = torch.nn.functional.grid_sample(target_grid, (points / field.bound)[None, None, None], align_corners=True)[0, :, 0, 0].T
        density, albedo = field.sample(points)
        loss = (density.clamp(min=1e-6).log() - target[:, 0]).square().mean()
        if shape.albedo is not None:
            loss = loss + (albedo - target[:, 1:4]).square().mean() * 10
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def initialize_field(field: NeRFField, path: str, scene_radius: float, as_sdf: bool, seed: int = 0, fit_steps: int = FIT_STEPS,
                     fit_points: int = FIT_POINTS) -> dict:
    """Put the init mesh into `field`; returns what metrics.json records of it (its frame included, and
    `seconds`: reading and voxelizing the file, then setting or fitting the field)."""
    started = time.perf_counter()
    resolution = field.encoding.grid.shape[-1] if field.is_voxel_grid() else 96
    shape = read_init_mesh(path, scene_radius, resolution)
    voxelized = time.perf_counter()
    if field.is_voxel_grid():
        write_voxel_grid(field, shape, as_sdf)
        how = "sdf" if as_sdf else "log density"
    else:
        loss = fit_field(field, shape, fit_steps, seed, fit_points)
        how = f"fitted ({fit_steps} steps, loss {loss:.3g})"
    inside = float((shape.sdf < 0).mean())
    log.info("init mesh %s: %d faces, colours %s, %.1f %% of the grid inside; field set as %s", path, shape.faces, shape.colours,
             100 * inside, how)
    if not math.isfinite(inside) or inside == 0:
        raise ConfigError("init_mesh", "the mesh gives no inside on the field's grid")
    seconds = {"voxelize": round(voxelized - started, 3), "field": round(time.perf_counter() - voxelized, 3)}
    return {"path": str(path), "faces": shape.faces, "colours": shape.colours, "inside_share": round(inside, 5), "as": how,
            "frame": shape.frame, "seconds": seconds}
