"""`python -m backend bench prompts`: does every prompt give a mesh? (issue 11)

Every analytic shape, without a colour ("a torus": the shape in all 8 colour modes) and in two
colours, is one ordinary generation (the device's preset, one seed). Each row says whether a mesh
came out, the Euler characteristic of its largest component against the shape's, that component's
mean vertex colour and the palette colour nearest to it (for a colourless prompt: the mode it
picked), the evaluation ring's PSNR against the best target, and the run's seconds. Results go to
`prompts.json` and `prompts.md` under --out; each run folder keeps `bench_run.json`, and a rerun
with the same config reuses it. `--jobs N` runs N generations at a time, one torch thread each
(their seconds then share the CPU; CPU seconds are reported beside them).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..config import GenerationConfig, preset_for
from ..guidance.targets import COLORS, SHAPES
from ..run_folder import atomic_write_text

SHAPE_EULER = {"sphere": 2, "cube": 2, "torus": 0, "cone": 2, "cylinder": 2, "capsule": 2}  # χ of each analytic shape's surface
# Two colours per shape, every palette colour at least once (black and white included: the hardest
# against a random background).
SHAPE_COLOURS = {
    "sphere": ("blue", "orange"),
    "cube": ("yellow", "black"),
    "torus": ("red", "purple"),
    "cone": ("green", "white"),
    "cylinder": ("red", "blue"),
    "capsule": ("yellow", "green"),
}


def prompt_rows(shapes: list[str]) -> list[tuple[str, str, str | None]]:
    """(prompt, shape, asked colour or None) for every shape: colourless first, then its two colours."""
    rows = []
    for shape in shapes:
        rows.append((f"a {shape}", shape, None))
        rows += [(f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}", shape, colour) for colour in SHAPE_COLOURS[shape]]
    return rows


def nearest_colour(rgb: list[float]) -> str:
    names = list(COLORS)
    distances = [float(np.linalg.norm(np.array(COLORS[name]) - np.array(rgb))) for name in names]
    return names[int(np.argmin(distances))]


def run_prompt(prompt: str, shape: str, colour: str | None, base: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """One generation and its row; reuses run_dir/bench_run.json made with the same config."""
    config = GenerationConfig.from_dict({**base, "prompt": prompt, "run_dir": str(run_dir)}).validate()
    saved = run_dir / "bench_run.json"
    if saved.exists():
        try:
            previous = json.loads(saved.read_text(encoding="utf-8"))
            if previous.get("config") == json.loads(config.to_json()):
                return {**previous, "reused": True}
        except (OSError, ValueError):
            pass  # unreadable: run again
    from ..trainer import Trainer

    tick, cpu_tick = time.perf_counter(), time.process_time()
    trainer = Trainer(config, run_dir)
    trainer.run()
    seconds, cpu_seconds = time.perf_counter() - tick, time.process_time() - cpu_tick
    metrics = trainer.metrics
    mesh = metrics.get("mesh", {})
    quality = metrics.get("quality", {})
    mean_rgb = mesh.get("largest_component_mean_color")
    picked = nearest_colour(mean_rgb) if mean_rgb else None
    row = {
        "prompt": prompt,
        "shape": shape,
        "asked_colour": colour,
        "mesh": bool(mesh.get("n_faces")),
        "faces": mesh.get("n_faces", 0),
        "euler_largest": mesh.get("largest_component_euler"),
        "euler_target": SHAPE_EULER[shape],
        "euler_ok": mesh.get("largest_component_euler") == SHAPE_EULER[shape],
        "mean_rgb": mean_rgb,
        "nearest_colour": picked,
        "colour_ok": None if colour is None else picked == colour,
        "psnr": quality.get("psnr"),
        "best_target": quality.get("best_target_name"),
        "sdf_switch": metrics.get("sdf_switch", []),
        "chamfer_rel": mesh.get("chamfer_rel"),
        "seconds": round(seconds, 1),
        "cpu_s": round(cpu_seconds, 1),  # CPU time of all threads: less sensitive than seconds to a shared machine
        "train_s": round(metrics.get("train_s", 0.0), 1),
        "config": json.loads(config.to_json()),
        "run_dir": str(run_dir),
    }
    atomic_write_text(saved, json.dumps(row, indent=1))
    return row


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    asked = [r for r in rows if r["asked_colour"] is not None]
    return {
        "prompts": len(rows),
        "meshes": sum(r["mesh"] for r in rows),
        "euler_ok": sum(bool(r["euler_ok"]) for r in rows),
        "colour_asked": len(asked),
        "colour_ok": sum(bool(r["colour_ok"]) for r in asked),
        "max_seconds": max((r["seconds"] for r in rows), default=0.0),
    }


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [
        f"{s['prompts']} prompts, seed {result['seed']}: {s['meshes']}/{s['prompts']} meshes, χ right {s['euler_ok']}/{s['prompts']}, "
        f"colour right {s['colour_ok']}/{s['colour_asked']}; {result['wall_s'] / 60:.1f} min ({result['jobs']} at a time), "
        f"load average {result['load_before']} before, "
        f"{result['load_after']} after",
        "",
        "| prompt | mesh | χ (largest / target) | colour: mean RGB of the largest component | nearest palette colour "
        "| PSNR (dB), best target | Chamfer / diag | seconds (CPU s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        rgb = "—" if r["mean_rgb"] is None else "(" + ", ".join(f"{c:.2f}" for c in r["mean_rgb"]) + ")"
        if r["nearest_colour"] is None:
            colour = "—"
        elif r["asked_colour"] is None:
            colour = f"{r['nearest_colour']} (picked)"
        else:
            colour = f"{r['nearest_colour']} ({'right' if r['colour_ok'] else 'WRONG'})"
        euler = "—" if r["euler_largest"] is None else f"{r['euler_largest']} / {r['euler_target']}" + ("" if r["euler_ok"] else " (WRONG)")
        psnr = "—" if r["psnr"] is None else f"{r['psnr']:.1f}, {r['best_target']}"
        chamfer = "—" if r.get("chamfer_rel") is None else f"{r['chamfer_rel']:.4f}"
        seconds = f"{r['seconds']:.0f} ({r['cpu_s']:.0f})"
        lines.append(f"| {r['prompt']} | {'yes' if r['mesh'] else 'NO'} | {euler} | {rgb} | {colour} | {psnr} | {chamfer} | {seconds} |")
    return "\n".join(lines) + "\n"


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE config overrides; VALUE is read as JSON when it can be (numbers, lists)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set needs KEY=VALUE, got {pair!r}")
        try:
            overrides[key.strip()] = json.loads(value)
        except ValueError:
            overrides[key.strip()] = value
    return overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for prompts.json, prompts.md and the run folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated subset of the analytic shapes")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--jobs", type=int, default=1, help="generations at a time (one torch thread each when > 1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override on top of the device's preset (repeatable)")


def quiet_worker() -> None:
    """A pool worker: one torch thread, warnings only."""
    import torch

    torch.set_num_threads(1)
    logging.getLogger("dreamtime").setLevel(logging.WARNING)


def run_cli(args: argparse.Namespace) -> int:
    from ..run_setup import resolve_device

    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPE_EULER]
    if unknown or not shapes:
        raise ValueError(f"--shapes: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(SHAPE_EULER)}")
    device = resolve_device(args.device)
    base = {**preset_for(device.type), **parse_sets(args.set), "seed": args.seed, "device": args.device, "guidance": "analytic"}
    GenerationConfig.from_dict({**base, "prompt": "a torus"}).validate()  # a bad --set fails before any run
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_before = [round(v, 2) for v in os.getloadavg()]
    started = time.perf_counter()
    jobs = [(prompt, shape, colour, base, out / "runs" / f"{index:02d}-{prompt.replace(' ', '-')}")
            for index, (prompt, shape, colour) in enumerate(prompt_rows(shapes))]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=quiet_worker) as pool:
            rows = list(pool.map(run_prompt, *zip(*jobs)))
    else:
        rows = [run_prompt(*job) for job in jobs]
    for r in rows:
        psnr = "—" if r["psnr"] is None else f"{r['psnr']:.1f} dB"
        print(f"{r['prompt']}: mesh {'yes' if r['mesh'] else 'NO'}, χ {r['euler_largest']}, colour {r['nearest_colour']}, "
              f"{psnr}, {r['seconds']:.0f} s")
    result = {
        "seed": args.seed,
        "overrides": parse_sets(args.set),
        "jobs": args.jobs,
        "cpu_count": os.cpu_count(),
        "device": device.type,
        "rows": rows,
        "summary": summary(rows),
        "wall_s": round(time.perf_counter() - started, 1),
        "load_before": load_before,
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d"),
    }
    atomic_write_text(out / "prompts.json", json.dumps(result, indent=1))
    atomic_write_text(out / "prompts.md", markdown(result))
    print(markdown(result))
    print(out / "prompts.json")
    return 0
