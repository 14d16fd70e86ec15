"""backend/run_setup.py: the device (cuda, mps, cpu), what auto guidance means on each, TF32 and fused Adam."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backend.config import ConfigError, GenerationConfig
from backend.run_setup import configure_device, keep_freed_memory, make_adam, resolve_device, resolve_guidance


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("backend.run_setup.mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps") == resolve_device("mps")
    monkeypatch.setattr("backend.run_setup.mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device: mps was asked for but no Apple GPU"):
        resolve_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_auto_guidance_is_stable_diffusion_on_either_gpu():
    config = GenerationConfig(prompt="a cat")
    assert [resolve_guidance(config, torch.device(d)) for d in ("cuda", "mps", "cpu")] == ["sd", "sd", "analytic"]
    assert resolve_guidance(config.replace(guidance="analytic"), torch.device("mps")) == "analytic"
    assert GenerationConfig(prompt="x", device="mps", precision="bf16", hashgrid_dtype="fp16").validate()
    with pytest.raises(ConfigError, match="hashgrid_dtype: must be one of fp32, fp16"):
        GenerationConfig(prompt="x", hashgrid_dtype="bf16").validate()


@pytest.fixture
def tf32_flags():
    """torch's TF32 switches, off for the test and restored after (they are module properties monkeypatch cannot undo)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("capability, tf32", [((8, 0), True), ((7, 5), False)])
def test_tf32_on_ampere_and_newer(monkeypatch, tf32_flags, capability, tf32):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert configure_device(torch.device("cuda")) == {"tf32": tf32, "keep_freed_memory": False}
    assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
    assert configure_device(torch.device("cpu"))["tf32"] is False


STEPS_FAULTS = """
import resource, sys, tempfile
import backend.run_setup
from backend.config import GenerationConfig, preset_for
from backend.trainer import Trainer
if sys.argv[1] == "default":
    backend.run_setup.keep_freed_memory = lambda: False
config = GenerationConfig(prompt="a red torus", device="cpu", **{**preset_for("cpu"), "resolution": 32, "samples_per_ray": 32})
trainer = Trainer(config, tempfile.mkdtemp())
trainer.setup()
for step in range(3):
    trainer.train_step(step)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for step in range(3, 6):
    trainer.train_step(step)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_cpu_steps_reuse_freed_memory_instead_of_faulting_it_back():
    """Three CPU-preset steps (96^3 grid) page-fault their tensors back in when malloc returns them to
    the OS (measured ~51k faults, 200 MB), and hardly at all once configure_device keeps them (~3k)."""
    def faults(mode: str) -> int:
        result = subprocess.run([sys.executable, "-c", STEPS_FAULTS, mode], capture_output=True, text=True, timeout=300,
                                cwd=Path(__file__).resolve().parents[2])
        assert result.returncode == 0, result.stderr[-2000:]
        return int(result.stdout.split()[-1])

    assert keep_freed_memory() is True
    assert faults("kept") * 5 < faults("default")


def test_adam_is_fused_where_torch_has_the_kernel():
    parameter = torch.nn.Parameter(torch.zeros(3))
    assert make_adam([{"params": [parameter], "lr": 0.1}], torch.device("cpu")).defaults["fused"] is True
