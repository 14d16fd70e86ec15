"""backend/memory.py: a run that cannot fit is refused before it starts, with the numbers; one that runs out
anyway ends in the out-of-memory error with its checkpoint. The real cases run under an address-space limit
(ulimit -v) in a subprocess: the CPU allocator's own failure, not a simulated one."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backend import wording
from backend.config import GenerationConfig, preset_for
from backend.errors import TrainingError
from backend.guidance.make_model import make_model
from backend.memory import (
    GIB,
    check_memory,
    count_parameters,
    estimate_memory,
    memory_that_ran_out,
    out_of_memory_error,
)

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


def cpu_config(**changes):
    return GenerationConfig.from_dict({**preset_for("cpu"), "prompt": "a red torus", "device": "cpu", **changes}).validate()


def test_the_estimate_grows_with_the_pixels_and_samples():
    small, large = (estimate_memory(cpu_config(resolution=r), CPU, "analytic") for r in (64, 512))
    assert large.parts["training step"] == 64 * small.parts["training step"]
    assert estimate_memory(cpu_config(samples_per_ray=128), CPU, "analytic").parts["training step"] == 2 * small.parts["training step"]
    assert small.parts["field and Adam"] == 16 * 4 * 96**3 and small.total < 1 * GIB  # the CPU preset fits anywhere


def test_a_run_that_cannot_fit_is_refused_with_the_numbers(monkeypatch):
    monkeypatch.setattr("backend.memory.available_memory", lambda device: (2 * GIB, "the container's memory limit"))
    config = cpu_config(resolution=512)
    with pytest.raises(TrainingError) as info:
        check_memory(config, CPU, "analytic")
    error = info.value
    needed = estimate_memory(config, CPU, "analytic").total
    assert error.code == "out_of_memory" and f"needs about {needed / GIB:.1f} GB" in str(error)
    assert "the container's memory limit leaves 2.0 GB; it was not started" in str(error)
    hint = wording.cli(error.hint)  # as the CLI prints it (the panel names the field instead)
    fits = int(hint.split("would fit")[0].split("--resolution ")[-1])
    assert 16 <= fits < 512 and fits % 8 == 0
    check_memory(config.replace(resolution=fits), CPU, "analytic")  # what the hint offers does fit
    with pytest.raises(TrainingError):
        check_memory(config.replace(resolution=fits + 8), CPU, "analytic")
    check_memory(config.replace(extra={"memory_check": False}), CPU, "analytic")  # the way out of a wrong estimate


def test_sd_weights_are_counted_from_the_safetensors_headers(tmp_path):
    from diffusers import UNet2DConditionModel

    folder = make_model("tiny", tmp_path / "tiny")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    assert count_parameters(folder / "unet") == sum(p.numel() for p in unet.parameters())
    config = cpu_config(guidance="sd", model=str(folder), precision="bf16")
    parts = estimate_memory(config, CPU, "sd", folder).parts
    assert parts["model weights"] == 2 * (count_parameters(folder / "unet") + count_parameters(folder / "vae"))


def test_what_counts_as_running_out():
    assert memory_that_ran_out(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")) == "cuda"
    assert memory_that_ran_out(RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory")) == "cpu"
    assert memory_that_ran_out(RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 bytes")) == "cpu"
    assert memory_that_ran_out(RuntimeError("MPS backend out of memory (MPS allocated: 17 GB)")) == "mps"
    assert memory_that_ran_out(MemoryError()) == "cpu"
    assert memory_that_ran_out(RuntimeError("shape mismatch")) is None and memory_that_ran_out(ValueError("x")) is None
    error = out_of_memory_error(cpu_config(), "cpu", 7, 7)
    assert "The CPU ran out of memory at step 7" in str(error) and "checkpoint of step 7" in error.hint and "--low-vram" not in error.hint


LIMITED = """
import json, resource, sys
from backend.config import GenerationConfig, preset_for
from backend.errors import TrainingError
from backend.run_setup import preflight
from backend.trainer import Trainer
config = GenerationConfig.from_dict({**preset_for("cpu"), "prompt": "a red torus", "device": "cpu", "resolution": 256,
                                     "albedo_warmup": 0.0, "extra": json.loads(sys.argv[2])}).validate()
status = open("/proc/self/status").read()
mapped = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (mapped + ROOM, resource.RLIM_INFINITY))  # ulimit -v, now that torch is loaded
try:
    preflight(config)
    Trainer(config, sys.argv[1]).run()
except TrainingError as exc:
    print(json.dumps({"code": exc.code, "message": str(exc), "hint": exc.hint}))
""".replace("ROOM", str(600 * 2**20))  # a 256² step of the CPU preset needs about 1 GB


def run_limited(tmp_path, extra):
    """A 256² CPU run (normals from the first step) in a process that may map 600 MB more than torch and the backend take."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, "-c", LIMITED, str(tmp_path / "run"), json.dumps(extra)], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the address space from /proc (Linux)")
def test_under_a_memory_limit_a_run_too_large_is_refused_before_it_starts(tmp_path):
    error = run_limited(tmp_path, {})
    assert error["code"] == "out_of_memory" and "ulimit -v" in error["message"] and "it was not started" in error["message"]
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the address space from /proc (Linux)")
def test_under_a_memory_limit_the_allocator_failing_mid_run_keeps_a_checkpoint(tmp_path):
    """The CPU allocator's own `DefaultCPUAllocator: can't allocate memory`, not a simulated one."""
    error = run_limited(tmp_path, {"memory_check": False})
    match = re.fullmatch(r"The CPU ran out of memory at step (\d+) \(resolution 256, batch 1, 64 samples per ray\)\.", error["message"])
    assert error["code"] == "out_of_memory" and match, error
    step = int(match[1])
    assert f"checkpoint of step {step}" in error["hint"] and "lower [[resolution]]" in error["hint"]
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["step"] == step
