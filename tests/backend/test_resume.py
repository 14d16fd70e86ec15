"""backend/resume.py through `generate --resume`, as a user types it: a finished run says it is
complete, a different prompt is an error, flags that differ are applied (export, mesh) or named as
ignored."""

import signal

import pytest

from backend import cli

TINY_FLAGS = [
    "--guidance", "analytic", "--device", "cpu", "--steps", "6", "--resolution", "16", "--preview-resolution", "16",
    "--samples-per-ray", "16", "--encoding", "dense", "--dense-resolution", "16", "--mesh-resolution", "24", "--texture-size", "256",
    "--preview-every", "3", "--mesh-threshold", "1", "--sdf-after", "1",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    handler = signal.getsignal(signal.SIGINT)  # generate installs its own Ctrl-C handler
    run_dir = tmp_path_factory.mktemp("resume") / "run"
    assert cli.main(["generate", "a red torus", *TINY_FLAGS, "--run-dir", str(run_dir), "--quiet"]) == 0
    yield run_dir
    signal.signal(signal.SIGINT, handler)


def generate(capsys, *args):
    status = cli.main(["generate", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out, err


def test_resuming_a_finished_run_says_it_is_complete(finished_run, capsys):
    status, out, err = generate(capsys, "--resume", str(finished_run))
    assert status == 0 and out.strip() == str(finished_run)
    assert err.strip().splitlines()[-1].startswith("the run was already complete (6 of 6 steps): nothing trained, its mesh extracted again")
    assert "6/6" in err and "0/6" not in err  # the bar starts at the checkpoint's step, not behind a 0/6


def test_a_different_prompt_is_an_error_not_the_other_run(finished_run, capsys):
    status, out, err = generate(capsys, "a blue sphere", "--resume", str(finished_run))
    assert status == 2 and out == ""
    assert "that run's prompt is 'a red torus', not 'a blue sphere'. Leave the prompt out to continue it" in err


def test_flags_that_differ_are_applied_when_safe_else_named_as_ignored(finished_run, capsys):
    status, out, err = generate(capsys, "a red torus", "--resume", str(finished_run), "--lr", "0.5", "--schedule", "uniform",
                                "--export", "glb,ply", "--quiet")
    assert status == 0, err
    assert "note: applied to the resumed run: --export glb,ply" in err
    assert ("note: ignored, a resumed run trains on with its own config: --schedule uniform (the run keeps tp); "
            "--lr 0.5 (the run keeps 0.05)") in err
    assert (finished_run / "mesh.ply").is_file() and "mesh.ply" in err.strip().splitlines()[-1]
