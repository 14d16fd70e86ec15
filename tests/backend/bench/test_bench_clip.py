"""backend/bench/clip.py: per-schedule CLIP numbers from per-run results (hand-made)."""

import pytest

from backend.bench.clip import ratios, summarize


def run(label, entry, seed, r, score, views):
    return {"label": label, "entry": entry, "seed": seed, "eval_steps": [0, 2], "r_precision": [0.0, r], "clip_score": [0.0, score],
            "clip": {"model": "m", "prompts": ["a", "b"], "index": 0 if entry == "a" else 1},
            "clip_final": {"r_precision": r, "clip_score": score, "embeddings": views}}


def test_summary_means_per_prompt_then_over_prompts_and_diversity_across_seeds():
    x, y = [[1.0, 0.0]], [[0.0, 1.0]]
    results = [
        run("tp", "a", 0, 1.0, 30.0, x), run("tp", "a", 1, 0.5, 20.0, y),  # two different pictures: distance 1
        run("tp", "b", 0, 0.0, 10.0, x), run("tp", "b", 1, 0.0, 10.0, x),  # the same picture twice: 0
        run("uniform", "a", 0, 1.0, 30.0, x), run("uniform", "a", 1, 1.0, 30.0, x),
        run("uniform", "b", 0, 1.0, 30.0, y), run("uniform", "b", 1, 1.0, 30.0, x),
    ]
    summary = summarize(results)
    tp = summary["tp"]
    assert tp["per_prompt"]["a"]["r_precision"] == 0.75 and tp["per_prompt"]["b"]["r_precision"] == 0.0
    assert tp["r_precision"] == pytest.approx(0.375) and tp["clip_score"] == pytest.approx(17.5)
    assert tp["per_prompt"]["a"]["diversity"] == pytest.approx(1.0) and tp["per_prompt"]["b"]["diversity"] == pytest.approx(0.0)
    assert tp["clip_diversity"] == pytest.approx(0.5) and tp["chance_r_precision"] == 0.5
    assert [s["seed"] for s in tp["per_prompt"]["a"]["per_seed"]] == [0, 1]
    assert summary["uniform"]["clip_diversity"] == pytest.approx(0.5)
    assert ratios(summary) == {"r_precision_tp_minus_uniform": -0.625, "clip_score_tp_minus_uniform": -12.5,
                               "clip_diversity_tp_over_uniform": 1.0}


def test_runs_without_clip_give_no_clip_summary():
    assert summarize([{"label": "tp", "entry": "a", "seed": 0}]) == {} and ratios({}) == {}
