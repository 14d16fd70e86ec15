"""`python -m backend doctor`: what a user runs when something is wrong, and what the add-on's Test backend shows.

It reports the torch build (its version, CUDA version or CPU, MPS), the device a run would use and
its memory, diffusers / transformers, tiny-cuda-nn, whether the Stable Diffusion model is in the
local cache, then times a few training steps against their floor with `bench_step` (step.py) and
gives a verdict: `ok`, and `problems`, each a sentence that says what to do (`notes` are facts that
need no fix). `--json` prints one object whose keys are a contract with the add-on: device, torch,
cuda, diffusers, tcnn, precision, step_ms, floor_ms, ratio, peak_mem_mb, ok, problems (and more).

What is timed is the guidance a run would use. On a GPU that is Stable Diffusion: the --model's
weights when they are on this machine, else a random-weight pipeline with SD 2.1-base's real shapes
(make_model.py; ~2.6 GB written to a temporary folder). On the CPU the default guidance is the
analytic prior: its step is timed with the CPU preset, and the SD code path is proven on the tiny
random pipeline, or --model's weights (a few steps at 32², in the asked precision), all in well under
a minute with the tiny one.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..config import GenerationConfig, preset_for

BENCH_PROMPT = "a red cube"
GPU_STEPS, GPU_WARMUP = 5, 2
CPU_STEPS, CPU_WARMUP = 4, 1
SMALL_GPU_MB = 8 * 1024  # below this, SD at batch 1 wants --low-vram
SLOW_RATIO = 1.5  # an SD step over 1.5x its floor on a GPU: something around the guidance is slow


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_gpus() -> list[str]:
    """GPU names `nvidia-smi -L` lists (empty without the tool or a GPU): is an NVIDIA card there at all?"""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return []
    try:
        listing = subprocess.run([tool, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.split(":", 1)[1].split("(UUID")[0].strip() for line in listing.splitlines() if line.startswith("GPU ")]


def environment() -> dict[str, Any]:
    """What is installed: torch and its build, diffusers, transformers, tiny-cuda-nn, NVIDIA GPUs."""
    from ..encoding import tcnn_available
    from ..run_setup import mps_available

    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,  # None: a CPU (or MPS) build of torch
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "mps": mps_available(),
        "diffusers": _version("diffusers"),
        "transformers": _version("transformers"),
        "tcnn": tcnn_available(),
        "nvidia_gpus": _nvidia_gpus(),
        "python": sys.version.split()[0],
    }


def device_report(device: torch.device) -> dict[str, Any]:
    from ..memory import available_memory, total_memory

    total = total_memory(device)
    free, limit = available_memory(device)
    name = {"cuda": lambda: torch.cuda.get_device_name(device), "mps": lambda: "Apple GPU (MPS)"}.get(device.type)
    capability = ".".join(map(str, torch.cuda.get_device_capability(device))) if device.type == "cuda" else None
    return {
        "device": device.type,
        "device_name": name() if name else f"CPU ({torch.get_num_threads()} threads)",
        "compute_capability": capability,
        "memory_total_mb": None if total is None else round(total / 2**20),
        "memory_free_mb": None if free is None else round(free / 2**20),
        "memory_limit": limit or None,
    }


def model_report(model: str) -> dict[str, Any]:
    from ..guidance.stable_diffusion import cached_model_folder

    if _version("diffusers") is None:
        return {"model": model, "model_cached": None, "model_folder": None}
    folder = cached_model_folder(model)
    return {"model": model, "model_cached": folder is not None, "model_folder": None if folder is None else str(folder)}


def measure(device: torch.device, precision: str, model_folder: Path | None, work: Path) -> dict[str, Any]:
    """bench_step of the guidance a run on `device` would use (see the module docstring); the SD proof on the CPU."""
    from ..guidance.make_model import make_model
    from .step import bench_step

    base = {**preset_for(device.type), "prompt": BENCH_PROMPT, "device": device.type, "precision": precision}
    if device.type == "cpu":
        result = {"bench": bench_step(GenerationConfig.from_dict({**base, "guidance": "analytic"}).validate(), CPU_STEPS, CPU_WARMUP)}
        if _version("diffusers") is not None:  # the SD code path, on --model's weights if they are here, else the tiny pipeline
            folder = model_folder or make_model("tiny", work / "tiny")
            proof = {**base, "guidance": "sd", "model": str(folder), "resolution": 32, "dense_resolution": 32, "samples_per_ray": 16}
            sd = bench_step(GenerationConfig.from_dict(proof).validate(), 2, 1)
            result["sd_check"] = {key: sd[key] for key in ("dtype", "step_ms", "floor_ms", "skipped_steps")}
            result["sd_check"]["ok"] = sd["skipped_steps"] == 0
        return result
    built = model_folder is None
    if built:
        tick = time.perf_counter()
        model_folder = make_model("sd21-base", work / "sd21-base")
        result = {"model_built_s": round(time.perf_counter() - tick, 1)}
    else:
        result = {}
    values = {**base, "guidance": "sd", "model": str(model_folder), "resolution": 64}
    result["bench"] = bench_step(GenerationConfig.from_dict(values).validate(), GPU_STEPS, GPU_WARMUP)
    result["bench"]["random_weights"] = built
    return result


def verdict(report: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(problems: each says what to do; notes: what is worth knowing) of a report."""
    problems, notes = [], []
    if report["cuda"] is None and report["nvidia_gpus"]:
        problems.append(f"This torch ({report['torch']}) is a CPU-only build, but this machine has an NVIDIA GPU "
                        f"({report['nvidia_gpus'][0]}): reinstall torch with CUDA (in Blender: Install backend again; by hand: "
                        "pip install torch --index-url https://download.pytorch.org/whl/cu128).")
    if report["diffusers"] is None or report["transformers"] is None:
        problems.append("diffusers or transformers is missing, so Stable Diffusion guidance cannot run: "
                        "pip install diffusers transformers (Install backend does).")
    if report.get("error"):
        problems.append(report["error"])
    device = report.get("device")
    if device == "cuda" and not report["tcnn"]:
        notes.append("tiny-cuda-nn is not installed: the pure-torch hash grid is used (slower; install it for speed).")
    if device in ("cuda", "mps") and report.get("model_cached") is False:
        notes.append(f"{report['model']} is not in the local cache: the first generation downloads it (about 5 GB).")
    if device == "cpu":
        notes.append("No GPU: generations use the offline analytic prior (its shapes and colours only); Stable Diffusion on "
                     "the CPU works but takes hours.")
        check = report.get("sd_check")
        if check is not None and not check["ok"]:
            problems.append(f"The Stable Diffusion code path gave non-finite steps on the tiny pipeline in {check['dtype']}: "
                            "use --precision fp32 and report this.")
    if device == "mps":
        notes.append("Apple GPUs (MPS) have not been tested on hardware by this project yet.")
    total = report.get("memory_total_mb")
    if device in ("cuda", "mps") and total is not None and total < SMALL_GPU_MB:
        notes.append(f"The GPU has {total / 1024:.1f} GB: if a run runs out of memory, use --low-vram.")
    bench = report.get("bench") or {}
    if bench.get("skipped_steps"):
        problems.append(f"{bench['skipped_steps']} of {bench['steps']} timed steps were not finite in {bench['dtype']}: "
                        "use --precision bf16 (or fp32).")
    if device in ("cuda", "mps") and bench.get("guidance") == "sd" and bench.get("ratio", 0) > SLOW_RATIO:
        notes.append(f"A step costs {bench['ratio']:.2f}x the guidance's own work (the goal is 1.15x at 64² fp16).")
    if device in ("cuda", "mps") and total and bench.get("peak_mem_mb", 0) > 0.9 * total:
        problems.append(f"The measured step peaked at {bench['peak_mem_mb']:.0f} MB of {total} MB: use --low-vram.")
    return problems, notes


def doctor(device_name: str = "auto", model: str | None = None, precision: str = "auto") -> dict[str, Any]:
    """The whole report as one dict (what --json prints)."""
    from ..config import ConfigError
    from ..errors import TrainingError
    from ..run_setup import resolve_device

    started = time.perf_counter()
    report: dict[str, Any] = environment()
    report.update({"device": None, "precision": None, "model": model or GenerationConfig().model, "step_ms": None, "floor_ms": None,
                   "ratio": None, "peak_mem_mb": None, "error": None})
    try:
        device = resolve_device(device_name)
    except ConfigError as exc:
        device = None
        report["error"] = f"{exc} (torch {report['torch']}, CUDA {report['cuda'] or 'none in this build'})."
    if device is not None:
        report.update(device_report(device))
        from ..guidance.stable_diffusion import DTYPES, resolve_dtype

        try:
            dtype = resolve_dtype(precision, device)
            report["precision"] = next(name for name, value in DTYPES.items() if value == dtype)  # fp32 | fp16 | bf16, as --precision
            report.update(model_report(report["model"]))
            # A --model whose weights are here is timed; otherwise a random pipeline of SD 2.1-base's shapes.
            folder = Path(report["model_folder"]) if model and report.get("model_folder") else None
            with tempfile.TemporaryDirectory(prefix="dreamtime-doctor-") as work:
                report.update(measure(device, precision, folder, Path(work)))
            bench = report["bench"]
            report.update({key: bench[key] for key in ("step_ms", "floor_ms", "ratio", "peak_mem_mb", "guidance", "tf32", "fused_adam")})
        except (ConfigError, TrainingError, RuntimeError, OSError, ValueError) as exc:
            hint = f" {exc.hint}" if getattr(exc, "hint", "") else ""
            report["error"] = f"The measured step failed: {type(exc).__name__}: {exc}.{hint}"
    report["problems"], report["notes"] = verdict(report)
    report["ok"] = not report["problems"]
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"torch {report['torch']} ({'CUDA ' + report['cuda'] if report['cuda'] else 'CPU build'}); "
             f"diffusers {report['diffusers']}; transformers {report['transformers']}; tiny-cuda-nn {'yes' if report['tcnn'] else 'no'}"]
    if report.get("device"):
        memory = f"{report['memory_total_mb']} MB" if report.get("memory_total_mb") else "memory unknown"
        lines.append(f"device: {report['device_name']} ({memory}); precision {report['precision']}")
    if report.get("step_ms") is not None:
        lines.append(f"step {report['step_ms']:.1f} ms, floor {report['floor_ms']:.1f} ms (ratio {report['ratio']:.2f}), "
                     f"peak memory {report['peak_mem_mb']:.0f} MB, guidance {report['guidance']}")
    if report.get("sd_check"):
        check = report["sd_check"]
        lines.append(f"Stable Diffusion code path (tiny random pipeline, {check['dtype']}): {'ok' if check['ok'] else 'FAILED'}")
    lines += [f"note: {note}" for note in report["notes"]]
    lines += [f"problem: {problem}" for problem in report["problems"]]
    lines.append("ok" if report["ok"] else f"{len(report['problems'])} problem(s)")
    return "\n".join(lines)


def run(args) -> int:
    """`python -m backend doctor` (flags in cli.py). Exit 0 whenever the report was made; `ok` says the verdict."""
    report = doctor(args.device, args.model, args.precision)
    print(json.dumps(report) if args.json else format_report(report))
    return 0
