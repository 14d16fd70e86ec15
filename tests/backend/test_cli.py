"""backend/cli.py end to end, as a user runs it (subprocesses)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_serve_options_for_tcp_clients_are_refused_on_stdio(tmp_path):
    result = backend("serve", "--out", str(tmp_path / "root"), "--allow-pickle-weights")
    assert result.returncode == 2 and "--out, --allow-pickle-weights: for serve --listen only" in result.stderr
    assert result.stdout == "" and not (tmp_path / "root").exists()


def test_schedule_json():
    result = backend("schedule", "--kind", "tp", "--steps", "5", "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data == {"kind": "tp", "t": [980, 932, 870, 787, 654]}
    result = backend("schedule", "--kind", "uniform", "--steps", "4", "--seed", "1", "--json")
    assert len(json.loads(result.stdout)["t"]) == 4
