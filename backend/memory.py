"""Memory: what a run will need, what the machine has, and what running out looks like (docs/ARCHITECTURE.md §4.6).

Before a run starts, `check_memory` compares an estimate of its peak with the memory it may still
take, and refuses, with both numbers and the largest resolution that fits, a run that cannot fit:
a 512² render on a CPU otherwise dies mid-run in `DefaultCPUAllocator: can't allocate memory`.

    peak ≈ step + field + guidance + mesh
    step     = STEP_BYTES_PER_SAMPLE[encoding] · B · resolution² · samples_per_ray
    field    = 4 · 4 B · parameters (value, gradient and Adam's two moments, float32)
    guidance = analytic: its target volumes; sd: the UNet, VAE and text encoder weights in the run's dtype
    mesh     = MESH_BYTES_PER_VOXEL · mesh_resolution³

STEP_BYTES_PER_SAMPLE is measured (the peak RSS a training step adds over the state after setup,
with normals on every step, on this repository's CPU preset and on the hash grid with a 64-wide
MLP). It is the same tensors on a GPU; what is not counted there is the SD UNet's and VAE's
activations (not measured yet), so on a GPU the estimate is a floor and refuses only runs that
surely cannot fit. `{"memory_check": false}` in `extra` skips the check.

A run that runs out anyway — CUDA's OutOfMemoryError, the CPU allocator's RuntimeError, MPS's,
Python's MemoryError — ends as `TrainingError("out_of_memory")` with a checkpoint of the last
complete step (trainer.py) and what to lower (`out_of_memory_error`).
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import GenerationConfig
from .errors import TrainingError

GIB = 2**30
# Peak bytes a training step adds per ray sample, measured on the CPU (lambertian shading; see the docstring).
STEP_BYTES_PER_SAMPLE = {"dense": 360, "hashgrid": 2600}
TARGET_VOLUME_BYTES = 128**3 * 7 * 4 * 2  # one analytic geometry: a 128³ grid of up to 7 channels, plus its build
MESH_BYTES_PER_VOXEL = 24  # the R³ density grid, its blurred copy, the inside mask, marching cubes' work
OUT_OF_MEMORY_MARKERS = {  # what an allocation failure's RuntimeError says -> the memory that ran out
    "DefaultCPUAllocator: can't allocate memory": "cpu",  # Linux and macOS
    "DefaultCPUAllocator: not enough memory": "cpu",  # Windows
    "MPS backend out of memory": "mps",
    "CUDA out of memory": "cuda",
}
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U8": 1, "BOOL": 1}


@dataclass
class MemoryEstimate:
    parts: dict[str, int] = field(default_factory=dict)  # name -> bytes
    counted_all: bool = True  # False where a part is known to be missing (SD activations on a GPU)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        return ", ".join(f"{name} {gigabytes(size)}" for name, size in self.parts.items() if size >= 0.01 * GIB)


def gigabytes(size: float) -> str:
    return f"{size / GIB:.1f} GB" if size >= 0.1 * GIB else f"{size / 2**20:.0f} MB"


# ---------------------------------------------------------------------- the estimate
def estimate_memory(config: GenerationConfig, device: torch.device, kind: str, model_folder: Path | None = None) -> MemoryEstimate:
    """What a run of `config` on `device` with guidance `kind` will hold at its peak, by part."""
    encoding = config.encoding if config.encoding != "auto" else "hashgrid"
    samples = config.batch_size * config.resolution**2 * config.samples_per_ray
    estimate = MemoryEstimate()
    estimate.parts["training step"] = STEP_BYTES_PER_SAMPLE[encoding] * samples
    estimate.parts["field and Adam"] = 16 * field_parameters(config, encoding)
    if kind == "analytic":
        estimate.parts["analytic targets"] = TARGET_VOLUME_BYTES * (2 if config.guidance_scale not in (-1.0, 1.0) else 1)
    elif model_folder is not None:
        from .guidance.stable_diffusion import resolve_dtype

        bytes_per_value = torch.empty((), dtype=resolve_dtype(config.precision, device)).element_size()
        estimate.parts["model weights"] = sum(bytes_per_value * count_parameters(model_folder / part) for part in ("unet", "vae"))
        estimate.parts["text encoder"] = 4 * count_parameters(model_folder / "text_encoder")  # fp32, once, on the CPU
        estimate.counted_all = False  # the UNet's and VAE's activations are not measured yet
    estimate.parts["mesh"] = MESH_BYTES_PER_VOXEL * config.mesh_resolution**3
    return estimate


def field_parameters(config: GenerationConfig, encoding: str) -> int:
    """How many float32 parameters the field will have (encoding.py's sizes, without building it)."""
    if encoding == "dense":
        return (4 if config.mlp_hidden == 0 else 8) * config.dense_resolution**3
    from .encoding import hashgrid_table_values

    table = hashgrid_table_values()
    return table + config.mlp_hidden * (32 + 4 + 1) + 4


def count_parameters(folder: Path) -> int:
    """Values stored in a diffusers component folder's safetensors files (from their headers: nothing is loaded)."""
    total = 0
    for path in folder.glob("*.safetensors"):
        try:
            with open(path, "rb") as handle:
                header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        except (OSError, ValueError):
            continue  # unreadable: the load itself will say so
        total += sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")
    return total


# ---------------------------------------------------------------------- what there is
def available_memory(device: torch.device) -> tuple[int | None, str]:
    """Bytes this process may still allocate on `device`, and what limits it; (None, "") when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, "the GPU's free memory"
    if device.type == "mps":
        return torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory(), "the Apple GPU's recommended working set"
    limits = [limit for limit in (_meminfo_available(), _cgroup_room(), _rlimit_room()) if limit[0] is not None]
    return min(limits) if limits else (None, "")


def total_memory(device: torch.device) -> int | None:
    """The device's memory in bytes (a GPU's own, or the machine's RAM)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "mps":
        return torch.mps.recommended_max_memory()
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # Windows
        return None


def _meminfo_available() -> tuple[int | None, str]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "the machine's available memory"
    except (OSError, ValueError, IndexError):
        pass
    return None, ""


def _cgroup_room() -> tuple[int | None, str]:
    """A container's limit (cgroup v2 memory.max, or v1's limit_in_bytes) less what it uses."""
    for limit_file, usage_file in (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            limit = Path("/sys/fs/cgroup", limit_file).read_text().strip()
            usage = int(Path("/sys/fs/cgroup", usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return int(limit) - usage, "the container's memory limit"
    return None, ""


def _rlimit_room() -> tuple[int | None, str]:
    """An address-space or data limit (ulimit -v, -d) less what this process has mapped."""
    try:
        import resource

        status = Path("/proc/self/status").read_text()
    except (ImportError, OSError):
        return None, ""
    rooms = []
    for limit, field_name, what in ((resource.RLIMIT_AS, "VmSize", "ulimit -v"), (resource.RLIMIT_DATA, "VmData", "ulimit -d")):
        soft, _ = resource.getrlimit(limit)
        used = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith(field_name + ":")), None)
        if soft != resource.RLIM_INFINITY and used is not None:
            rooms.append((soft - used, f"the process's memory limit ({what})"))
    return min(rooms) if rooms else (None, "")


def device_peak_memory(device: torch.device) -> tuple[float, str]:
    """(MiB, what it is) of the most memory this process has held on `device` so far: CUDA's peak allocation,
    what the MPS driver holds now (MPS keeps no peak), or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    if device.type == "mps":
        return torch.mps.driver_allocated_memory() / 2**20, "mps_driver_allocated"
    return process_peak_rss_mb() or 0.0, "process_max_rss"


def process_peak_rss_mb() -> float | None:
    """This process's peak resident memory in MiB (None where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS: bytes; Linux: KiB


# ---------------------------------------------------------------------- before and after
def check_memory(config: GenerationConfig, device: torch.device, kind: str, model_folder: Path | None = None) -> MemoryEstimate:
    """Refuse (TrainingError "out_of_memory", with the numbers) a run whose estimated peak exceeds what is free."""
    estimate = estimate_memory(config, device, kind, model_folder)
    if config.extra.get("memory_check", True) is False:
        return estimate
    available, limit = available_memory(device)
    if available is None or estimate.total <= available:
        return estimate
    fixed = estimate.total - estimate.parts["training step"]
    per_pixel = estimate.parts["training step"] / config.resolution**2
    fits = 8 * math.floor(math.sqrt(max(available - fixed, 0) / per_pixel) / 8)
    lower = f"[[resolution={fits}]] would fit" if fits >= 16 else "even [[resolution=16]] would not fit"
    where = "GPU " if device.type != "cpu" else ""
    raise TrainingError(
        "out_of_memory",
        f"this run needs about {gigabytes(estimate.total)} of {where}memory ({estimate.describe()}), but {limit} leaves "
        f"{gigabytes(available)}; it was not started.",
        f"Memory grows with the square of [[resolution]] ({config.resolution} now; {lower}) and with [[samples_per_ray]] "
        f"({config.samples_per_ray}) and the batch. Lower them, or close other programs. The estimate can be skipped with "
        '{"memory_check": false} in Extra Config.',
    )


def memory_that_ran_out(exc: BaseException) -> str | None:
    """Which memory an allocation failure `exc` ran out of: "cuda", "mps" or "cpu"; None if it is no allocation failure."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "cuda"
    if isinstance(exc, MemoryError):
        return "cpu"
    text = str(exc) if isinstance(exc, RuntimeError) else ""
    for marker, memory in OUT_OF_MEMORY_MARKERS.items():
        if marker in text:
            return memory
    return None


def out_of_memory_error(config: GenerationConfig, memory: str, step: int | None, kept: int | None) -> TrainingError:
    """The error of a run whose `memory` ("cuda", "mps", "cpu") ran out at `step` (None: while setting up),
    with a checkpoint of step `kept` (None: none)."""
    where = "while setting up (loading the model)" if step is None else f"at step {step}"
    shape = f"(resolution {config.resolution}, batch {config.batch_size}, {config.samples_per_ray} samples per ray)"
    kept_note = f" The run folder keeps a checkpoint of step {kept}." if kept is not None else ""
    if memory == "cpu":
        return TrainingError(
            "out_of_memory",
            f"The CPU ran out of memory {where} {shape}.",
            "Generate again with a lower [[resolution]] (memory grows with its square) or fewer [[samples_per_ray]], "
            "or close other programs." + kept_note,
        )
    name = "CUDA ran out of GPU memory" if memory == "cuda" else "The Apple GPU (MPS) ran out of memory"
    return TrainingError(
        "out_of_memory",
        f"{name} {where} {shape}.",
        "Generate again with [[low_vram=true]], a lower [[resolution]] or fewer [[samples_per_ray]], "
        "or close other programs on the GPU." + kept_note,
    )
