"""The numbers `bench convergence` reports (docs/ARCHITECTURE.md §7, §8), from per-run results.

A run's result (convergence.run_one) holds its quality curve: `eval_steps` and `psnr` at
each evaluation, and the final `quality` (PSNR, best target k*, consistency) and `chamfer_rel`.

steps-to-quality  the first evaluated step whose PSNR is at or above a threshold (None: never).
                  Thresholds are per prompt, at 25 / 50 / 75 % of the way from the median PSNR of
                  the untrained field (the step-0 evaluation) to the best final PSNR any run of
                  that prompt reached: the range the runs span. Averages count a run that never
                  reaches a threshold as `steps` (censored) and report how many reached it.
diversity         distinct best targets k* across seeds, and the entropy (bits) of their histogram.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Any

THRESHOLD_FRACTIONS = (0.25, 0.5, 0.75)  # the ratio of steps-to-quality uses the middle one


def steps_to_quality(eval_steps: list[int], psnr: list[float], threshold: float) -> int | None:
    """First evaluated step with PSNR >= threshold, or None."""
    return next((step for step, value in zip(eval_steps, psnr) if value >= threshold), None)


def quality_thresholds(runs: list[dict[str, Any]]) -> list[float]:
    """Three PSNR thresholds spanning the range the runs of one prompt reach (see module doc)."""
    start = statistics.median(run["psnr"][0] for run in runs)
    best = max(run["quality"]["psnr"] for run in runs)
    return [round(start + f * (best - start), 2) for f in THRESHOLD_FRACTIONS]


def diversity(best_targets: list[int]) -> dict[str, Any]:
    """Distinct values and the Shannon entropy (bits) of their histogram."""
    counts = Counter(best_targets)
    n = len(best_targets)
    entropy = -sum(c / n * math.log2(c / n) for c in counts.values()) if n else 0.0
    return {"distinct": len(counts), "entropy_bits": round(entropy + 0.0, 4), "histogram": {str(k): v for k, v in sorted(counts.items())}}


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(values) if values else None


def summarize(results: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """Per schedule label: metric means and the per-prompt, per-seed values behind them.

    `results`: every run's result, each with `label`, `entry`, `seed`. Thresholds are computed per
    prompt over the runs of all schedules, so every schedule is measured against the same bar.
    """
    by_entry: dict[str, list[dict[str, Any]]] = {}
    for run in results:
        by_entry.setdefault(run["entry"], []).append(run)
    thresholds = {entry: quality_thresholds(runs) for entry, runs in by_entry.items()}

    summary: dict[str, Any] = {}
    for label in dict.fromkeys(run["label"] for run in results):
        runs = [run for run in results if run["label"] == label]
        per_prompt: dict[str, Any] = {}
        for entry, bars in thresholds.items():
            mine = sorted((run for run in runs if run["entry"] == entry), key=lambda run: run["seed"])
            if not mine:
                continue
            per_seed = []
            for run in mine:
                reached = [steps_to_quality(run["eval_steps"], run["psnr"], bar) for bar in bars]
                per_seed.append({
                    "seed": run["seed"],
                    "quality_db": run["quality"]["psnr"],
                    "consistency": run["quality"]["consistency"],
                    "best_target": run["quality"]["best_target"],
                    "best_target_name": run["quality"]["best_target_name"],
                    "steps_to_quality": reached,
                    "chamfer_rel": run.get("chamfer_rel"),
                    "wall_s": run.get("wall_s"),
                    "run_dir": run.get("run_dir"),
                })
            per_prompt[entry] = {
                "kind": mine[0]["kind"],
                "thresholds_db": bars,
                "quality_db": _mean([s["quality_db"] for s in per_seed]),
                "consistency": _mean([s["consistency"] for s in per_seed]),
                "steps_to_quality": [_mean([s["steps_to_quality"][i] if s["steps_to_quality"][i] is not None else steps for s in per_seed])
                                     for i in range(len(bars))],
                "reached": [sum(s["steps_to_quality"][i] is not None for s in per_seed) for i in range(len(bars))],
                "diversity": diversity([s["best_target"] for s in per_seed]),
                "chamfer_rel": _mean([s["chamfer_rel"] for s in per_seed]),
                "per_seed": per_seed,
            }
        multi = [p for p in per_prompt.values() if p["kind"] != "control"]
        summary[label] = {
            "quality_db": _mean([p["quality_db"] for p in per_prompt.values()]),
            "consistency": _mean([p["consistency"] for p in per_prompt.values()]),
            "steps_to_quality": [_mean([p["steps_to_quality"][i] for p in per_prompt.values()]) for i in range(len(THRESHOLD_FRACTIONS))],
            "reached": [sum(p["reached"][i] for p in per_prompt.values()) for i in range(len(THRESHOLD_FRACTIONS))],
            "runs": len(runs),
            "diversity_distinct": _mean([p["diversity"]["distinct"] for p in multi]),
            "diversity_entropy_bits": _mean([p["diversity"]["entropy_bits"] for p in multi]),
            "chamfer_rel": _mean([p["chamfer_rel"] for p in per_prompt.values()]),
            "per_prompt": per_prompt,
        }
    return summary


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 4)


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


def ratios(summary: dict[str, Any], label: str = "tp", baseline: str = "uniform") -> dict[str, float | None]:
    """The four headline comparisons of `label` against `baseline` (issue 5's bench.json layout)."""
    if label not in summary or baseline not in summary:
        return {}
    a, b = summary[label], summary[baseline]
    middle = len(THRESHOLD_FRACTIONS) // 2
    return {
        f"steps_to_quality_{label}_over_{baseline}": _ratio(a["steps_to_quality"][middle], b["steps_to_quality"][middle]),
        f"quality_db_{label}_minus_{baseline}": _difference(a["quality_db"], b["quality_db"]),
        f"diversity_{label}_over_{baseline}": _ratio(a["diversity_distinct"], b["diversity_distinct"]),
        f"consistency_{label}_minus_{baseline}": _difference(a["consistency"], b["consistency"]),
    }


def loss_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Without a known answer (Stable Diffusion): the final SDS loss and run time per schedule.

    Quality, consistency and diversity need targets; with SD they are read from the plots' final
    renders by eye (or a CLIP model, which this tool does not ship).
    """
    summary: dict[str, Any] = {}
    for label in dict.fromkeys(run["label"] for run in results):
        runs = [run for run in results if run["label"] == label]
        summary[label] = {
            "runs": len(runs),
            "final_loss": _mean([run["final_loss"] for run in runs]),
            "wall_s": _mean([run["wall_s"] for run in runs]),
            "per_run": [{k: run[k] for k in ("entry", "seed", "final_loss", "wall_s", "run_dir")} for run in runs],
        }
    return summary
