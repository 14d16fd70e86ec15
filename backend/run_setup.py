"""What a run needs before its loop: the device, the guidance, and cheap checks of the config."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import numpy as np
import torch

from .adam import FieldAdam
from .config import ConfigError, GenerationConfig

GPU_TYPES = ("cuda", "mps")  # the devices where `auto` guidance is Stable Diffusion


def mps_available() -> bool:
    """Whether an Apple GPU is usable (torch built with MPS, macOS 12.3 or later)."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str) -> torch.device:
    """The torch device of a config's `device`: auto is cuda, else mps, else cpu."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was asked for but no CUDA device is available; use [[device=cpu]]")
    if name == "mps" and not mps_available():
        raise ConfigError("device", "mps was asked for but no Apple GPU is available (a torch with MPS, macOS 12.3+); use [[device=cpu]]")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    return torch.device(name)


def resolve_guidance(config: GenerationConfig, device: torch.device) -> str:
    if config.guidance != "auto":
        return config.guidance
    return "sd" if device.type in GPU_TYPES else "analytic"


FUSED_ADAM_DEVICES = ("cpu", "cuda", "mps")  # where torch has a fused Adam kernel (it takes `found_inf`)


def configure_device(device: torch.device) -> dict[str, bool]:
    """Per-process settings for fast steps on `device`; returns what was switched on.

    TF32 matmuls and convolutions on Ampere and newer NVIDIA GPUs (compute capability 8+): 10-bit
    mantissas inside fp32 matmuls, several times faster, far below what SDS's noisy gradients notice.
    On the CPU, freed memory stays in the process (keep_freed_memory), and denormal floats are
    flushed to zero: a signed distance 1.3 voxels-worth of beta outside the surface puts
    sigmoid(-s/beta) and its gradient below 1.2e-38, where x86 arithmetic is many times slower (a
    CPU-preset step from an init mesh, whose far field is exact distances: 0.137 -> 0.114 s)."""
    features = {"tf32": False, "keep_freed_memory": False, "flush_denormal": False}
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        features["tf32"] = True
    if device.type == "cpu":
        features["keep_freed_memory"] = keep_freed_memory()
        np.finfo(np.float32), np.finfo(np.float64)  # numpy's limits read before: with flushing on it warns
        features["flush_denormal"] = torch.set_flush_denormal(True)
    return features


KEEP_BYTES = 1 << 30  # freed blocks up to this size stay in the heap; a heap top this large is not trimmed
MMAP_THRESHOLD_MAX = 32 << 20  # what older glibc accepts at most (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed memory instead of handing it back to the OS (mallopt
    M_MMAP_THRESHOLD and M_TRIM_THRESHOLD); returns whether it could.

    A CPU step allocates and frees ~150 MB of tensors (a voxel grid's gradient is 14 MB, twice over
    for the threaded lookup's two batch items). By default blocks that large are mmap'd and unmapped
    again, so every step page-faults them back in: the zero-fill of one 28 MB gradient took 58 ms.
    Kept, a CPU-preset step measured 15-20 % faster on 2 cores with the same peak RSS (the memory is
    reused, not added to). Linux with glibc only; elsewhere nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    kept = bool(mallopt(m_mmap_threshold, KEEP_BYTES)) or bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD_MAX))
    return kept and bool(mallopt(m_trim_threshold, 2 * KEEP_BYTES - 1))


def make_adam(groups: list[dict], device: torch.device) -> FieldAdam:
    """The field's Adam (adam.py): fused (one kernel for every parameter; on the CPU 5x faster than the
    default for a 96^3 grid) wherever torch has the kernel, which also lets a non-finite step be skipped
    on the device (trainer.py)."""
    return FieldAdam(groups, betas=(0.9, 0.99), eps=1e-15, fused=device.type in FUSED_ADAM_DEVICES)


def preflight(config: GenerationConfig, model: bool = True) -> None:
    """Checks to run before making a run folder: the config, the analytic prior's words, (with `model`)
    the SD model, which a hub id may have to download first: the server leaves that to the run's own
    thread (find_model, then check_memory), so a download never holds up its requests; and memory: a
    run whose estimated peak does not fit in the memory available is refused (memory.py)."""
    config.validate()
    if config.init_mesh:
        from .init_mesh import load_init_mesh

        load_init_mesh(config.init_mesh)  # missing, empty, not a mesh: ConfigError("init_mesh", ...)
    device = resolve_device(config.device)
    kind = resolve_guidance(config, device)
    if kind == "analytic":
        from .guidance.targets import TargetError, load_targets

        try:
            load_targets(config.prompt, config.targets)  # raises TargetError naming unknown words
        except TargetError as exc:
            if config.targets:  # the targets, not the prompt, are what to fix
                raise ConfigError("targets", str(exc)) from None
            raise
    model_folder = find_model(config) if kind == "sd" and model else None
    from .memory import check_memory

    check_memory(config, device, kind, model_folder)  # TrainingError("out_of_memory") with the numbers


def find_model(config: GenerationConfig, on_progress=None, stop=None):
    """The SD model's local folder, checked; a missing folder, a wrong layout, no network, a failed
    or stopped download (code "cancelled") are each a TrainingError. on_progress(done, total) bytes."""
    from .guidance.stable_diffusion import check_layout, resolve_model_folder

    folder = resolve_model_folder(config.model, on_progress, stop)
    check_layout(folder)
    return folder


def build_guidance(config: GenerationConfig, kind: str, device: torch.device):
    """The guidance object for `kind`, on `device`."""
    if kind == "analytic":
        from .guidance.analytic import AnalyticGuidance
        from .guidance.target_volumes import TargetSet
        from .guidance.targets import library, load_targets, read_prompt
        from .schedule import scaled_linear_alphas_cumprod

        if config.background == "learned":
            raise ConfigError("background", "the analytic prior needs a known background: random, white or black")
        scale = 1.0 if config.guidance_scale < 0 else config.guidance_scale
        targets = TargetSet(load_targets(config.prompt, config.targets), device=device)
        unconditional = TargetSet(library(), device=device) if scale != 1.0 else None
        alphas_cumprod = torch.tensor(scaled_linear_alphas_cumprod(), dtype=torch.float32, device=device)
        guidance = AnalyticGuidance(targets, alphas_cumprod, scale, unconditional)
        guidance.notes = [] if config.targets else read_prompt(config.prompt)[1]  # how the prompt was read: the run says it
        return guidance
    from .guidance.stable_diffusion import build_sd_guidance

    return build_sd_guidance(config, device)
