"""The measurements of README's "Beyond one prompt" (analytic prior, CPU preset), run through the CLI.

    .venv/bin/python scripts/measure_beyond_one_prompt.py OUT [--only NAME ...]

NAMEs, in the order run: scratch (a blue torus, 700 steps), init (a blue torus from the analytic
torus mesh, strength 0.4, run right after scratch so both see the same load), cube (a red cube
from a sphere mesh, strength 1), refine (a blue torus, 300 steps, refined to 700; compared with
scratch), variations-tp and variations-uniform (a torus x 6 seeds). Each result is appended to
OUT/results.jsonl as it is measured (wall time, CPU time, the load average before and after,
quality, mesh chi). `--pairs K` measures scratch and init K times, alternating (scratch-2, init-2,
...), and prints each pair's init/scratch ratio of wall and of CPU time and their medians: on this
shared 2-core VM one pair's wall ratio moved from 0.41 to 0.58 between consecutive pairs. Two more
ratios take the fixed costs out (imports, set-up, export): `steps`, the seconds of init's training
steps over scratch's, and `steps_if_alike`, scratch's own steps from init's start step on over all
of them (what init's steps would cost at scratch's speed; above 0.40 when late steps cost more).

`--server` sends every run to one `python -m backend serve` over its stdio protocol instead, as the
Blender panel does (one backend for the session: torch imported once): a run's wall time is from
its `generate` request to its `done` event, its CPU time the server's own over that span. The
first request warms the server (a 20-step run, not recorded), as an artist's first generation of
a session would.
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


def generate(*args: str) -> tuple[Path, float, float]:
    """Run one `generate`; returns its run folder, wall seconds and CPU seconds (user + system, threads summed)."""
    import resource

    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "backend", "generate", *args, "--quiet"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return Path(result.stdout.strip().splitlines()[-1]), wall, cpu


class Server:
    """One `python -m backend serve` on stdio; run() sends a generate request and waits for its done event."""

    def __init__(self):
        import queue
        import threading

        self.proc = subprocess.Popen([sys.executable, "-m", "backend", "serve"], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.events.put(json.loads(line)) for line in self.proc.stdout], daemon=True).start()
        self.count = 0
        self.wait("ready")

    def wait(self, kind: str, run_id: str | None = None) -> dict:
        while True:
            event = self.events.get(timeout=3600)
            if event["type"] == "error" and event.get("id") in (run_id, None):
                raise RuntimeError(event["message"])
            if event["type"] == kind and (run_id is None or event.get("id") == run_id):
                return event

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def run(self, config: dict) -> tuple[Path, float, float]:
        self.count += 1
        run_id = f"m{self.count}"
        cpu_before, started = self.cpu_seconds(), time.perf_counter()
        self.proc.stdin.write(json.dumps({"type": "generate", "id": run_id, "config": config}) + "\n")
        self.proc.stdin.flush()
        done = self.wait("done", run_id)
        return Path(done["outputs"]["run_dir"]), time.perf_counter() - started, self.cpu_seconds() - cpu_before

    def close(self) -> None:
        self.proc.stdin.write(json.dumps({"type": "shutdown"}) + "\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)


def server_config(flags: list[str]) -> dict:
    """generate's flags, as the request's config (prompt, --init-mesh, --strength, --steps, --run-dir)."""
    config, rest = {"prompt": flags[0]}, iter(flags[1:])
    names = {"--init-mesh": ("init_mesh", str), "--strength": ("strength", float), "--steps": ("steps", int), "--run-dir": ("run_dir", str)}
    for flag in rest:
        name, kind = names[flag]
        config[name] = kind(next(rest))
    return config


def summary(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    quality, mesh = metrics.get("quality", {}), metrics.get("mesh", {})
    return {"psnr": round(quality.get("psnr", float("nan")), 2), "target": quality.get("best_target_name"), "euler": mesh.get("euler"),
            "largest_component_euler": mesh.get("largest_component_euler"), "steps_trained": len(metrics["step"]),
            "train_s": round(metrics.get("train_s", 0), 1)}


def step_seconds(run_dir: Path, first: int = 0) -> float:
    """Seconds a run's training steps took (metrics.json step_s), from step `first` on: no set-up, export or imports."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return sum(seconds for step, seconds in zip(metrics["step"], metrics["step_s"]) if step >= first)


def start_step(run_dir: Path) -> int:
    """The first step a run trained (a run from a shape starts part-way)."""
    return json.loads((run_dir / "metrics.json").read_text())["step"][0]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--pairs", type=int, default=1, help="scratch and init this many times, alternating")
    parser.add_argument("--server", action="store_true", help="every run through one warm `serve` process, as the panel runs them")
    args = parser.parse_args()
    if args.server and args.only and not set(args.only) <= {"scratch", "init", "cube"}:
        parser.error("--server measures scratch, init and cube (refine and variations are CLI flags)")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    torus, sphere = analytic_mesh("torus", out / "torus.ply"), analytic_mesh("sphere", out / "sphere.ply")

    def scratch(name: str) -> list[str]:
        return ["a blue torus", "--run-dir", str(out / name)]

    def init(name: str) -> list[str]:
        return ["a blue torus", "--init-mesh", str(torus), "--strength", "0.4", "--run-dir", str(out / name)]

    runs = {
        "scratch": scratch("scratch"),
        "init": init("init"),
        **{f"{kind}-{k}": flags(f"{kind}-{k}") for k in range(2, args.pairs + 1) for kind, flags in (("scratch", scratch), ("init", init))},
        "cube": ["a red cube", "--init-mesh", str(sphere), "--strength", "1.0", "--run-dir", str(out / "cube")],
        "refine-300": ["a blue torus", "--steps", "300", "--run-dir", str(out / "refine-300")],
        "refine": ["--resume", str(out / "refine-300"), "--steps", "700"],
        "variations-tp": ["a torus", "--variations", "6", "--schedule", "tp", "--run-dir", str(out / "variations-tp")],
        "variations-uniform": ["a torus", "--variations", "6", "--schedule", "uniform", "--run-dir", str(out / "variations-uniform")],
    }
    server = Server() if args.server else None
    if server:
        server.run({"prompt": "a blue torus", "steps": 20, "run_dir": str(out / "warm-up")})
    walls: dict[str, float] = {}
    cpus: dict[str, float] = {}
    for name, flags in runs.items():
        kind = name.split("-")[0] if name.rsplit("-", 1)[-1].isdigit() else name
        if args.only and kind not in args.only and not (name == "refine-300" and "refine" in args.only):
            continue
        load_before = os.getloadavg()[0]
        request = server_config(flags) if server else None
        run_dir, wall, cpu = server.run(request) if server else generate(*flags)
        command = f"serve: generate {json.dumps(request)}" if server else "python -m backend generate " + " ".join(flags)
        record = {"name": name, "command": command, "run_dir": str(run_dir),
                  "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_before": round(load_before, 1),
                  "load_after": round(os.getloadavg()[0], 1)}
        index = run_dir / "variations.json"
        record.update(json.loads(index.read_text()) if index.is_file() else summary(run_dir))
        records = record.pop("records", [])
        if records:
            record["per_seed"] = [[r["seed"], (r["quality"] or {}).get("best_target_name"), round((r["quality"] or {}).get("psnr", 0), 2)]
                                  for r in records]
        with open(out / "results.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
        walls[name], cpus[name] = wall, cpu
    if server:
        server.close()
    pairs = [k for k in ["", *(f"-{k}" for k in range(2, args.pairs + 1))] if f"init{k}" in walls and f"scratch{k}" in walls]
    if pairs:
        ratios = {"wall": [walls[f"init{k}"] / walls[f"scratch{k}"] for k in pairs],
                  "cpu": [cpus[f"init{k}"] / cpus[f"scratch{k}"] for k in pairs],
                  "steps": [step_seconds(out / f"init{k}") / step_seconds(out / f"scratch{k}") for k in pairs],
                  "steps_if_alike": [step_seconds(out / f"scratch{k}", start_step(out / f"init{k}")) / step_seconds(out / f"scratch{k}")
                                     for k in pairs]}
        print(json.dumps({f"init_over_scratch_{kind}": {"pairs": [round(r, 3) for r in values],
                                                         "median": round(sorted(values)[len(values) // 2], 3)}
                          for kind, values in ratios.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
