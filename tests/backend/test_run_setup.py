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
    assert configure_device(torch.device("cuda")) == {"tf32": tf32, "keep_freed_memory": False, "flush_denormal": False}
    assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
    assert configure_device(torch.device("cpu"))["tf32"] is False


FREE_28MB = """
import os, sys
import torch
from backend.run_setup import keep_freed_memory
if sys.argv[1] == "kept":
    keep_freed_memory()
def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
block = torch.ones(7_000_000)  # 28 MB, as a voxel grid's gradient in the threaded lookup
before = resident_mb()
del block
print(before - resident_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_step_sized_block_stays_in_the_process():
    """By default glibc maps a 28 MB block on its own and unmaps it when freed, so the next step
    page-faults it in again; kept, it returns to the heap and is reused."""
    def released_mb(mode: str) -> float:
        result = subprocess.run([sys.executable, "-c", FREE_28MB, mode], capture_output=True, text=True, timeout=120,
                                cwd=Path(__file__).resolve().parents[2])
        assert result.returncode == 0, result.stderr[-2000:]
        return float(result.stdout.split()[-1])

    assert keep_freed_memory() is True
    assert released_mb("default") > 20 and released_mb("kept") < 2


def test_cpu_flushes_denormals_to_zero():
    features = configure_device(torch.device("cpu"))
    if not features["flush_denormal"]:
        pytest.skip("this CPU has no flush-to-zero mode")
    assert float(torch.tensor([1e-39]) * 1) == 0.0 and float(torch.tensor([1e-37]) * 1) > 0  # below float32's normal range


def test_adam_is_fused_where_torch_has_the_kernel():
    parameter = torch.nn.Parameter(torch.zeros(3))
    assert make_adam([{"params": [parameter], "lr": 0.1}], torch.device("cpu")).defaults["fused"] is True
