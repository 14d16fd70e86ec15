"""Writing an Asset into a run folder, every file atomically (backend/run_folder.py).

GLB: the textured mesh (glb.py), or per-vertex colours when there is no texture; COLOR_0 also when
`vertex_colors` asks. OBJ: `<stem>.obj` + `<stem>.mtl` naming the texture `<stem>_albedo.png`
(v flipped: OBJ's v grows upwards). PLY, which has no texture, keeps per-vertex colours. The
texture PNG is written beside the mesh whenever there is one.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..config import EXPORT_FORMATS
from ..mesh import srgb_to_linear
from ..run_folder import atomic_path, atomic_write_text
from . import Asset
from .glb import glb_bytes


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def export_asset(asset: Asset, run_dir: str | Path, formats: tuple[str, ...] = ("glb",), stem: str = "mesh",
                 vertex_colors: bool = False) -> dict[str, Path]:
    """Write `<run_dir>/<stem>.<fmt>` for each format (and `texture`: the PNG; `mtl`: OBJ's material);
    returns {name: path} of every file written."""
    unknown = [fmt for fmt in formats if fmt not in EXPORT_FORMATS]
    if unknown:
        raise ValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {unknown[0]!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    png = png_bytes(asset.texture) if asset.texture is not None else None
    if png is not None:
        paths["texture"] = run_dir / f"{stem}_albedo.png"
        with atomic_path(paths["texture"]) as tmp:
            Path(tmp).write_bytes(png)
    mesh = asset.mesh
    srgb = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0  # (V, 3)
    for fmt in formats:
        path = paths[fmt] = run_dir / f"{stem}.{fmt}"
        if fmt == "ply":
            with atomic_path(path) as tmp:
                mesh.export(tmp, file_type="ply", vertex_normal=True)
        elif fmt == "glb":
            if png is None:
                data = glb_bytes(mesh.vertices, mesh.vertex_normals, mesh.faces, colors_linear=srgb_to_linear(srgb))
            else:
                uv_mesh = asset.uv_mesh
                colours = srgb_to_linear(srgb[uv_mesh.source]) if vertex_colors else None
                data = glb_bytes(uv_mesh.vertices, asset.normals, uv_mesh.faces, uv_mesh.uv, png, colours)
            with atomic_path(path) as tmp:
                Path(tmp).write_bytes(data)
        else:
            atomic_write_text(path, _obj_text(asset, f"{stem}.mtl", vertex_colors or png is None))
            paths["mtl"] = run_dir / f"{stem}.mtl"
            atomic_write_text(paths["mtl"], _mtl_text(f"{stem}_albedo.png" if png is not None else None))
    return paths


def _obj_text(asset: Asset, mtl_name: str, with_colours: bool) -> str:
    """OBJ with v, vt, vn (and per-vertex colours as `v x y z r g b`, a common extension)."""
    mesh, uv_mesh = asset.mesh, asset.uv_mesh
    if uv_mesh is None:
        vertices, normals, faces, uv, source = mesh.vertices, mesh.vertex_normals, mesh.faces, None, np.arange(len(mesh.vertices))
    else:
        vertices, normals, faces, uv, source = uv_mesh.vertices, asset.normals, uv_mesh.faces, uv_mesh.uv, uv_mesh.source
    lines = [f"mtllib {mtl_name}", "o DreamTime"]
    colours = np.asarray(mesh.visual.vertex_colors)[source, :3] / 255.0
    if with_colours:
        lines += [f"v {x:.6f} {y:.6f} {z:.6f} {r:.4f} {g:.4f} {b:.4f}" for (x, y, z), (r, g, b) in zip(vertices, colours)]
    else:
        lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += [f"vn {x:.6f} {y:.6f} {z:.6f}" for x, y, z in normals]
    lines.append("usemtl DreamTime")
    if uv is None:
        lines += [f"f {a}//{a} {b}//{b} {c}//{c}" for a, b, c in faces + 1]
    else:
        lines += [f"vt {u:.6f} {1.0 - v:.6f}" for u, v in uv]
        lines += [f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}" for a, b, c in faces + 1]
    return "\n".join(lines) + "\n"


def _mtl_text(texture_name: str | None) -> str:
    lines = ["newmtl DreamTime", "Kd 1.000 1.000 1.000", "Ka 0.000 0.000 0.000", "Ks 0.040 0.040 0.040", "Ns 50", "illum 2"]
    if texture_name:
        lines.append(f"map_Kd {texture_name}")
    return "\n".join(lines) + "\n"
