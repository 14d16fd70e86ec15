"""backend/cli.py end to end, as a user runs it (subprocesses)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TINY_FLAGS = [
    "--guidance", "analytic", "--device", "cpu", "--steps", "6", "--resolution", "16", "--preview-resolution", "16",
    "--samples-per-ray", "16", "--encoding", "dense", "--mesh-resolution", "32", "--texture-size", "256", "--preview-every", "3",
]


def backend(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "backend", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_generate_tiny_run_prints_the_run_folder_last(tmp_path):
    run_dir = tmp_path / "my run"
    result = backend("generate", "a red torus", *TINY_FLAGS, "--run-dir", str(run_dir), "--export", "glb,ply,obj")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(run_dir)
    for name in ("config.json", "metrics.json", "checkpoint.pt", "mesh.glb", "mesh.ply", "mesh.obj", "previews/step_00006.png"):
        assert (run_dir / name).exists(), name
    assert "analytic prior" in result.stderr  # the offline demo prior says what it is


def test_a_run_without_a_surface_exits_3_and_its_hint_names_real_flags(tmp_path):
    run_dir = tmp_path / "run"
    result = backend("generate", "a red torus", *TINY_FLAGS, "--mesh-threshold", "1000000", "--mesh-smooth", "0.02", "--sdf-after", "1",
                     "--run-dir", str(run_dir), "--export", "glb,obj", "--quiet")
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(run_dir)  # the run folder still: checkpoint, previews, metrics
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("done without a mesh after 6 steps (exit status 3): No mesh: no surface above density threshold 1e+06")
    assert "--steps" in result.stderr and "--mesh-threshold" in result.stderr and "--mesh-smooth" in result.stderr
    assert not (run_dir / "mesh.glb").exists() and (run_dir / "checkpoint.pt").is_file()


def test_the_end_line_lists_every_file_written_and_logs_stay_above_the_bar(tmp_path):
    result = backend("generate", "a red green torus", *TINY_FLAGS, "--run-dir", str(tmp_path / "run"), "--export", "glb,ply,obj")
    assert result.returncode == 0, result.stderr
    assert "prompt: read red and green torus as a red torus: the analytic prior gives an object one colour" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == "done: 6 steps; wrote mesh_albedo.png, mesh.glb, mesh.ply, mesh.obj, mesh.mtl", last
    for line in result.stderr.splitlines():  # a log line starts a line of its own (tqdm.write), never inside the bar's
        if "INFO " in line:
            assert line.split("\r")[-1].lstrip().startswith("INFO "), repr(line)


def test_generate_under_out_makes_a_sanitised_folder(tmp_path):
    result = backend("generate", "a ../../red/torus\\", *TINY_FLAGS, "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path and "red-torus" in run_dir.name
    assert list(tmp_path.iterdir()) == [run_dir]


@pytest.mark.parametrize("args, words", [
    (["--m1", "400", "--m2", "600"], "m2: must be <= m1"),
    (["--steps", "0"], "steps:"),
    (["--schedule", "cosine"], "schedule: must be one of tp, uniform, linear"),
    (["--resolution", "50"], "resolution:"),
    (["--mesh-faces", "50"], "mesh_faces: must be 0 (keep every face) or from 100"),
    (["--texture-size", "1000"], "texture_size: must be a power of two from 256 to 8192"),
])
def test_bad_values_exit_2_naming_the_field(tmp_path, args, words):
    result = backend("generate", "a red torus", *TINY_FLAGS, *args, "--out", str(tmp_path))
    assert result.returncode == 2
    assert words in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_unknown_prompt_words_list_the_vocabulary(tmp_path):
    result = backend("generate", "a majestic dragon", *TINY_FLAGS, "--out", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "dragon" in result.stderr and "torus" in result.stderr and "--guidance sd" in result.stderr


@pytest.mark.parametrize("prompt, words", [
    ("a torus and a cube", "a torus and a cube: the analytic (offline demo) prior makes one object per run, not a set of objects. "
                           "Write 'a torus or a cube' for either one, or compose one object of several parts in a targets file "
                           "(--targets)"),
    ("two red spheres", "reads no counts or plurals ('two' is a count; 'spheres' is a plural). Write one object, e.g. 'a red sphere'"),
])
def test_sets_counts_and_plurals_are_refused_saying_what_the_prior_reads(tmp_path, prompt, words):
    result = backend("generate", prompt, *TINY_FLAGS, "--out", str(tmp_path))
    assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "Error:" not in result.stderr and not list(tmp_path.iterdir())  # no class name; nothing written


def test_serve_options_for_tcp_clients_are_refused_on_stdio(tmp_path):
    result = backend("serve", "--out", str(tmp_path / "root"), "--allow-pickle-weights")
    assert result.returncode == 2 and "--out, --allow-pickle-weights: for serve --listen only" in result.stderr
    assert result.stdout == "" and not (tmp_path / "root").exists()


@pytest.mark.parametrize("command", ["generate", "batch"])
def test_help_gives_every_flag_a_description_and_its_default(command):
    import argparse

    from backend.cli import build_parser

    parser = build_parser()._subparsers._group_actions[0].choices[command]
    assert parser.description or command == "batch"
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        text = action.help or ""
        assert text and text != argparse.SUPPRESS, action.option_strings
        assert "default" in text, (action.option_strings, text)
    shown = subprocess.run([sys.executable, "-m", "backend", command, "--help"], capture_output=True, text=True, cwd=REPO).stdout
    assert "--mesh-threshold MESH_THRESHOLD" in shown and "(default 25; on a CPU 5)" in " ".join(shown.split())


def test_schedule_json():
    result = backend("schedule", "--kind", "tp", "--steps", "5", "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data == {"kind": "tp", "t": [980, 932, 870, 787, 654]}
    result = backend("schedule", "--kind", "uniform", "--steps", "4", "--seed", "1", "--json")
    assert len(json.loads(result.stdout)["t"]) == 4
