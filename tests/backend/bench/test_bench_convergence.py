"""`python -m backend bench convergence` on a minimal suite: a well-formed bench.json and plots."""

import json
import subprocess
import sys

from backend.bench.convergence import schedule_variants, sensitivity_variants
from backend.bench.suite import SUITES, suite_entries
from backend.config import GenerationConfig
from backend.guidance.targets import load_targets


def bench(*args):
    return subprocess.run([sys.executable, "-m", "backend", "bench", "convergence", *args], capture_output=True, text=True, timeout=600)


def test_minimal_suite_writes_bench_json_and_plots_and_reuses_finished_runs(tmp_path):
    out = tmp_path / "bench"
    flags = ["--suite", "minimal", "--seeds", "2", "--steps", "4", "--eval-every", "2", "--schedules", "tp,uniform",
             "--jobs", "1", "--device", "cpu", "--out", str(out), "--quiet",
             "--set", "resolution=16", "--set", "preview_resolution=16", "--set", "samples_per_ray=16",
             "--set", "dense_resolution=32", "--set", "mesh_resolution=32", "--set", "texture_size=256"]
    result = bench(*flags)
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "bench.json").read_text())
    assert data["suite"] == "minimal" and data["steps"] == 4 and data["seeds"] == 2
    assert set(data["schedules"]) == {"tp", "uniform"}
    for label in ("tp", "uniform"):
        entry = data["schedules"][label]
        assert entry["runs"] == 2 and entry["quality_db"] > 0 and 0 <= entry["consistency"] <= 1
        per_seed = entry["per_prompt"]["red_sphere"]["per_seed"]
        assert [s["seed"] for s in per_seed] == [0, 1]
        assert all(len(s["steps_to_quality"]) == 3 for s in per_seed)
    assert set(data["ratios"]) == {"steps_to_quality_tp_over_uniform", "quality_db_tp_minus_uniform",
                                   "diversity_tp_over_uniform", "consistency_tp_minus_uniform"}
    run = data["runs"][0]
    assert run["eval_steps"] == [0, 2, 4] and len(run["psnr"]) == 3
    # the curve's last point is the run's own final evaluation
    assert abs(run["psnr"][-1] - run["quality"]["psnr"]) < 1e-6
    for name in ("quality.png", "schedules.png", "final_renders.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    # the same runs are reused by a rerun (an interrupted bench loses only the runs in flight)
    again = bench(*flags)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "bench.json").read_text())["runs_reused"] == 4


def test_bad_schedule_is_refused_before_any_run(tmp_path):
    result = bench("--suite", "minimal", "--schedules", "tp,sometimes", "--out", str(tmp_path / "b"), "--quiet")
    assert result.returncode == 2 and "schedule" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "b" / "runs").exists()


def test_every_suite_entry_reads_as_analytic_targets(tmp_path):
    for name in SUITES:
        for entry in suite_entries(name):
            path = ""
            if entry.targets is not None:
                path = tmp_path / f"{entry.name}.json"
                path.write_text(json.dumps(entry.targets))
            targets = load_targets(entry.prompt, str(path))
            assert (len(targets) == 1) == (entry.kind == "control"), entry.name


def test_set_overrides_are_typed_like_the_config_fields():
    import pytest

    from backend.bench.convergence import parse_overrides
    from backend.config import ConfigError

    assert parse_overrides(["resolution=16", "use_w_d=false", "lr=0.1", "extra={\"a\": 1}"]) == {
        "resolution": 16, "use_w_d": False, "lr": 0.1, "extra": {"a": 1}}
    with pytest.raises(ConfigError, match="resolution"):
        parse_overrides(["resolution=big"])
    with pytest.raises(ConfigError, match="known"):
        parse_overrides(["colour=red"])


def test_sensitivity_variants_are_valid_configs_that_move_one_slider_each():
    variants = sensitivity_variants()
    assert variants[0].overrides == {"schedule": "tp"} and variants[-1].overrides["use_w_d"] is False
    for variant in variants:
        GenerationConfig(prompt="x", **variant.overrides).validate()
        assert len(variant.overrides) <= 2
    assert [v.label for v in schedule_variants(["tp", "linear"])] == ["tp", "linear"]


def test_sd_guidance_bench_scores_the_ring_with_clip_and_records_loss_and_time(tmp_path):
    from backend.guidance.make_model import make_model

    model = make_model("tiny", tmp_path / "tiny")  # random weights, loaded back like a user's folder
    clip = make_model("tiny-clip", tmp_path / "clip")
    out = tmp_path / "bench"
    result = bench("--guidance", "sd", "--model", str(model), "--clip", str(clip), "--suite", "pair", "--seeds", "2", "--steps", "2",
                   "--eval-every", "1", "--schedules", "tp,uniform", "--jobs", "1", "--device", "cpu", "--out", str(out), "--quiet",
                   "--set", "resolution=32", "--set", "preview_resolution=16", "--set", "samples_per_ray=16",
                   "--set", "dense_resolution=32", "--set", "mesh_resolution=32", "--set", "texture_size=256")
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "bench.json").read_text())
    assert data["clip"] == str(clip)
    assert set(data["ratios"]) == {"r_precision_tp_minus_uniform", "clip_score_tp_minus_uniform", "clip_diversity_tp_over_uniform"}
    for label in ("tp", "uniform"):
        entry = data["schedules"][label]
        assert entry["runs"] == 4 and entry["final_loss"] > 0 and entry["wall_s"] > 0
        assert 0 <= entry["r_precision"] <= 1 and 0 <= entry["clip_score"] <= 100 and entry["chance_r_precision"] == 0.5
        assert entry["clip_diversity"] >= 0
        for prompt in ("mug", "chair"):
            per_seed = entry["per_prompt"][prompt]["per_seed"]
            assert [s["seed"] for s in per_seed] == [0, 1]
            # a run's R@1 is the share of its 8 ring views retrieved as its own prompt
            assert all(s["r_precision"] * 8 == round(s["r_precision"] * 8) for s in per_seed)
    for run in data["runs"]:
        assert run["quality"] is None and run["psnr"] == []  # no targets: nothing to compare with
        assert run["eval_steps"] == [0, 1, 2] and len(run["r_precision"]) == 3 and len(run["clip_score"]) == 3
        assert run["clip_final"]["r_precision"] == run["r_precision"][-1] and "embeddings" not in run["clip_final"]
    saved = json.loads((out / "runs" / "tp" / "mug" / "seed0" / "bench_run.json").read_text())
    assert len(saved["clip_final"]["embeddings"]) == 8  # the final views' embeddings, behind diversity
    for name in ("schedules.png", "clip.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    from backend.bench.report import report

    assert "| tp | " in report(out / "bench.json") and "chance 0.50" in report(out / "bench.json")


def test_clip_flag_is_checked_before_any_run(tmp_path):
    result = bench("--suite", "minimal", "--clip", str(tmp_path / "no-such-clip"), "--out", str(tmp_path / "a"), "--quiet")
    assert result.returncode == 2 and "--clip" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "a").exists()  # analytic: refused (it has its own targets)
    result = bench("--guidance", "sd", "--model", str(tmp_path), "--suite", "pair", "--clip", str(tmp_path / "no-such-clip"),
                   "--out", str(tmp_path / "b"), "--quiet")
    assert result.returncode == 2 and "no CLIP folder" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "b").exists()


def test_paper_suite_has_distinct_prompts_of_objects_animals_and_characters():
    from backend.bench.suite import sd_entries

    entries = sd_entries("paper")
    assert 10 <= len(entries) <= 20
    assert len({e.name for e in entries}) == len({e.prompt for e in entries}) == len(entries)
    assert {e.kind for e in entries} == {"object", "animal", "character"}
