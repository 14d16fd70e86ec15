"""`python -m backend bench robustness`: does the quick suite's finding (TP-SDS loses to uniform on
the analytic prior) hold beyond its one configuration? (issue 15)

The quick suite runs 300 steps, the learning rate decaying to 0.1x, W_d on, 3 seeds. This study
moves one factor at a time away from that baseline, and crosses the two factors most likely to
interact with the schedule (the learning-rate decay and W_d) with a longer budget:

  step budget       300 / 700 (the CPU generation default) / 1000 / 3000
  lr decay          lr_final_ratio 0.1 (the preset's exponential decay) vs 1.0 (constant)
  W_d               on vs off (tp only: uniform and linear never read it)
  number of modes   1 / 2 / 4 / 8 colour modes of one torus ("a red torus", "a red torus or a
                    blue torus", four colours, "a torus")

A partial factorial, not a full one (4 x 2 x 2 x 4 cells at 4 seeds would take ~20 hours on 2
cores): `CELLS` lists what runs, each tp vs uniform (and linear where a run costs 300 steps) with
4 seeds on the suite's metrics (backend/bench/metrics.py). Every cell is one bench (its own
bench.json and plots in DIR/cells/NAME/); all cells share one run store (DIR/runs/), where a
run's folder is named by a digest of its config, so a run that two cells share (the uniform runs
of a W_d-off cell are the baseline's; the 8-mode torus is the baseline's torus) is trained once,
and an interrupted study resumes where it stopped. `bench robustness --out DIR --cells NAME`
reproduces one cell; robustness_report.py gathers the cells into robustness.json, the
README table and the plot.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .suite import CONE_UP_OR_DOWN, SuiteEntry, targets_path

SEEDS = 4
# Idle 2-core CPU, the quick suite: 36 runs x 300 steps in 12.2 min with 2 jobs = 0.136 core-s per
# step, evaluation and mesh included (README "Does TP-SDS help?"). Estimates scale it by steps.
# Still so after issue 11 (each render judged over b and 1 - b, the asset baked at the end): one
# 300-step run took 248 s of CPU against 244 s on the code before it, side by side, 2026-12-02.
CORE_SECONDS_PER_STEP = 12.2 * 60 * 2 / (36 * 300)

ENTRIES: dict[str, SuiteEntry] = {
    "red_torus": SuiteEntry("red_torus", "control", "a red torus"),
    "torus2": SuiteEntry("torus2", "colour modes", "a red torus or a blue torus"),
    "torus4": SuiteEntry("torus4", "colour modes", "a red torus, a blue torus, a green torus or a yellow torus"),
    "torus": SuiteEntry("torus", "colour modes", "a torus"),  # 8 colour modes, as in the quick suite
    "cone_up_down": CONE_UP_OR_DOWN,
}


@dataclass(frozen=True)
class Cell:
    """One configuration of the study: a bench of `schedules` x `entries` x seeds."""

    name: str
    varies: str  # what this cell changes from the baseline, for the table
    steps: int
    entries: tuple[str, ...]
    schedules: tuple[str, ...] = ("tp", "uniform")
    lr_final_ratio: float = 0.1
    use_w_d: bool = True
    in_study: bool = True  # False: defined, but run only when named with --cells


BASE = ("torus", "cone_up_down")  # one colour-mode and one geometry-mode set of the quick suite
LINEAR = ("tp", "uniform", "linear")
CELLS: tuple[Cell, ...] = (
    Cell("s300", "baseline: 300 steps, lr decay to 0.1x, W_d on", 300, BASE, LINEAR),
    Cell("s700", "budget 700", 700, BASE),
    Cell("s1000", "budget 1000", 1000, BASE),
    Cell("s3000", "budget 3000", 3000, BASE),
    Cell("s300_flat", "constant lr", 300, BASE, LINEAR, lr_final_ratio=1.0),
    Cell("s1000_flat", "constant lr, budget 1000", 1000, BASE, lr_final_ratio=1.0),
    Cell("s300_nowd", "W_d off", 300, BASE, LINEAR, use_w_d=False),
    Cell("s1000_nowd", "W_d off, budget 1000", 1000, BASE, use_w_d=False),
    Cell("modes1", "1 mode (control)", 300, ("red_torus",), LINEAR),
    Cell("modes2", "2 colour modes", 300, ("torus2",), LINEAR),
    Cell("modes4", "4 colour modes", 300, ("torus4",), LINEAR),
    Cell("modes8", "8 colour modes", 300, ("torus",), LINEAR),  # the baseline's torus runs: free
    # Defined for a longer study, not in the default one (~9, 9 and 27 min on an idle machine):
    Cell("modes2_s1000", "2 colour modes, budget 1000", 1000, ("torus2",), in_study=False),
    Cell("modes4_s1000", "4 colour modes, budget 1000", 1000, ("torus4",), in_study=False),
    Cell("s3000_flat", "constant lr, budget 3000 (torus only)", 3000, ("torus",), lr_final_ratio=1.0, in_study=False),
    # Tests: seconds, not part of any study.
    Cell("smoke", "tests only", 4, ("torus2",), in_study=False),
)
CELLS_BY_NAME = {cell.name: cell for cell in CELLS}


def variants(cell: Cell):
    """tp (W_d as the cell says), uniform and linear as themselves: only tp reads use_w_d."""
    from .convergence import Variant

    return [Variant(s, {"schedule": s, **({"use_w_d": False} if s == "tp" and not cell.use_w_d else {})}) for s in cell.schedules]


def base_config(cell: Cell, overrides: dict[str, Any]) -> dict[str, Any]:
    """The CPU preset, the bench preset (as `bench convergence` on the analytic prior), the cell."""
    from ..config import preset_for
    from .convergence import BENCH_PRESET

    return {**preset_for("cpu"), "device": "cpu", "guidance": "analytic", **BENCH_PRESET,
            "steps": cell.steps, "lr_final_ratio": cell.lr_final_ratio, **overrides}


def eval_every(cell: Cell) -> int:
    return max(1, cell.steps // 12)


def command(cell: Cell, out: str = "bench_robustness") -> str:
    return f".venv/bin/python -m backend bench robustness --out {out} --cells {cell.name}"


def plan(cells: list[Cell], out: Path, seeds: int, overrides: dict[str, Any], jobs: int = 2) -> list[dict[str, Any]]:
    """Per cell: its runs, the runs not trained by an earlier cell of the list (nor already in the
    store), and the estimated wall time of those on an idle machine with `jobs` runs at a time."""
    from .convergence import bench_config, config_digest

    seen: set[str] = set()
    rows = []
    for cell in cells:
        base, runs, new = base_config(cell, overrides), 0, 0
        for name in cell.entries:
            entry = ENTRIES[name]
            for variant in variants(cell):
                for seed in range(seeds):
                    config = bench_config(base, entry, targets_path(entry, out / "targets"), seed, variant, out / "x")
                    folder = out / "runs" / entry.name / f"{variant.label}-{config_digest(config)}" / f"seed{seed}"
                    runs += 1
                    if str(folder) not in seen and not (folder / "bench_run.json").exists():
                        new += 1
                    seen.add(str(folder))
        minutes = new * cell.steps * CORE_SECONDS_PER_STEP / max(1, min(jobs, os.cpu_count() or 1)) / 60
        rows.append({"cell": cell.name, "varies": cell.varies, "runs": runs, "new_runs": new, "estimated_min": round(minutes, 1),
                     "command": command(cell, str(out))})
    return rows


def run_cell(cell: Cell, out: Path, seeds: int, overrides: dict[str, Any], jobs: int, progress: bool = True) -> dict[str, Any]:
    """One cell as a bench in out/cells/NAME, its runs in the shared store `out`. Returns bench.json's dict."""
    from .convergence import run_bench

    entries = tuple(ENTRIES[name] for name in cell.entries)
    bench = run_bench(variants(cell), entries, seeds, out / "cells" / cell.name, base_config(cell, overrides), eval_every(cell),
                      jobs, suite=f"robustness:{cell.name}", progress=progress, store=out)
    bench["cell"] = asdict(cell)
    from ..run_folder import atomic_write_text

    atomic_write_text(out / "cells" / cell.name / "bench.json", json.dumps(bench, indent=1))
    return bench


# ---------------------------------------------------------------------- CLI
def add_arguments(parser) -> None:
    parser.add_argument("--out", default="bench_robustness", help="study folder: cells/, runs/, robustness.json, .md, .png")
    parser.add_argument("--cells", default="", help="comma-separated cell names (default: every cell of the study); see --list")
    parser.add_argument("--list", action="store_true", help="print the cells, their runs and estimated minutes, and exit")
    parser.add_argument("--report", action="store_true", help="only gather the cells already in --out into the table and plot")
    parser.add_argument("--seeds", type=int, default=SEEDS, help=f"seeds per prompt and schedule (default {SEEDS})")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel processes")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="any config field for every run (tests)")
    parser.add_argument("--quiet", action="store_true")


def selected_cells(names: str) -> list[Cell]:
    if not names.strip():
        return [cell for cell in CELLS if cell.in_study]
    unknown = [n for n in names.split(",") if n.strip() and n.strip() not in CELLS_BY_NAME]
    if unknown:
        raise ValueError(f"--cells: unknown cell {unknown[0]!r}; known: {', '.join(CELLS_BY_NAME)}")
    return [CELLS_BY_NAME[n.strip()] for n in names.split(",") if n.strip()]


def run_cli(args) -> int:
    from . import robustness_report
    from .convergence import parse_overrides

    out = Path(args.out)
    cells = selected_cells(args.cells)
    overrides = parse_overrides(args.set)
    if args.list:
        rows = plan(cells, out, args.seeds, overrides, args.jobs)
        for row in rows:
            print(f"{row['cell']:14} {row['runs']:3} runs ({row['new_runs']:3} to train) ~{row['estimated_min']:6.1f} min  {row['varies']}")
        print(f"total ~{sum(r['estimated_min'] for r in rows):.0f} min on an idle 2-core CPU ({args.jobs} jobs)")
        return 0
    started = time.perf_counter()
    if not args.report:
        for cell in cells:
            run_cell(cell, out, args.seeds, overrides, args.jobs, progress=not args.quiet)
    study = robustness_report.write(out, [cell.name for cell in CELLS], wall_s=time.perf_counter() - started)
    print(json.dumps({"robustness": str(out / "robustness.json"), "cells": [c["cell"] for c in study["cells"]],
                      "quality_db_tp_minus_uniform": {c["cell"]: c["quality_db_tp_minus_uniform"] for c in study["cells"]}}, indent=1))
    return 0
