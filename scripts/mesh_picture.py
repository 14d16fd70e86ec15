"""A run's mesh.glb as Blender shows it (for the README): imported as the panel imports it, the
textured Principled BSDF under a sun and a grey sky, rendered headless with Cycles.

    PYTHONPATH=. .venv/bin/python scripts/mesh_picture.py RUN_DIR OUT.png [--size 384] [--samples 64]
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from backend.asset.evaluate import EvaluationError, render_in_blender
from backend.cameras import make_cameras


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("out")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--elevation", type=float, default=30.0)
    parser.add_argument("--azimuth", type=float, default=-35.0)
    args = parser.parse_args()
    glb = Path(args.run_dir) / "mesh.glb"
    if not glb.is_file():
        why = "not a folder" if not Path(args.run_dir).is_dir() else "the run ended without a mesh (see its log.txt)" \
            if (Path(args.run_dir) / "config.json").is_file() else "not a run folder"
        print(f"error: no {glb}: {why}", file=sys.stderr)
        return 1
    camera = make_cameras(torch.tensor([args.elevation]), torch.tensor([args.azimuth]), torch.tensor([2.2]), torch.tensor([40.0]))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            render_in_blender([(glb, "mesh")], camera, args.size, ("beauty",), Path(tmp), args.samples)
        except EvaluationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        shutil.copyfile(Path(tmp) / "mesh_beauty_0.png", args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
