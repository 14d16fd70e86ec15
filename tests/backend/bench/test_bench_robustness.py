"""`python -m backend bench robustness`: the study's cells, its shared run store, its table."""

import json
import subprocess
import sys

from backend.bench.convergence import bench_config
from backend.bench.robustness import CELLS, ENTRIES, base_config, plan, selected_cells, variants
from backend.bench.robustness_report import cell_row, table
from backend.guidance.targets import load_targets

TINY = ["--set", "resolution=16", "--set", "preview_resolution=16", "--set", "samples_per_ray=16",
        "--set", "dense_resolution=32", "--set", "mesh_resolution=32", "--set", "texture_size=256"]


def test_every_cell_is_a_valid_bench_of_known_entries(tmp_path):
    assert len({cell.name for cell in CELLS}) == len(CELLS)
    for cell in CELLS:
        assert {"tp", "uniform"} <= set(cell.schedules)
        for name in cell.entries:
            for variant in variants(cell):
                config = bench_config(base_config(cell, {}), ENTRIES[name], "", 0, variant, tmp_path)
                assert config.steps == cell.steps and config.lr_final_ratio == cell.lr_final_ratio
                assert config.use_w_d == (cell.use_w_d or variant.label != "tp")  # only tp reads W_d
    modes = {name: len(load_targets(ENTRIES[name].prompt)) for name in ("red_torus", "torus2", "torus4", "torus")}
    assert modes == {"red_torus": 1, "torus2": 2, "torus4": 4, "torus": 8}
    assert "smoke" not in [cell.name for cell in selected_cells("")]


def test_the_study_fits_a_few_hours_and_trains_shared_runs_once(tmp_path):
    rows = {row["cell"]: row for row in plan(selected_cells(""), tmp_path, 4, {})}
    assert 100 < sum(row["estimated_min"] for row in rows.values()) < 180  # ~2-3 hours of an idle 2-core CPU
    assert rows["s300_nowd"]["new_runs"] == 8  # only tp changes: uniform and linear are the baseline's runs
    assert rows["modes8"]["new_runs"] == 0  # the baseline's torus
    for cell in selected_cells(""):
        assert rows[cell.name]["runs"] == len(cell.entries) * len(cell.schedules) * 4


def test_cell_row_pairs_tp_and_uniform_by_prompt_and_seed():
    def seeds(*values):
        return {"per_seed": [{"seed": i, "quality_db": v} for i, v in enumerate(values)]}

    bench = {"steps": 300, "seeds": 2, "entries": [{"name": "a"}, {"name": "b"}], "runs": [{}] * 8,
             "cell": {"name": "x", "varies": "y"}, "ratios": {"quality_db_tp_minus_uniform": -1.5, "steps_to_quality_tp_over_uniform": 1.2},
             "schedules": {
                 "tp": {"quality_db": 20.0, "steps_to_quality": [1, 120, 3], "diversity_distinct": 1.0,
                        "per_prompt": {"a": seeds(20.0, 24.0), "b": seeds(18.0, 18.0)}},
                 "uniform": {"quality_db": 21.5, "steps_to_quality": [1, 100, 3], "diversity_distinct": 2.0,
                             "per_prompt": {"a": seeds(22.0, 23.0), "b": seeds(19.0, 19.0)}}}}
    row = cell_row(bench)
    assert row["paired_differences_db"] == [-2.0, 1.0, -1.0, -1.0] and row["tp_wins"] == 1 and row["pairs"] == 4
    assert row["per_prompt_difference_db"] == {"a": -0.5, "b": -1.0}
    assert row["steps_to_quality_50"] == {"tp": 120, "uniform": 100}
    assert "**-1.5** (a -0.5, b -1.0) | 1/4 | 120 / 100 (1.20) | 1.00 / 2.00" in table([row])


def test_robustness_command_runs_a_cell_writes_the_table_and_reuses_its_runs(tmp_path):
    out = tmp_path / "study"
    robustness = [sys.executable, "-m", "backend", "bench", "robustness", "--out", str(out)]
    command = [*robustness, "--cells", "smoke", "--seeds", "1", "--jobs", "1", "--quiet", *TINY]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    study = json.loads((out / "robustness.json").read_text())
    (row,) = study["cells"]
    assert row["cell"] == "smoke" and row["pairs"] == 1 and set(row["quality_db"]) == {"tp", "uniform"}
    assert row["quality_db"]["tp"] > 0 and row["quality_db_tp_minus_uniform"] is not None
    assert "| smoke | tests only | 4 | torus2 |" in (out / "robustness.md").read_text()
    assert (out / "robustness.png").stat().st_size > 1000
    assert (out / "cells" / "smoke" / "plots" / "quality.png").exists()
    assert len(list((out / "runs" / "torus2").glob("*/seed0/bench_run.json"))) == 2
    listed = subprocess.run([*command, "--list"], capture_output=True, text=True, timeout=120, check=False)
    assert listed.returncode == 0 and "(  0 to train)" in listed.stdout, listed.stdout + listed.stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "cells" / "smoke" / "bench.json").read_text())["runs_reused"] == 2
    bad = subprocess.run([*robustness, "--cells", "nope"], capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and "unknown cell 'nope'" in bad.stderr


def test_readme_lists_every_cell_of_the_study():
    from pathlib import Path

    readme = (Path(__file__).parents[3] / "README.md").read_text(encoding="utf-8")
    for cell in selected_cells(""):
        assert f"| {cell.name} | {cell.varies} | {cell.steps} |" in readme, cell.name
