"""backend/run_setup.py: the device (cuda, mps, cpu), what auto guidance means on each, TF32 and fused Adam."""

import pytest
import torch

from backend.config import ConfigError, GenerationConfig
from backend.run_setup import configure_device, make_adam, resolve_device, resolve_guidance


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
    assert configure_device(torch.device("cuda")) == {"tf32": tf32}
    assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
    assert configure_device(torch.device("cpu")) == {"tf32": False}


def test_adam_is_fused_where_torch_has_the_kernel():
    parameter = torch.nn.Parameter(torch.zeros(3))
    assert make_adam([{"params": [parameter], "lr": 0.1}], torch.device("cpu")).defaults["fused"] is True
