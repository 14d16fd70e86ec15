"""UV atlas (xatlas) and a baked albedo texture.

`unwrap` cuts the mesh into charts and packs them into one atlas; vertices on a seam are split
(`source` maps each new vertex to the one it came from). `bake` rasterizes every chart into a
size² texture: for each texel whose centre lies inside a triangle, the barycentric coordinates
(λ0, λ1, λ2) of that centre give the surface point p = Σ λi·xi, and the texel holds the field's
albedo at p — not colours interpolated between vertices, so detail finer than a triangle survives
decimation. Empty texels then take the colour of their nearest written texel (an unbounded
dilation), so bilinear filtering and the lower mip levels of a viewer average chart colours
with copies of themselves, not with black, and seams do not show.

UV convention: u right, v down from the image's top row, in [0, 1] (glTF's); OBJ flips v.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import xatlas
from scipy import ndimage

ALBEDO_CHUNK = 2**18
UTILIZATION_GUESS = 0.6  # share of the atlas the packed charts cover (xatlas gives ~0.6 on these meshes)
# a chart stops growing when its boundary would pass this times sqrt(surface area) (xatlas's
# max_boundary_length; its later merges and splits can still make longer ones). xatlas re-checks a
# growing chart's parameterization at every face it adds, so its time grows with the charts' size:
# this bound cut the unwrap of a 20k-face torus from 6.3 s to 1.3 s (14 -> 91 charts). The cost is
# padding round the extra charts: 55 -> 38 % of a 1024² texture's texels fall in a chart (README)
MAX_BOUNDARY = 1.0


class UnwrapError(RuntimeError):
    """xatlas found no charts (a degenerate mesh): the caller falls back to vertex colours."""


@dataclass
class UVMesh:
    vertices: np.ndarray  # (V', 3) float, split at seams
    faces: np.ndarray  # (F, 3) int into vertices
    uv: np.ndarray  # (V', 2) float in [0, 1], u right, v down
    source: np.ndarray  # (V',) index of each vertex in the unwrapped mesh


def unwrap(vertices: np.ndarray, faces: np.ndarray, size: int, padding: int = 4) -> UVMesh:
    """One xatlas atlas of the mesh (V, 3), (F, 3), scaled to about `size` texels a side with
    `padding` texels between charts, each chart grown to a boundary of at most MAX_BOUNDARY·sqrt(area)
    (a bound on growth, not on the final charts). Raises UnwrapError when xatlas returns no usable atlas."""
    corner = vertices[faces[:, 0]]
    area = float(0.5 * np.linalg.norm(np.cross(vertices[faces[:, 1]] - corner, vertices[faces[:, 2]] - corner), axis=1).sum())
    if not np.isfinite(area) or area <= 0:
        raise UnwrapError("the mesh has no area to unwrap")
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = 0  # one atlas of whatever size texels_per_unit gives (a fixed resolution may make several pages)
    pack.texels_per_unit = float(size * np.sqrt(UTILIZATION_GUESS / area))
    pack.padding, pack.bilinear = padding, True
    charts = xatlas.ChartOptions()
    charts.max_boundary_length = MAX_BOUNDARY * float(np.sqrt(area))  # 0 would be xatlas's default: unbounded
    atlas.generate(charts, pack)
    if atlas.width == 0 or atlas.atlas_count != 1:
        raise UnwrapError(f"xatlas made {atlas.atlas_count} atlases of {atlas.width}x{atlas.height} texels")
    source, new_faces, uv = atlas[0]
    if len(new_faces) != len(faces) or not np.isfinite(uv).all():
        raise UnwrapError("xatlas left faces without UV coordinates")
    return UVMesh(np.asarray(vertices)[source], new_faces.astype(np.int64), uv.astype(np.float64), source.astype(np.int64))


def rasterize(uv_mesh: UVMesh, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Texels whose centres lie in a triangle of the atlas: their flat indices (T,) into the
    size² image (row-major, row = v·size), the face (T,) and barycentric coordinates (T, 3)."""
    tri = uv_mesh.uv[uv_mesh.faces] * size  # (F, 3, 2) in texels; a texel (x, y) has its centre at (x + ½, y + ½)
    low = np.clip(np.floor(tri.min(1) - 0.5), 0, size - 1).astype(np.int64)  # (F, 2)
    high = np.clip(np.ceil(tri.max(1) - 0.5), 0, size - 1).astype(np.int64)  # (F, 2)
    width, height = high[:, 0] - low[:, 0] + 1, high[:, 1] - low[:, 1] + 1  # (F,)
    counts = width * height
    face = np.repeat(np.arange(len(tri)), counts)  # (C,) a candidate texel per bounding-box cell
    k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    x = low[face, 0] + k % width[face]
    y = low[face, 1] + k // width[face]
    a, b, c = tri[face, 0], tri[face, 1], tri[face, 2]  # (C, 2) each
    p = np.stack([x + 0.5, y + 0.5], axis=1)
    cross = lambda u, v: u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]  # noqa: E731
    double_area = cross(b - a, c - a)  # (C,) signed
    ok = np.abs(double_area) > 1e-12
    safe = np.where(ok, double_area, 1.0)
    l1, l2 = cross(p - a, c - a) / safe, cross(b - a, p - a) / safe
    bary = np.stack([1 - l1 - l2, l1, l2], axis=1)  # (C, 3)
    inside = ok & (bary >= -1e-6).all(1)
    return (y * size + x)[inside], face[inside], bary[inside]


def bake(uv_mesh: UVMesh, albedo: Callable[[np.ndarray], np.ndarray], size: int) -> tuple[np.ndarray, float]:
    """The (size, size, 3) uint8 sRGB texture of `albedo` (points (N, 3) -> (N, 3) in [0, 1]) over
    the atlas, dilated into the empty texels; and the share of texels written before dilation."""
    texel, face, bary = rasterize(uv_mesh, size)
    points = np.einsum("tk,tkd->td", bary, uv_mesh.vertices[uv_mesh.faces[face]])  # (T, 3) surface points
    colours = np.concatenate([albedo(points[s : s + ALBEDO_CHUNK]) for s in range(0, len(points), ALBEDO_CHUNK)] or [np.zeros((0, 3))])
    image = np.zeros((size * size, 3), np.float32)
    image[texel] = np.clip(colours, 0.0, 1.0)
    written = np.zeros(size * size, bool)
    written[texel] = True
    if not written.any():
        raise UnwrapError("no texel centre fell inside a chart")
    image, written = image.reshape(size, size, 3), written.reshape(size, size)
    _, (rows, cols) = ndimage.distance_transform_edt(~written, return_indices=True)  # nearest written texel of each texel
    image = image[rows, cols]
    return np.round(image * 255.0).astype(np.uint8), float(written.mean())


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup (N, 3) in [0, 1] of a (S, S, 3) uint8 texture at uv (N, 2), clamped at the
    border: what a viewer shows at the finest mip level."""
    size = texture.shape[0]
    x = np.clip(uv[:, 0] * size - 0.5, 0, size - 1)
    y = np.clip(uv[:, 1] * size - 0.5, 0, size - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, size - 1), np.minimum(y0 + 1, size - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    t = texture.astype(np.float64) / 255.0
    top = t[y0, x0] * (1 - fx) + t[y0, x1] * fx
    bottom = t[y1, x0] * (1 - fx) + t[y1, x1] * fx
    return top * (1 - fy) + bottom * fy
