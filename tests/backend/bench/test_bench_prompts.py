"""`python -m backend bench prompts` (issue 11): the 18-prompt table, on a tiny config."""

import json
import subprocess
import sys

from backend.bench.prompts import SHAPE_EULER, nearest_colour, prompt_rows
from backend.guidance.targets import COLORS, SHAPES, load_targets

TINY = ["--set", "steps=4", "--set", "resolution=16", "--set", "preview_resolution=16", "--set", "samples_per_ray=16",
        "--set", "dense_resolution=32", "--set", "mesh_resolution=32"]


def bench(*args):
    return subprocess.run([sys.executable, "-m", "backend", "bench", "prompts", *args], capture_output=True, text=True, timeout=600)


def test_every_shape_without_a_colour_and_in_two_covers_the_palette():
    rows = prompt_rows(list(SHAPES))
    assert len(rows) == 18 and set(SHAPE_EULER) == set(SHAPES)
    assert {colour for _, _, colour in rows} == set(COLORS) | {None}
    for prompt, shape, colour in rows:
        targets = load_targets(prompt)
        assert {t.parts[0].shape for t in targets} == {shape}
        assert len(targets) == (len(COLORS) if colour is None else 1)


def test_nearest_colour():
    assert nearest_colour([0.8, 0.15, 0.1]) == "red" and nearest_colour([0.1, 0.1, 0.1]) == "black"


def test_command_writes_the_table_and_reuses_finished_runs(tmp_path):
    out = tmp_path / "prompts"
    result = bench("--shapes", "torus", "--device", "cpu", "--out", str(out), *TINY)
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "prompts.json").read_text())
    assert [r["prompt"] for r in data["rows"]] == ["a torus", "a red torus", "a purple torus"]
    assert data["summary"]["prompts"] == 3 and data["summary"]["colour_asked"] == 2
    for row in data["rows"]:
        assert row["config"]["steps"] == 4 and row["config"]["seed"] == 0 and row["euler_target"] == 0
        assert row["psnr"] > 0 and row["seconds"] > 0
        if row["mesh"]:
            assert len(row["mean_rgb"]) == 3 and row["nearest_colour"] in COLORS
    table = (out / "prompts.md").read_text()
    assert "| a red torus |" in table and "meshes" in table
    again = bench("--shapes", "torus", "--device", "cpu", "--out", str(out), *TINY)
    assert again.returncode == 0, again.stderr
    assert all(r.get("reused") for r in json.loads((out / "prompts.json").read_text())["rows"])


def test_bad_shape_or_setting_fails_before_any_run(tmp_path):
    result = bench("--shapes", "teapot", "--out", str(tmp_path / "a"))
    assert result.returncode == 2 and "teapot" in result.stderr
    result = bench("--shapes", "torus", "--out", str(tmp_path / "b"), "--set", "steps=0")
    assert result.returncode == 2 and "steps" in result.stderr
    assert not (tmp_path / "b" / "runs").exists()
