"""`python -m backend asset-eval RUN_DIR`: the asset as the artist sees it, measured (analytic prior).

The run's mesh.glb and, as the baseline, the mesh this project exported before assets existed
(marching cubes of the same checkpoint with vertex colours, export_mesh) are imported into
headless Blender exactly as the panel imports them and rendered from the evaluation ring
(dreamtime_blender/render_views.py, in a subprocess: the backend never imports bpy). Albedo only:
what feeds the Principled BSDF's Base Color, through an Emission shader. metrics.json gains `asset`:

  psnr                  the asset's albedo renders against the target's (reference.py: its surface, antialiased)
  vertex_color_psnr     the same for the vertex-colour baseline
  same_faces_vertex_color_psnr  the same for the asset's own decimated mesh with per-vertex colours
                        (what `--export ply` writes): texture against vertex colours at one face budget
  bake_psnr             per pixel centre inside the silhouette: the colour Blender shows against the
                        field's own albedo at the surface point that pixel sees (Blender's position pass):
                        what the bake and Blender's texture lookup lose, geometry aside
  vertex_color_bake_psnr, same_faces_vertex_color_bake_psnr  the same for the baselines
  psnr_volume_reference / vertex_color_psnr_volume_reference: against the trainer's volume renders of
                        the target (their silhouettes have a halo a mesh lacks; shown for comparison)

Not part of `generate` (the renders take about a minute on 2 cores, and bpy may be missing where
the backend runs); run it on a finished run folder from a checkout that has bpy in its venv.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..cameras import Cameras, evaluation_ring, fixed_light
from ..config import GenerationConfig
from ..metrics import psnr
from ..renderer import RenderSettings
from ..run_folder import atomic_path, atomic_write_text
from . import decimate_coloured, numpy_albedo
from .reference import surface_albedo

REPO = Path(__file__).resolve().parents[2]  # the checkout: backend/ beside dreamtime_blender/
PASSES = ("albedo", "albedo_point", "position")
INSIDE = 0.999  # alpha above which a pixel centre sees the surface only


class EvaluationError(RuntimeError):
    pass


def blender_python() -> str | None:
    """A Python that imports bpy: DREAMTIME_BLENDER_PYTHON, else this one if it has bpy."""
    import importlib.util

    return os.environ.get("DREAMTIME_BLENDER_PYTHON") or (sys.executable if importlib.util.find_spec("bpy") else None)


def render_in_blender(meshes: list[tuple[Path, str]], cameras: Cameras, resolution: int, passes: tuple[str, ...], out: Path,
                      samples: int = 32, python: str | None = None, timeout: float = 900) -> dict[str, dict[str, np.ndarray]]:
    """{name: {pass: (V, R, R, 4) float32}} of each mesh imported and rendered in headless Blender."""
    python = python or blender_python()
    if python is None:
        raise EvaluationError("no Python with bpy (Blender as a module): pip install bpy, or set DREAMTIME_BLENDER_PYTHON")
    if not (REPO / "dreamtime_blender" / "render_views.py").is_file():
        raise EvaluationError(f"asset-eval needs a checkout with dreamtime_blender/ beside backend/ ({REPO})")
    job = {"meshes": [{"path": str(path), "name": name} for path, name in meshes],
           "cameras": cameras.c2w.cpu().reshape(len(cameras), 16).tolist(),
           "fov_y": float(cameras.fov_y[0]), "resolution": resolution, "samples": samples, "passes": list(passes), "out": str(out),
           "threads": os.cpu_count() or 0}
    (out / "job.json").write_text(json.dumps(job))
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from dreamtime_blender import render_views; "
            f"render_views.main({str(out / 'job.json')!r})")
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=out)
    if result.returncode != 0:
        raise EvaluationError(f"Blender's render failed (exit {result.returncode}): {result.stderr[-2000:] or result.stdout[-2000:]}")
    return {name: dict(np.load(out / f"{name}.npz")) for _, name in meshes if (out / f"{name}.npz").exists()}


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def over_white(rgba: np.ndarray) -> np.ndarray:
    """Blender's premultiplied linear RGBA (…, 4) as sRGB over a white background (…, 3)."""
    alpha = rgba[..., 3:4]
    straight = rgba[..., :3] / np.maximum(alpha, 1e-6)
    return linear_to_srgb(straight) * alpha + (1.0 - alpha)


def bake_fidelity(point: np.ndarray, position: np.ndarray, albedo) -> tuple[float, int]:
    """PSNR of the colours Blender shows at pixel centres inside the silhouette against the field's
    albedo at the surface points they see; and how many pixels that is."""
    inside = (point[..., 3] > INSIDE) & (position[..., 3] > INSIDE)  # (V, R, R)
    shown = linear_to_srgb(point[inside][:, :3])  # (N, 3)
    points = position[inside][:, :3] * 2.0 - 1.0  # decoded from p / 2 + 1/2
    return psnr(((shown - np.clip(albedo(points), 0, 1)) ** 2).mean()), int(inside.sum())


def evaluate_run(run_dir: str | Path, samples: int = 32, supersample: int = 4, python: str | None = None) -> dict:
    """Measure RUN_DIR's asset; adds `asset` to its metrics.json and writes asset_ring.png. Returns `asset`."""
    from ..mesh import export_mesh
    from ..trainer import Trainer

    started = time.perf_counter()
    run_dir = Path(run_dir)
    config = GenerationConfig.from_dict(json.loads((run_dir / "config.json").read_text(encoding="utf-8"))).validate()
    glb = run_dir / "mesh.glb"
    if not glb.is_file():
        raise EvaluationError(f"no mesh.glb in {run_dir}: the run made no mesh")
    trainer = Trainer(config, run_dir)
    trainer.setup(resume=True)  # the field, guidance and cameras of the checkpoint; no training
    trainer.close()
    if trainer.guidance_kind != "analytic":
        raise EvaluationError("asset-eval compares with the analytic prior's targets; this run used Stable Diffusion")
    ring, resolution = evaluation_ring(), config.preview_resolution
    albedo = numpy_albedo(trainer.field.albedo, trainer.device)
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="dreamtime-asset-") as tmp:
        tmp = Path(tmp)
        tick = time.perf_counter()
        baseline = trainer.artifacts.mesh_of_field()  # the vertex-colour mesh of the same checkpoint, not decimated
        export_mesh(baseline, tmp, ("glb",), stem="vertex_colors")
        same_faces = decimate_coloured(baseline, albedo, config.mesh_faces)
        export_mesh(same_faces, tmp, ("glb",), stem="same_faces")  # decimated as the asset was, colours per vertex
        seconds["baseline_mesh"] = time.perf_counter() - tick
        tick = time.perf_counter()
        meshes = [(glb, "asset"), (tmp / "vertex_colors.glb", "vertex_colors"), (tmp / "same_faces.glb", "same_faces")]
        renders = render_in_blender(meshes, ring, resolution, PASSES, tmp, samples, python)
        seconds["blender"] = time.perf_counter() - tick
    tick = time.perf_counter()
    targets = trainer.guidance.targets
    references = torch.stack([surface_albedo(target, ring, resolution, supersample) for target in targets.targets])
    references = references.numpy()  # (K, V, R, R, 3)
    settings = RenderSettings("albedo", fixed_light(ring), torch.ones(len(ring), 3))
    volumes = targets.render(ring, resolution, config.samples_per_ray, settings, config.scene_radius).numpy()  # (K, V, R, R, 3)
    seconds["references"] = time.perf_counter() - tick
    shown = {name: over_white(renders[name]["albedo"]) for name in renders}  # (V, R, R, 3) sRGB over white
    best = int(np.argmin([((reference - shown["asset"]) ** 2).mean() for reference in references]))
    asset_bake, inside = bake_fidelity(renders["asset"]["albedo_point"], renders["asset"]["position"], albedo)
    baseline_bake, _ = bake_fidelity(renders["vertex_colors"]["albedo_point"], renders["vertex_colors"]["position"], albedo)
    same_faces_bake, _ = bake_fidelity(renders["same_faces"]["albedo_point"], renders["same_faces"]["position"], albedo)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    result = {
        "psnr": round(psnr(((shown["asset"] - references[best]) ** 2).mean()), 2),
        "vertex_color_psnr": round(psnr(((shown["vertex_colors"] - references[best]) ** 2).mean()), 2),
        "same_faces_vertex_color_psnr": round(psnr(((shown["same_faces"] - references[best]) ** 2).mean()), 2),
        "bake_psnr": round(asset_bake, 2), "vertex_color_bake_psnr": round(baseline_bake, 2),
        "same_faces_vertex_color_bake_psnr": round(same_faces_bake, 2), "bake_pixels": inside,
        "psnr_volume_reference": round(psnr(((shown["asset"] - volumes[best]) ** 2).mean()), 2),
        "vertex_color_psnr_volume_reference": round(psnr(((shown["vertex_colors"] - volumes[best]) ** 2).mean()), 2),
        "target": targets.names[best], "faces": metrics.get("mesh", {}).get("n_faces"), "vertex_color_faces": len(baseline.faces),
        "texture_size": config.texture_size, "views": len(ring), "resolution": resolution, "samples": samples, "supersample": supersample,
        "measured": _dt.date.today().isoformat(), "seconds": {name: round(value, 2) for name, value in seconds.items()},
    }
    result["gain_db"] = round(result["psnr"] - result["vertex_color_psnr"], 2)
    result["same_faces_gain_db"] = round(result["psnr"] - result["same_faces_vertex_color_psnr"], 2)
    _write_ring(run_dir / "asset_ring.png", references[best], shown["asset"], shown["vertex_colors"], shown["same_faces"])
    result["seconds"]["total"] = round(time.perf_counter() - started, 2)
    metrics["asset"] = result
    atomic_write_text(metrics_path, json.dumps(metrics, indent=1, allow_nan=True))
    return result


def _write_ring(path: Path, *rows: np.ndarray) -> None:
    """Rows (V, R, R, 3) in [0, 1] stacked: target, asset, vertex colours, vertex colours at the asset's faces; views across."""
    from PIL import Image

    strip = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    with atomic_path(path) as tmp:
        Image.fromarray((np.clip(strip, 0, 1) * 255 + 0.5).astype(np.uint8)).save(tmp, format="PNG")


def run_cli(args) -> int:
    try:
        result = evaluate_run(args.run_dir, samples=args.samples, python=args.blender_python)
    except (EvaluationError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1))
    return 0



