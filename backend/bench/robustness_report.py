"""The robustness study's cells gathered: robustness.json, the README table and the plot (issue 15).

Per cell (backend/bench/robustness.py), from its bench.json:
  quality        mean final PSNR (dB) of tp, uniform (and linear), over prompts and seeds;
  difference     tp - uniform, and the paired differences behind it: the same prompt and seed
                 under both schedules share initialization, cameras and noise, so each pair is
                 one comparison; "tp wins" counts the pairs where tp's PSNR is higher;
  steps ratio    steps-to-quality of tp over uniform at the 50 % bar (backend/bench/metrics.py;
                 the bars are the cell's own, over all its schedules' runs);
  diversity      distinct final targets across seeds, mean over the cell's multi-modal prompts
                 (none for the 1-mode control).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from ..run_folder import atomic_path, atomic_write_text


def cell_row(bench: dict[str, Any]) -> dict[str, Any]:
    """One table row's numbers from a cell's bench.json."""
    schedules, ratios = bench["schedules"], bench.get("ratios", {})
    pairs, per_prompt = [], {}
    for entry, tp in schedules.get("tp", {}).get("per_prompt", {}).items():
        uniform_seeds = schedules.get("uniform", {}).get("per_prompt", {}).get(entry, {}).get("per_seed", [])
        uniform = {s["seed"]: s["quality_db"] for s in uniform_seeds}
        mine = [round(s["quality_db"] - uniform[s["seed"]], 3) for s in tp["per_seed"] if s["seed"] in uniform]
        pairs += mine
        per_prompt[entry] = round(statistics.fmean(mine), 2) if mine else None
    quality = {label: s.get("quality_db") for label, s in schedules.items()}
    diversity = {label: s.get("diversity_distinct") for label, s in schedules.items()}
    cell = bench.get("cell", {})
    return {
        "cell": cell.get("name", bench.get("suite", "")),
        "varies": cell.get("varies", ""),
        "steps": bench["steps"],
        "lr_final_ratio": cell.get("lr_final_ratio"),
        "use_w_d": cell.get("use_w_d"),
        "entries": [e["name"] for e in bench["entries"]],
        "seeds": bench["seeds"],
        "quality_db": quality,
        "quality_db_tp_minus_uniform": ratios.get("quality_db_tp_minus_uniform"),
        "paired_differences_db": pairs,
        "tp_wins": sum(d > 0 for d in pairs),
        "pairs": len(pairs),
        "per_prompt_difference_db": per_prompt,
        "steps_to_quality_tp_over_uniform": ratios.get("steps_to_quality_tp_over_uniform"),
        "steps_to_quality_50": {label: s["steps_to_quality"][1] for label, s in schedules.items()},
        "diversity_distinct": diversity,
        "diversity_tp_over_uniform": ratios.get("diversity_tp_over_uniform"),
        "runs": len(bench["runs"]),
        "runs_reused": bench.get("runs_reused"),
        "wall_s": bench.get("wall_s"),
    }


def gather(out: Path, cell_names: list[str]) -> list[dict[str, Any]]:
    """Rows of every cell of `cell_names` (the study's order) with a bench.json under out/cells."""
    rows = []
    for name in cell_names:
        path = out / "cells" / name / "bench.json"
        if path.exists():
            rows.append(cell_row(json.loads(path.read_text(encoding="utf-8"))))
    return rows


def _fmt(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        ("| cell | varies | steps | prompts | tp dB | uniform dB | tp − uniform dB (per prompt) | tp wins (seed pairs) | "
         "steps to 50 %: tp / uniform (ratio) | diversity tp / uniform | linear dB |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        q, steps, div = r["quality_db"], r["steps_to_quality_50"], r["diversity_distinct"]
        per_prompt = ", ".join(f"{entry} {_fmt(d)}" for entry, d in r["per_prompt_difference_db"].items())
        lines.append(
            f"| {r['cell']} | {r['varies']} | {r['steps']} | {', '.join(r['entries'])} | {_fmt(q.get('tp'))} | {_fmt(q.get('uniform'))} | "
            f"**{_fmt(r['quality_db_tp_minus_uniform'])}** ({per_prompt}) | {r['tp_wins']}/{r['pairs']} | "
            f"{_fmt(steps.get('tp'), 0)} / {_fmt(steps.get('uniform'), 0)} ({_fmt(r['steps_to_quality_tp_over_uniform'], 2)}) | "
            f"{_fmt(div.get('tp'), 2)} / {_fmt(div.get('uniform'), 2)} | {_fmt(q.get('linear'))} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Left: tp - uniform PSNR per cell (dots: seed pairs, bar: mean). Right: steps-to-quality ratio."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    y = np.arange(len(rows))[::-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.42 * len(rows) + 1.4), sharey=True, gridspec_kw={"width_ratios": [2, 1]})
    for yi, r in zip(y, rows):
        mean = r["quality_db_tp_minus_uniform"]
        if mean is not None:
            left.barh(yi, mean, color="tab:green" if mean > 0 else "tab:red", alpha=0.35)
        left.plot(r["paired_differences_db"], [yi] * len(r["paired_differences_db"]), "k.", ms=4)
        ratio = r["steps_to_quality_tp_over_uniform"]
        if ratio is not None:
            right.barh(yi, ratio, color="tab:green" if ratio < 1 else "tab:red", alpha=0.35)
    left.axvline(0, color="grey", lw=0.8)
    right.axvline(1, color="grey", lw=0.8)
    left.set_yticks(y)
    left.set_yticklabels([f"{r['cell']}: {r['varies']}" for r in rows], fontsize=7)
    left.set_xlabel("tp − uniform final PSNR (dB); dots: seed pairs")
    right.set_xlabel("steps to 50 % bar, tp / uniform")
    fig.suptitle("When does TP-SDS win on the analytic prior? (green: tp better)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write(out: Path, cell_names: list[str], wall_s: float | None = None) -> dict[str, Any]:
    """Gather out/cells into out/robustness.json, robustness.md (the table) and robustness.png."""
    rows = gather(out, cell_names)
    study = {"cells": rows, "wall_s_this_call": None if wall_s is None else round(wall_s, 1)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "robustness.md", "When does TP-SDS win on this prior?\n\n" + table(rows) + "\n")
    study["plot"] = str(plot(rows, out / "robustness.png")) if rows else None
    atomic_write_text(out / "robustness.json", json.dumps(study, indent=1))
    return study
