"""The measurements of README's "Beyond one prompt" (analytic prior, CPU preset), run through the CLI.

    .venv/bin/python scripts/measure_beyond_one_prompt.py OUT [--only NAME ...]

NAMEs, in the order run: scratch (a blue torus, 700 steps), init (a blue torus from the analytic
torus mesh, strength 0.4, run right after scratch so both see the same load), cube (a red cube
from a sphere mesh, strength 1), refine (a blue torus, 300 steps, refined to 700; compared with
scratch), variations-tp and variations-uniform (a torus x 6 seeds). Each result is appended to
OUT/results.jsonl as it is measured (wall time, the load average before and after, quality,
mesh chi); a run folder that already has metrics.json is not run again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def analytic_mesh(shape: str, path: Path) -> Path:
    """The analytic prior's primitive (guidance/targets.py) as a colourless mesh: marching cubes of its SDF at 128³."""
    import mcubes
    import torch
    import trimesh

    from backend.guidance.targets import SHAPES

    axis = torch.linspace(-1, 1, 128)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    sdf = SHAPES[shape](grid).reshape(128, 128, 128).numpy()
    vertices, faces = mcubes.marching_cubes(-sdf, 0.0)
    trimesh.Trimesh(vertices / 127 * 2 - 1, faces).export(path)
    return path


def generate(*args: str) -> tuple[Path, float]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "backend", "generate", *args, "--quiet"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return Path(result.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def summary(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    quality, mesh = metrics.get("quality", {}), metrics.get("mesh", {})
    return {"psnr": round(quality.get("psnr", float("nan")), 2), "target": quality.get("best_target_name"), "euler": mesh.get("euler"),
            "largest_component_euler": mesh.get("largest_component_euler"), "steps_trained": len(metrics["step"]),
            "train_s": round(metrics.get("train_s", 0), 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    torus, sphere = analytic_mesh("torus", out / "torus.ply"), analytic_mesh("sphere", out / "sphere.ply")
    runs = {
        "scratch": ["a blue torus", "--run-dir", str(out / "scratch")],
        "init": ["a blue torus", "--init-mesh", str(torus), "--strength", "0.4", "--run-dir", str(out / "init")],
        "cube": ["a red cube", "--init-mesh", str(sphere), "--strength", "1.0", "--run-dir", str(out / "cube")],
        "refine-300": ["a blue torus", "--steps", "300", "--run-dir", str(out / "refine-300")],
        "refine": ["--resume", str(out / "refine-300"), "--steps", "700"],
        "variations-tp": ["a torus", "--variations", "6", "--schedule", "tp", "--run-dir", str(out / "variations-tp")],
        "variations-uniform": ["a torus", "--variations", "6", "--schedule", "uniform", "--run-dir", str(out / "variations-uniform")],
    }
    for name, flags in runs.items():
        if args.only and name not in args.only and not (name == "refine-300" and "refine" in args.only):
            continue
        load_before = os.getloadavg()[0]
        run_dir, wall = generate(*flags)
        record = {"name": name, "command": "python -m backend generate " + " ".join(flags), "run_dir": str(run_dir),
                  "wall_s": round(wall, 1), "load_before": round(load_before, 1), "load_after": round(os.getloadavg()[0], 1)}
        index = run_dir / "variations.json"
        record.update(json.loads(index.read_text()) if index.is_file() else summary(run_dir))
        records = record.pop("records", [])
        if records:
            record["per_seed"] = [[r["seed"], (r["quality"] or {}).get("best_target_name"), round((r["quality"] or {}).get("psnr", 0), 2)]
                                  for r in records]
        with open(out / "results.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
