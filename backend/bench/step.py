"""`python -m backend bench step`: the cost of one training step against its floor (docs/ARCHITECTURE.md §8).

In one run, after warm-up, K times in turn:
  step  = Trainer.train_step: cameras, render, guidance loss, backward through field, Adam;
  floor = the guidance's own work alone, on a fixed render tensor that needs a gradient:
          `guidance.losses(rgb, t, view)` and its backward. For `sd` that is resize, VAE encode
          forward and backward at the model's input size (512² for SD), the UNet on the 2B batch
          [uncond, cond] and CFG, in the run's dtype; for `analytic` it is the targets' render and
          the exact score.
ratio = step / floor (medians) is what the field, renderer and bookkeeping add on top of work no
implementation can avoid. Prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from typing import Any

import torch

from ..cameras import random_cameras
from ..config import GenerationConfig, preset_for
from ..guidance import View
from ..memory import device_peak_memory
from ..step_random import step_random, uniform

FLOORS = {
    "sd": "guidance.losses + backward on a fixed render: resize, VAE encode forward/backward, UNet on [uncond, cond] (2B), CFG",
    "analytic": "guidance.losses + backward on a fixed render: the targets' render and the exact score (no network)",
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    tick = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - tick) * 1000.0


def floor_step(trainer, step: int) -> None:
    """The guidance's work of training step `step`, on a random render leaf instead of the field's."""
    cfg, device = trainer.config, trainer.device
    rng = step_random(cfg.seed, step, device)
    cameras = random_cameras(cfg.batch_size, rng.host).to(device, non_blocking=True)
    settings = trainer.step_settings(step, rng, cameras)
    rgb = uniform((cfg.batch_size, cfg.resolution, cfg.resolution, 3), rng.device).to(device).requires_grad_(True)  # (B, H, W, 3)
    t = torch.full((cfg.batch_size,), int(trainer.schedule[step]), dtype=torch.long, device=device)
    opacity = uniform((cfg.batch_size, cfg.resolution, cfg.resolution, 1), rng.device).to(device).requires_grad_(True)
    view = View(cameras, settings, cfg.resolution, cfg.samples_per_ray, rng.device, cfg.scene_radius, opacity)
    sum(trainer.guidance.losses(rgb, t, view).values()).backward()


def bench_step(config: GenerationConfig, steps: int = 10, warmup: int = 3) -> dict[str, Any]:
    """Time `steps` training steps and their floors (after `warmup` of each) on a throwaway run folder."""
    from ..trainer import Trainer

    # No SDF switch: with so few steps it would fall inside the timed ones (a conversion, not a step).
    config = config.replace(steps=warmup + steps, preview_every=0, checkpoint_every=0, sdf_after=1.0).validate()
    with tempfile.TemporaryDirectory(prefix="dreamtime-bench-") as run_dir:
        trainer = Trainer(config, run_dir)
        try:
            trainer.setup(resume=False)
            device = trainer.device
            for step in range(warmup):
                trainer.train_step(step)
                floor_step(trainer, step)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            step_ms, floor_ms, losses = [], [], []
            for step in range(warmup, warmup + steps):  # interleaved, so both see the same machine load
                step_ms.append(_timed(lambda: losses.append(trainer.train_step(step)), device))
                floor_ms.append(_timed(lambda: floor_step(trainer, step), device))
        finally:
            trainer.close()
        guidance = trainer.guidance
        peak_mb, peak_kind = device_peak_memory(device)
        device_name = {"cuda": lambda: torch.cuda.get_device_name(device), "mps": lambda: "mps (Apple GPU)"}.get(
            device.type, lambda: f"cpu ({torch.get_num_threads()} threads)")()
    step_median, floor_median = statistics.median(step_ms), statistics.median(floor_ms)
    result = {
        "device": device_name,
        "guidance": trainer.guidance_kind,
        "model": config.model if trainer.guidance_kind == "sd" else None,
        "dtype": str(getattr(guidance, "dtype", torch.float32)).removeprefix("torch."),
        "resolution": config.resolution,
        "guidance_input": getattr(guidance, "image_size", config.resolution),  # pixels per side the VAE sees
        "batch_size": config.batch_size,
        "encoding": config.encoding if config.encoding != "auto" else "hashgrid",  # as the trainer resolves it
        "samples_per_ray": config.samples_per_ray,
        "extra": config.extra,
        "steps": steps,
        "warmup": warmup,
        "skipped_steps": sum(loss is None for loss in losses),  # timed steps whose loss or gradient was not finite
        "hashgrid_implementation": type(trainer.field.encoding).__name__,
        "fused_adam": bool(trainer.optimizer.defaults.get("fused")),
        "tf32": trainer.device_features["tf32"],
        "step_ms": round(step_median, 3),
        "floor_ms": round(floor_median, 3),
        "ratio": round(step_median / floor_median, 4),
        "step_ms_mean": round(statistics.fmean(step_ms), 3),
        "floor_ms_mean": round(statistics.fmean(floor_ms), 3),
        "peak_mem_mb": round(peak_mb, 1),
        "peak_mem_kind": peak_kind,
        "floor": FLOORS[trainer.guidance_kind],
    }
    return result


# ---------------------------------------------------------------------- command line
def run(args) -> int:
    """`python -m backend bench step` (flags defined in cli.py): prints the JSON result on stdout."""
    from ..errors import TrainingError
    from ..run_setup import resolve_device

    if args.steps < 1 or args.warmup < 0:
        raise ValueError(f"steps: must be >= 1 and warmup >= 0, got {args.steps} and {args.warmup}")
    device = resolve_device(args.device)
    values = {**preset_for(device.type), "prompt": args.prompt, "guidance": args.guidance, "device": args.device}
    values.update({"precision": args.precision, "resolution": args.resolution, "batch_size": args.batch_size, "low_vram": args.low_vram})
    values["extra"] = args.extra
    if args.encoding not in (None, "dense") and values.get("mlp_hidden") == 0:  # the CPU preset has no MLP; a hash grid needs one
        values["mlp_hidden"] = GenerationConfig().mlp_hidden
    flags = ("model", "encoding", "samples_per_ray", "hashgrid_implementation")
    values.update({name: getattr(args, name) for name in flags if getattr(args, name) is not None})
    try:
        result = bench_step(GenerationConfig.from_dict(values).validate(), args.steps, args.warmup)
    except TrainingError as exc:
        print(f"error: {exc}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
