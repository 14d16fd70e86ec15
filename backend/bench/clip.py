"""CLIP scores in `bench convergence --guidance sd --clip ID|DIR`: per run, per schedule (issue 15).

Per run, in its worker: the suite's prompts are embedded once; at every evaluation (every
`eval_every` steps and at the last step) the evaluation ring's renders (8 views, lambertian, white
background) are embedded and scored against all of them (backend/bench/clip_metrics.py): R@1 counts
each view as one render, so a run's R@1 is the share of its 8 views that CLIP retrieves as its own
prompt. The last evaluation gives the run's final numbers and keeps its view embeddings, from which
the diversity of a prompt across seeds is computed.

Per schedule (bench.json's `schedules[label]`): `r_precision` and `clip_score`, means over the
prompts of the per-prompt means over seeds; `clip_diversity`, the mean over prompts of
clip_metrics.diversity; `per_prompt[entry]` with `per_seed` values and each run's curve.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np

from . import clip_metrics


def job_spec(model: str, prompts: list[str], index: int) -> dict[str, Any]:
    """What a worker needs to score one run: the CLIP model, every suite prompt, and its own."""
    return {"model": model, "prompts": list(prompts), "index": index}


class RunScorer:
    """Scores one run's evaluation renders against the suite's prompts."""

    def __init__(self, spec: dict[str, Any], device):
        from .clip_model import embedder

        self.embedder = embedder(spec["model"], device)
        self.texts = self.embedder.text(spec["prompts"])
        self.index = spec["index"]
        self.curve: dict[str, list[float]] = {"r_precision": [], "clip_score": []}
        self.last: np.ndarray | None = None

    def evaluate(self, renders) -> dict[str, float]:
        """Score renders (V, H, W, 3) in [0, 1]; appends to the curves and returns this point."""
        images = self.embedder.images(renders)
        own = np.full(len(images), self.index)
        point = {"r_precision": clip_metrics.r_precision(images, self.texts, own),
                 "clip_score": clip_metrics.clip_score(images, self.texts, own)}
        for key, value in point.items():
            self.curve[key].append(round(value, 4))
        self.last = images
        return point

    def result(self) -> dict[str, Any]:
        final = {key: values[-1] if values else None for key, values in self.curve.items()}
        embeddings = [] if self.last is None else np.round(self.last, 5).tolist()
        return {**self.curve, "clip_final": {**final, "embeddings": embeddings}}


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return round(statistics.fmean(values), 4) if values else None


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per schedule label: the CLIP numbers of its runs (see module doc); {} when none were scored."""
    summary: dict[str, dict[str, Any]] = {}
    for label in dict.fromkeys(r["label"] for r in results if r.get("clip_final")):
        per_prompt: dict[str, Any] = {}
        for entry in dict.fromkeys(r["entry"] for r in results):
            runs = sorted((r for r in results if r["label"] == label and r["entry"] == entry and r.get("clip_final")),
                          key=lambda r: r["seed"])
            if not runs:
                continue
            embeddings = [r["clip_final"]["embeddings"] for r in runs if r["clip_final"]["embeddings"]]
            spread = clip_metrics.diversity(np.array(embeddings)) if len(embeddings) == len(runs) else None
            per_prompt[entry] = {
                "r_precision": _mean([r["clip_final"]["r_precision"] for r in runs]),
                "clip_score": _mean([r["clip_final"]["clip_score"] for r in runs]),
                "diversity": None if spread is None else round(spread, 4),
                "per_seed": [{"seed": r["seed"], "r_precision": r["clip_final"]["r_precision"], "clip_score": r["clip_final"]["clip_score"],
                              "eval_steps": r["eval_steps"], "r_precision_curve": r["r_precision"], "clip_score_curve": r["clip_score"],
                              "run_dir": r.get("run_dir")} for r in runs],
            }
        summary[label] = {
            "r_precision": _mean([p["r_precision"] for p in per_prompt.values()]),
            "clip_score": _mean([p["clip_score"] for p in per_prompt.values()]),
            "clip_diversity": _mean([p["diversity"] for p in per_prompt.values()]),
            "chance_r_precision": round(1 / len(results[0]["clip"]["prompts"]), 4) if results[0].get("clip") else None,
            "per_prompt": per_prompt,
        }
    return summary


def ratios(summary: dict[str, Any], label: str = "tp", baseline: str = "uniform") -> dict[str, float | None]:
    """tp against uniform on the CLIP numbers: differences of R@1 and CLIP score, ratio of diversity."""
    if label not in summary or baseline not in summary or summary[label].get("r_precision") is None:
        return {}
    a, b = summary[label], summary[baseline]

    def minus(key):
        return None if a.get(key) is None or b.get(key) is None else round(a[key] - b[key], 4)

    return {
        f"r_precision_{label}_minus_{baseline}": minus("r_precision"),
        f"clip_score_{label}_minus_{baseline}": minus("clip_score"),
        f"clip_diversity_{label}_over_{baseline}": (None if not a.get("clip_diversity") or not b.get("clip_diversity")
                                                    else round(a["clip_diversity"] / b["clip_diversity"], 4)),
    }
