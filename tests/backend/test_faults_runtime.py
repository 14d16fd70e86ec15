"""Issue 6, faults during a run: SIGKILL, SIGINT/cancel, non-finite losses, CUDA out of memory.
The process fails cleanly or goes on, and the run folder stays consistent."""

import io
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import trimesh
from PIL import Image

from backend import cli
from backend.config import GenerationConfig
from backend.serve.server import Server
from backend.trainer import Trainer

from test_trainer import tiny_config

REPO = Path(__file__).resolve().parents[2]
CLI_FLAGS = [
    "--guidance", "analytic", "--device", "cpu", "--resolution", "16", "--preview-resolution", "16", "--samples-per-ray", "16",
    "--encoding", "dense", "--dense-resolution", "16", "--mesh-resolution", "24", "--texture-size", "256",
    "--mesh-threshold", "1", "--quiet",
]


def start_cli(*args, stderr):
    return subprocess.Popen([sys.executable, "-m", "backend", "generate", "a red torus", *CLI_FLAGS, *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=stderr, text=True)


def wait_for(condition, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the run ended before the fault could be injected"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def visible_files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file() and not p.name.startswith(".")}


@pytest.fixture
def cli_generate(capsys):
    handler = signal.getsignal(signal.SIGINT)

    def run(*args):
        """generate --resume DIR, or generate "a red torus" with CLI_FLAGS and `args`."""
        argv = list(args) if args[0] == "--resume" else ["a red torus", *CLI_FLAGS, *args]
        status = cli.main(["generate", *argv, "--quiet"])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return status, out, err

    yield run
    signal.signal(signal.SIGINT, handler)


# ---------------------------------------------------------------------- SIGKILL, then --resume
def test_sigkill_leaves_only_complete_files_and_resume_reaches_the_same_step_count(tmp_path, cli_generate):
    run_dir, steps = tmp_path / "run", 24
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = start_cli("--steps", str(steps), "--preview-every", "2", "--checkpoint-every", "2", "--run-dir", str(run_dir), stderr=stderr)
        try:
            wait_for(lambda: (run_dir / "checkpoint.pt").exists() and any((run_dir / "previews").glob("*.png")), proc)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(30)
    # What a killed run leaves: each artifact complete; at most hidden temporary files beside them.
    files = visible_files(run_dir)
    assert {"config.json", "checkpoint.pt", "log.txt"} <= files and files <= {"config.json", "checkpoint.pt", "log.txt", "metrics.json"} | {
        f"previews/step_{s:05d}.png" for s in range(2, steps + 1, 2)}, files
    config = GenerationConfig.from_dict(json.loads((run_dir / "config.json").read_text())).validate()
    killed_at = torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"]
    assert config.steps == steps and 2 <= killed_at < steps
    for png in (run_dir / "previews").glob("step_*.png"):
        Image.open(png).load()
    (run_dir / ".checkpoint.deadbeef.tmp.pt").write_bytes(b"half")  # as if killed inside a write

    status, stdout, stderr = cli_generate("--resume", str(run_dir))
    assert status == 0 and stdout.strip() == str(run_dir), stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step"] == list(range(steps))  # the checkpoint's steps, then the rest: no step twice, none lost
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == steps
    assert (run_dir / "mesh.glb").is_file() and not [p for p in run_dir.rglob(".*") if p.is_file()]


# ---------------------------------------------------------------------- SIGINT and cancel
def test_sigint_mid_run_writes_the_mesh_of_the_current_state(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_cli("--steps", "5000", "--preview-every", "2", "--checkpoint-every", "0", "--run-dir", str(run_dir),
                     stderr=subprocess.PIPE)
    try:
        wait_for(lambda: any((run_dir / "previews").glob("*.png")), proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    assert "stopped early" in stderr and stdout.strip().splitlines()[-1] == str(run_dir)
    step = torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"]
    assert 2 <= step < 5000 and len(json.loads((run_dir / "metrics.json").read_text())["step"]) == step
    assert len(trimesh.load(run_dir / "mesh.glb", force="mesh").faces) > 0


def test_cancel_before_the_first_step_still_writes_checkpoint_and_mesh(tmp_path):
    stop = threading.Event()
    stop.set()  # as a cancel that arrives while the run is still being set up
    outputs = Trainer(tiny_config(), tmp_path / "run", stop=stop).run()
    assert outputs["stopped_at"] == 0 and outputs["steps_done"] == 0
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["step"] == 0
    assert Path(outputs["mesh_glb"]).is_file()


def test_ctrl_c_before_the_run_began_is_one_line_and_writes_nothing(cli_generate, tmp_path, monkeypatch):
    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr("backend.run_setup.preflight", interrupted)
    status, stdout, stderr = cli_generate("--steps", "4", "--out", str(tmp_path / "runs"))
    assert (status, stdout, stderr) == (130, "", "error: interrupted\n") and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------- non-finite losses
def poison(trainer, bad_calls: dict[int, float]):
    """Multiply the guidance's losses by bad_calls[i] (nan, inf) on its i-th call."""
    losses, calls = trainer.guidance.losses, []

    def poisoned(rgb, t, view):
        calls.append(None)
        out = losses(rgb, t, view)
        value = bad_calls.get(len(calls) - 1)
        return out if value is None else {name: loss * value for name, loss in out.items()}

    trainer.guidance.losses = poisoned


def test_a_non_finite_step_leaves_field_and_adam_state_as_they_were(tmp_path):
    trainer = Trainer(tiny_config(), tmp_path / "run")
    trainer.setup(False)
    bad = {1: float("inf"), 3: -float("inf"), 5: float("nan")}
    poison(trainer, bad)
    grid = trainer.field.encoding.grid
    for step in range(7):
        before = [grid.detach().clone()] + [tensor.clone() for tensor in trainer.optimizer.state[grid].values()]
        loss = trainer.train_step(step)
        after = [grid] + list(trainer.optimizer.state[grid].values())
        if step in bad:  # skipped: the field and Adam's moments are the last good step's
            assert loss is None and all(torch.equal(a, b) for a, b in zip(after, before, strict=True)), step
        else:
            assert loss is not None and not torch.equal(grid, before[0]), step
    assert torch.isfinite(grid).all()


def test_repeated_non_finite_steps_stop_the_cli_with_an_error_and_keep_outputs(cli_generate, tmp_path, monkeypatch):
    monkeypatch.setattr("backend.trainer.MAX_BAD_STEPS", 3)
    real_setup = Trainer.setup

    def setup(self, resume):
        start = real_setup(self, resume)
        poison(self, {1: float("nan"), 2: float("nan")} | dict.fromkeys(range(4, 1000), float("nan")))
        return start

    monkeypatch.setattr(Trainer, "setup", setup)
    run_dir = tmp_path / "run"
    status, _, stderr = cli_generate("--steps", "20", "--preview-every", "2", "--checkpoint-every", "2", "--run-dir", str(run_dir))
    assert status == 1 and "3 steps in a row had a non-finite loss (last at step 6)" in stderr and "Outputs so far are kept" in stderr
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert all(torch.isfinite(tensor).all() for tensor in state["field"].values())  # the last good state, saved
    assert json.loads((run_dir / "metrics.json").read_text())["skipped_steps"] == [1, 2, 4, 5, 6]  # two, then a good one: on
    assert (run_dir / "previews" / "step_00006.png").is_file()


# ---------------------------------------------------------------------- out of memory (simulated)
CPU_ALLOCATOR = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 12884901888 bytes. Error code 12"


def out_of_memory_at(step, error=lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")):
    """Trainer.queue_step (what the loop runs) raising `error()` at `step`."""
    real_step = Trainer.queue_step

    def queue_step(self, index):
        if index == step:
            raise error()
        return real_step(self, index)

    return queue_step


def test_out_of_memory_suggests_low_vram_and_keeps_a_checkpoint(cli_generate, tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "queue_step", out_of_memory_at(3))
    run_dir = tmp_path / "run"
    status, stdout, stderr = cli_generate("--steps", "10", "--preview-every", "0", "--checkpoint-every", "0", "--run-dir", str(run_dir))
    assert status == 1 and stdout == ""
    assert "CUDA ran out of GPU memory at step 3" in stderr and "--low-vram" in stderr and "lower --resolution" in stderr
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == 3


@pytest.mark.parametrize("error", [lambda: RuntimeError(CPU_ALLOCATOR), lambda: MemoryError()])
def test_a_cpu_allocation_failure_mid_run_is_the_out_of_memory_error_with_its_checkpoint(cli_generate, tmp_path, monkeypatch, error):
    monkeypatch.setattr(Trainer, "queue_step", out_of_memory_at(4, error))
    run_dir = tmp_path / "run"
    status, stdout, stderr = cli_generate("--steps", "10", "--preview-every", "0", "--checkpoint-every", "0", "--run-dir", str(run_dir))
    assert status == 1 and stdout == "" and "Traceback" not in stderr
    assert "The CPU ran out of memory at step 4 (resolution 16" in stderr and "lower --resolution" in stderr
    assert "keeps a checkpoint of step 4" in stderr
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert state["step"] == 4 and state["metrics"]["step"] == [0, 1, 2, 3]


def test_out_of_memory_reaches_the_add_on_as_an_error_event_with_the_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "queue_step", out_of_memory_at(1))
    out = io.StringIO()
    server = Server(out, "cpu")
    server.generate("r", {**tiny_config().to_dict(), "run_dir": str(tmp_path / "run")})
    server.run.thread.join(60)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    error = events[-1]
    assert (error["type"], error["id"], error["code"]) == ("error", "r", "out_of_memory")
    assert 'Extra Config {"low_vram": true}' in error["hint"] and "--" not in error["hint"] and server.run.finished  # panel words
