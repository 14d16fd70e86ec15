"""backend/refine.py: a finished run continued to more steps in a new folder; the run itself never touched."""

import hashlib
import json
import subprocess
import sys

import pytest

from backend.config import ConfigError
from backend.refine import prepare_refine
from backend.schedule import timesteps
from backend.trainer import Trainer

from test_trainer import tiny_config


def digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(steps=8, preview_every=4, checkpoint_every=0), run).run()
    return run


def test_a_refine_runs_steps_n_to_m_of_the_m_step_layout_beside_the_run(finished):
    before = digests(finished)
    config = prepare_refine(finished, 14)
    assert config.steps == 14 and config.refine_from == str(finished.resolve()) and config.run_dir.endswith("run-refine-14")
    starting = Trainer(config, config.run_dir)
    starting.setup(resume=True)
    assert not starting.optimizer.state  # Adam starts afresh: the source's moments were for its last, small t
    starting.close()
    outputs = Trainer(config, config.run_dir).run(resume=True)
    metrics = json.loads((finished.parent / "run-refine-14" / "metrics.json").read_text())
    assert metrics["step"] == list(range(14))  # the run's 8 steps, then 8..13
    assert metrics["t"][8:] == [int(t) for t in timesteps("tp", 14)[8:]]  # t laid out again for 14 steps
    assert metrics["refine"] == {"from": str(finished.resolve()), "steps_before": 8, "steps": 14}
    assert outputs["steps_done"] == 14 and digests(finished) == before  # the run is as it was
    again = Trainer(config, config.run_dir)
    again.setup(resume=True)  # resumed, the refine keeps its own first step: the full rate at step 8
    assert again.lr_decay(8) == 1 and again.lr_decay(13) == pytest.approx(config.lr_final_ratio)
    assert again.optimizer.state  # past its first step a refine resumes with its own moments
    again.close()
    assert prepare_refine(finished, 14).run_dir.endswith("run-refine-14-2")  # a second refine: a new folder


def test_bad_refines_name_the_field_and_write_nothing(finished, tmp_path):
    before = digests(finished)
    for steps in (8, 3, 0):
        with pytest.raises(ConfigError, match="must go past the 8 steps") as error:
            prepare_refine(finished, steps)
        assert error.value.field == "steps"
    (tmp_path / "empty").mkdir()
    (tmp_path / "takes" / "s3").mkdir(parents=True)  # a variations run's root: its seeds are the runs
    (tmp_path / "takes" / "variations.json").write_text("{}")
    (tmp_path / "takes" / "s3" / "checkpoint.pt").write_text("")
    for folder, message in ((tmp_path / "nowhere", "no run folder"), (tmp_path / "empty", "no readable config.json"),
                            (tmp_path / "takes", "takes is a variations run: refine one of its seeds, e.g. .*takes/s3")):
        with pytest.raises(ConfigError, match=message) as error:
            prepare_refine(folder, 20)
        assert error.value.field == "refine_from"
    assert digests(finished) == before and sorted(p.name for p in tmp_path.iterdir()) == ["empty", "run", "takes"]


def test_cli_refine_prints_the_new_folder_and_refuses_fewer_steps(finished):
    def generate(*args):
        return subprocess.run([sys.executable, "-m", "backend", "generate", "--quiet", *args], capture_output=True, text=True, timeout=300)

    refused = generate("--resume", str(finished), "--steps", "8")
    assert refused.returncode == 2 and "steps: a refine must go past the 8 steps" in refused.stderr and "Traceback" not in refused.stderr
    done = generate("--resume", str(finished), "--steps", "10")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].endswith("run-refine-10")
