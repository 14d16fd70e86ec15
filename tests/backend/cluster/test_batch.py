"""backend/cluster/batch.py and contact_sheet.py: prompts files, jobs, and whole batches on a local Ray (issue 7)."""

import ast
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from backend import cli
from backend.cluster import batch
from backend.cluster.contact_sheet import CAPTION, CELL, contact_sheet
from backend.config import ConfigError

REPO = Path(__file__).resolve().parents[3]
TINY_FLAGS = [
    "--guidance", "analytic", "--steps", "10", "--resolution", "16", "--preview-resolution", "16", "--samples-per-ray", "16",
    "--dense-resolution", "24", "--mesh-resolution", "32", "--texture-size", "256",
    "--preview-every", "5", "--checkpoint-every", "0", "--quiet",
]


# ---------------------------------------------------------------------- without Ray
def test_prompts_file_text_and_json(tmp_path):
    text = tmp_path / "prompts.txt"
    text.write_text("# studio set\na red torus\n\n  a blue cube  \n# a green sphere\n")
    assert batch.load_prompts(text) == [("a red torus", {}), ("a blue cube", {})]
    listed = tmp_path / "prompts.json"
    listed.write_text(json.dumps(["a red torus", {"prompt": "a blue cube", "config": {"steps": 5}}]))
    assert batch.load_prompts(listed) == [("a red torus", {}), ("a blue cube", {"steps": 5})]


@pytest.mark.parametrize("name, content, words", [
    ("p.txt", "# only a comment\n\n", "no prompts"),
    ("p.json", "{\"prompt\": \"x\"}", "expected a JSON list"),
    ("p.json", "[1]", "item 1 must be a prompt"),
    ("p.json", "[{\"prompt\": \"x\", \"colour\": \"red\"}]", "item 1 must be a prompt"),
    ("p.json", "[\"a red torus\",", "not JSON"),
    ("missing.txt", None, "cannot read"),
])
def test_bad_prompts_files_say_why(tmp_path, name, content, words):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=words):
        batch.load_prompts(tmp_path / name)


def test_jobs_seeds_and_values(tmp_path):
    jobs = batch.make_jobs([("a red torus", {}), ("a blue cube", {"steps": 5})], seeds=2, first_seed=7)
    expected = [(0, "a red torus", 7), (1, "a red torus", 8), (2, "a blue cube", 7), (3, "a blue cube", 8)]
    assert [(j.index, j.prompt, j.seed) for j in jobs] == expected
    values = batch.job_values(jobs[3], {"steps": 100, "guidance": "analytic"}, tmp_path)
    assert values["steps"] == 5 and values["seed"] == 8 and values["run_dir"] == str(tmp_path / "003-a-blue-cube-s8")
    with pytest.raises(ConfigError, match="m2"):
        batch.job_values(batch.Job(0, "a red torus", 0, {"m1": 100, "m2": 600}), {}, tmp_path)
    with pytest.raises(ValueError, match="at least 1"):
        batch.make_jobs([("a red torus", {})], seeds=0, first_seed=0)


def test_files_copied_back_from_another_node(tmp_path):
    run = tmp_path / "node" / "004-a-red-torus-s0"
    (run / "previews").mkdir(parents=True)
    for name, data in (("config.json", b"{}"), ("mesh.glb", b"glb"), ("checkpoint.pt", b"big"), ("previews/step_00005.png", b"5"),
                       ("previews/step_00010.png", b"10")):
        (run / name).write_bytes(data)
    files = batch.collect_files(run)
    assert sorted(files) == ["config.json", "mesh.glb", "previews/step_00010.png"]  # no checkpoint, the last preview
    record = batch.store_files({"run_dir": str(run), "preview": str(run / "previews/step_00010.png"), "files": files}, tmp_path / "out")
    local = tmp_path / "out" / run.name
    assert record == {"run_dir": str(local), "preview": str(local / "previews/step_00010.png")}
    assert (local / "mesh.glb").read_bytes() == b"glb" and not (local / "checkpoint.pt").exists()


def test_contact_sheet_grid_with_a_failed_cell(tmp_path):
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "red.png")
    records = [
        {"prompt": "a red torus", "seed": 0, "status": "done", "preview": str(tmp_path / "red.png"), "quality": {"psnr": 21.5}},
        {"prompt": "a red torus", "seed": 1, "status": "failed", "error": "InjectedFailure: boom", "preview": None},
        {"prompt": "ünïcode prompt", "seed": 0, "status": "failed", "error": "TargetError: unknown", "preview": None},
    ]
    with Image.open(contact_sheet(records, tmp_path / "sheet.png")) as sheet:
        assert sheet.size == (2 * CELL, 2 * (CELL + CAPTION))
        assert sheet.getpixel((CELL // 2, CELL // 2)) == (255, 0, 0)  # the preview, scaled up
        assert sheet.getpixel((CELL + CELL // 2, 10)) != (255, 255, 255)  # the failed cell is grey


def test_only_the_cluster_modules_import_ray():  # batch.py and ray_variations.py: Ray is the optional cluster extra
    for path in (REPO / "backend").rglob("*.py"):
        imported = {alias.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, (ast.Import, ast.ImportFrom))
                    for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
        ray_modules = path.parent.name == "cluster" and path.name in ("batch.py", "ray_variations.py")
        assert ray_modules or not any(name.split(".")[0] == "ray" for name in imported), path


def test_the_summary_counts_jobs_without_a_mesh_apart_and_the_exit_status_says_so(tmp_path):
    def job(index, status):
        return {"index": index, "prompt": "a red torus", "seed": index, "status": status, "preview": None, "quality": None}

    summary = batch.write_results(tmp_path, [job(0, "done"), job(1, "no_mesh"), job(2, "done"), job(3, "done")], None)
    assert (summary["done"], summary["no_mesh"], summary["failed"]) == (3, 1, 0) and batch.exit_status(summary) == 3
    assert batch.exit_status(batch.write_results(tmp_path, [job(0, "no_mesh"), job(1, "failed")], None)) == 1
    assert batch.exit_status(batch.write_results(tmp_path, [job(0, "done")], None)) == 0


def test_without_ray_a_clear_message(tmp_path, monkeypatch, capsys):
    (tmp_path / "p.txt").write_text("a red torus\n")
    monkeypatch.setitem(sys.modules, "ray", None)
    assert cli.main(["batch", str(tmp_path / "p.txt")]) == 2
    assert "pip install" in capsys.readouterr().err


# ---------------------------------------------------------------------- on a local Ray instance
@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(**batch.init_options(None))  # what `batch` does without --ray-address; both batches below share it
    yield ray
    ray.shutdown()


def read_index(root: Path) -> dict:
    return json.loads((root / "index.json").read_text())


def test_three_prompts_two_seeds(local_ray, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# three primitives\na red torus\na blue cube\n\na green sphere\n")
    root = tmp_path / "batch"
    assert cli.main(["batch", str(prompts), "--seeds", "2", "--out", str(root), *TINY_FLAGS]) == 0
    assert capsys.readouterr().out.strip() == str(root.resolve())
    index = read_index(root)
    jobs = index["jobs"]
    assert index["batch"]["done"] == 6 and index["batch"]["failed"] == 0 and index["batch"]["finished"]
    assert [(j["prompt"], j["seed"]) for j in jobs] == [(p, s) for p in ("a red torus", "a blue cube", "a green sphere") for s in (0, 1)]
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    assert [f.name for f in folders] == ["000-a-red-torus-s0", "001-a-red-torus-s1", "002-a-blue-cube-s0", "003-a-blue-cube-s1",
                                         "004-a-green-sphere-s0", "005-a-green-sphere-s1"]
    for job, folder in zip(jobs, folders):
        assert job["run_dir"] == str(folder) and job["status"] == "done" and job["attempts"] == 1 and job["time_s"] > 0
        assert json.loads((folder / "config.json").read_text())["seed"] == job["seed"] and (folder / "mesh.glb").is_file()
        assert Path(job["preview"]).parent == folder / "previews" and job["quality"]["best_target_name"] in job["prompt"]
    with Image.open(root / "contact_sheet.png") as sheet:
        assert sheet.size == (2 * CELL, 3 * (CELL + CAPTION))


def test_failures_are_retried_once_then_reported(local_ray, tmp_path, capsys):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([
        {"prompt": "a blue cube", "config": {"extra": {batch.FAIL_ATTEMPTS_HOOK: 1}}},  # fails once, then succeeds
        {"prompt": "a green sphere", "config": {"extra": {batch.FAIL_ATTEMPTS_HOOK: 9}}},  # fails every time
        "a purple unicorn",  # the analytic prior cannot read it: not retried
        {"prompt": "a red torus", "config": {"m1": 100, "m2": 600}},  # invalid: never submitted
        {"prompt": "a red torus", "config": {"mesh_threshold": 1e6, "sdf_after": 1.0}},  # trains, but no surface: no mesh
    ]))
    root = tmp_path / "batch"
    assert cli.main(["batch", str(prompts), "--out", str(root), *TINY_FLAGS]) == 1
    err = capsys.readouterr().err
    index = read_index(root)
    cube, sphere, unicorn, invalid, empty = index["jobs"]
    assert (cube["status"], cube["attempts"]) == ("done", 2) and (Path(cube["run_dir"]) / "mesh.glb").is_file()
    attempts = json.loads((Path(cube["run_dir"]) / "attempts.json").read_text())
    assert "InjectedFailure" in attempts[0]["error"] and attempts[1]["error"] is None
    assert (sphere["status"], sphere["attempts"]) == ("failed", 2) and sphere["error"].startswith("injected failure in attempt 2")
    assert (unicorn["status"], unicorn["attempts"]) == ("failed", 1) and "unicorn" in unicorn["error"]
    assert (invalid["status"], invalid["attempts"]) == ("failed", 0) and invalid["error"].startswith("m2: must be <= m1")
    assert empty["status"] == "no_mesh" and empty["error"].startswith("No mesh:") and not (Path(empty["run_dir"]) / "mesh.glb").exists()
    assert (index["batch"]["done"], index["batch"]["no_mesh"], index["batch"]["failed"]) == (1, 1, 3)
    # stderr names every job that gave no mesh, each with its own reason, in the user's words (no class names)
    assert "failed: 'a green sphere' seed 0: injected failure" in err and "failed: 'a purple unicorn' seed 0:" in err
    assert "failed: 'a red torus' seed 0: m2: must be <= m1" in err and "no mesh: 'a red torus' seed 0: No mesh:" in err
    assert "1 done, 1 without a mesh, 3 failed in" in err
    assert not any(name in err + json.dumps(index) for name in ("InjectedFailure", "TargetError", "ConfigError", "RayTaskError"))
    assert (root / "contact_sheet.png").is_file()


def test_variations_as_ray_tasks(local_ray, tmp_path):
    """`generate --variations N --ray-address A`: each seed a batch job on the cluster (cluster/ray_variations.py)."""
    from backend.cluster.ray_variations import run_on_ray
    from backend.cluster.variations import Variations
    from backend.config import GenerationConfig

    config = GenerationConfig(prompt="a red torus", guidance="analytic", device="cpu", steps=4, resolution=16, preview_resolution=16,
                              samples_per_ray=16, encoding="dense", dense_resolution=24, mlp_hidden=0, mesh_resolution=32,
                              preview_every=2, variations=2, seed=3)
    outputs = Variations(config, tmp_path / "v", ray_runner=lambda v: run_on_ray(v, "auto")).run()
    assert [(r["seed"], r["status"]) for r in outputs["variations"]] == [(3, "done"), (4, "done")]
    assert outputs["distinct_targets"] == 1 and (tmp_path / "v" / "variations.png").is_file()
    assert all(Path(r["mesh"]).is_file() and Path(r["run_dir"]).parent == tmp_path / "v" for r in outputs["variations"])
