"""backend/bench/metrics.py on hand-made runs."""

import math

import pytest

from backend.bench.metrics import diversity, quality_thresholds, ratios, steps_to_quality, summarize


def run(label, entry, seed, psnr, best, consistency=1.0, kind="colour modes"):
    """A fake result: a PSNR curve evaluated every 10 steps, ending at psnr[-1]."""
    return {
        "label": label, "entry": entry, "kind": kind, "seed": seed,
        "eval_steps": [10 * i for i in range(len(psnr))], "psnr": psnr,
        "quality": {"psnr": psnr[-1], "best_target": best, "best_target_name": str(best), "consistency": consistency},
        "chamfer_rel": 0.03,
    }


def test_steps_to_quality_is_the_first_evaluation_at_or_above_the_bar():
    assert steps_to_quality([0, 10, 20], [5.0, 12.0, 20.0], 12.0) == 10
    assert steps_to_quality([0, 10, 20], [5.0, 12.0, 20.0], 21.0) is None


def test_thresholds_span_the_untrained_median_to_the_best_final():
    runs = [run("tp", "x", 0, [10.0, 30.0], 0), run("tp", "x", 1, [10.0, 20.0], 0)]
    assert quality_thresholds(runs) == [15.0, 20.0, 25.0]


def test_two_seeds_landing_on_two_targets_is_diversity_two():
    assert diversity([3, 5]) == {"distinct": 2, "entropy_bits": 1.0, "histogram": {"3": 1, "5": 1}}
    assert diversity([4, 4, 4])["distinct"] == 1 and diversity([4, 4, 4])["entropy_bits"] == 0.0


def test_summary_and_ratios_compare_schedules_against_the_same_bars():
    results = [
        run("tp", "torus", 0, [10.0, 20.0, 30.0], best=0),
        run("tp", "torus", 1, [10.0, 20.0, 28.0], best=3),
        run("uniform", "torus", 0, [10.0, 12.0, 18.0], best=2, consistency=0.5),
        run("uniform", "torus", 1, [10.0, 12.0, 26.0], best=2),
    ]
    summary = summarize(results, steps=30)
    torus_tp, torus_uniform = summary["tp"]["per_prompt"]["torus"], summary["uniform"]["per_prompt"]["torus"]
    assert torus_tp["thresholds_db"] == torus_uniform["thresholds_db"] == [15.0, 20.0, 25.0]
    assert torus_tp["steps_to_quality"] == [10, 10, 20]
    # uniform seed 0 never reaches 20 or 25 dB: counted as `steps` (30), and reported as not reached
    assert torus_uniform["steps_to_quality"] == [20, 25, 25] and torus_uniform["reached"] == [2, 1, 1]
    assert summary["tp"]["diversity_distinct"] == 2 and summary["uniform"]["diversity_distinct"] == 1
    r = ratios(summary)
    assert r["steps_to_quality_tp_over_uniform"] == pytest.approx(10 / 25)
    assert r["quality_db_tp_minus_uniform"] == pytest.approx(29.0 - 22.0)
    assert r["diversity_tp_over_uniform"] == 2.0
    assert r["consistency_tp_minus_uniform"] == pytest.approx(0.25)


def test_controls_do_not_count_towards_diversity():
    results = [run("tp", "red", s, [10.0, 20.0], best=0, kind="control") for s in range(2)]
    results += [run("tp", "torus", s, [10.0, 20.0], best=s) for s in range(2)]
    assert summarize(results, steps=10)["tp"]["diversity_distinct"] == 2
    assert math.isclose(summarize(results, steps=10)["tp"]["diversity_entropy_bits"], 1.0)
