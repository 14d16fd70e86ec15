"""The optimization loop (docs/ARCHITECTURE.md §4.6). About 400 lines, over the ~300 target: the loop
reads best together with the ways it ends (a stop request, non-finite steps, out of memory, a full
disk), with the reading back of its steps' numbers, and with the SDF switch's place in it.

Each step: cameras -> render -> guidance loss at t = schedule[i] -> Adam. Everything random in a
step comes from generators seeded by (seed, step) (step_random.py), so a resumed run repeats its
steps and two schedules with one seed see the same cameras and noise. A step never waits for the
device: its loss, verdict and non-finite count are read in blocks (readback.py); a non-finite step
is skipped on the device by fused Adam (`found_inf`), so the field keeps the last good state.
Events go to `on_event`, logs to the logger and log.txt; checkpoint.py and artifacts.py write the
run's files. A stop request ends the loop after the current step, with checkpoint, preview and mesh.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from . import protocol
from .adam import FieldAdam
from .artifacts import RunArtifacts
from .cameras import Cameras, evaluation_ring, fixed_light, light_directions, random_cameras
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .config import HUB_PREFIX, GenerationConfig
from .errors import TrainingError, write_failure
from .field import field_for
from .guidance import View
from .init_mesh import initialize_field
from .memory import device_peak_memory, memory_that_ran_out, out_of_memory_error
from .readback import READ_EVERY, Readback
from .renderer import RenderSettings, render
from .run_folder import RunLog, atomic_write_text, remove_stale_temps
from .run_setup import build_guidance, configure_device, make_adam, resolve_device, resolve_guidance
from .schedule import lr_factor, start_step, timesteps
from .sdf_switch import CALIBRATION_VIEWS, MIN_PSNR, switch_to_sdf
from .step_random import StepRandom, step_random, uniform

log = logging.getLogger("dreamtime")

SDF_RETRY_SHARE = 0.05  # a field not ready to be an SDF is tried again this share of the steps later
MAX_BAD_STEPS = 20  # consecutive non-finite steps before the run stops with an error
NON_FINITE_WARN_SHARE = 0.01  # a step whose guidance had more non-finite values than this share is warned about


class Trainer:
    def __init__(
        self,
        config: GenerationConfig,
        run_dir: str | Path,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        stop: threading.Event | None = None,
        run_id: str = "run",
        on_step: Callable[[int], None] | None = None,
    ):
        self.config = config.validate()
        self.run_dir = Path(run_dir)
        self.on_event = on_event or (lambda event: None)
        self.on_step = on_step or (lambda steps_done: None)  # after setup and after every step (benchmarks)
        self.stop = stop or threading.Event()
        self.run_id = run_id
        self.device = resolve_device(config.device)
        self.guidance_kind = resolve_guidance(config, self.device)
        self._extract_requested = threading.Event()
        self.metrics: dict[str, Any] = {"step": [], "t": [], "loss": [], "step_s": [], "skipped_steps": [], "guidance_non_finite": []}
        self.outputs: dict[str, Any] = {"run_dir": str(self.run_dir)}

    def request_extract(self) -> None:
        """Thread-safe (protocol `extract`): export a mesh of the current field after the current step."""
        self._extract_requested.set()

    def setup(self, resume: bool = False) -> int:
        """Make the run folder, its log, the guidance, the field, the optimizer and the schedule;
        returns the first step to train (the checkpoint's when resuming). run() calls it; a caller
        that drives train_step() itself (benchmarks, tests) calls it and then close()."""
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stale = remove_stale_temps(self.run_dir) if resume else []  # half-written files of a killed process
        (self.run_dir / "previews").mkdir(exist_ok=True)
        self._log_handler = RunLog(self.run_dir / "log.txt", encoding="utf-8")
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(self._log_handler)
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)
        if not resume:
            atomic_write_text(self.run_dir / "config.json", cfg.to_json())
        if self.guidance_kind == "analytic":
            log.info("guidance: the analytic prior, an offline demo prior: it knows only its primitive shapes and colours")
        log.info("run folder %s; device %s; guidance %s; schedule %s", self.run_dir, self.device, self.guidance_kind, cfg.schedule)
        self.on_event(protocol.message("log", id=self.run_id, level="info", message=f"Run folder {self.run_dir}",
                                       run_dir=str(self.run_dir)))  # the panel shows this run's folder from now on
        if stale:
            log.info("removed %d temporary file(s) a stopped process left: %s", len(stale), ", ".join(p.name for p in stale))
        if self.guidance_kind == "sd":  # seconds to minutes before the first step: say what is going on
            self.on_event(protocol.phase(self.run_id, "load", f"Loading model {cfg.model.removeprefix(HUB_PREFIX)}"))
        self.device_features = configure_device(self.device)  # TF32 on Ampere and newer
        self.guidance = build_guidance(cfg, self.guidance_kind, self.device)
        for note in getattr(self.guidance, "notes", ()):  # e.g. the analytic prior took one of a shape's colours
            log.warning("prompt: %s", note)
            self.on_event(protocol.message("log", id=self.run_id, level="warning", code="prompt", message=f"Prompt: {note}."))
        torch.manual_seed(cfg.seed)
        self.field = field_for(cfg).to(self.device)
        self.optimizer = self._make_optimizer()
        # The step at which a voxel-grid field becomes an SDF (field.py); None: it stays log density.
        self.sdf_step = round(cfg.sdf_after * cfg.steps) if cfg.sdf_after < 1 and self.field.is_voxel_grid() else None
        if cfg.sdf_after < 1 and self.sdf_step is None:
            log.info("sdf_after %g ignored: only a plain voxel grid (encoding dense, mlp_hidden 0) becomes an SDF", cfg.sdf_after)
        alphas_cumprod = self.guidance.alphas_cumprod.detach().cpu().numpy()
        self.schedule = timesteps(
            cfg.schedule, cfg.steps, cfg.m1, cfg.m2, cfg.s1, cfg.s2, cfg.t_min, cfg.t_max, cfg.seed, alphas_cumprod, cfg.use_w_d
        )
        self.ring = evaluation_ring().to(self.device)
        self.readback = Readback(self.device, int(cfg.extra.get("read_every", 1 if self.device.type == "cpu" else READ_EVERY)))
        self.artifacts = RunArtifacts(cfg, self.field, self.guidance, self.ring, self.run_dir, self.device, self.run_id, self.on_event,
                                      self.outputs, self.metrics)
        return self._load_checkpoint() if resume else self._start_from_shape()

    def _start_from_shape(self) -> int:
        """The first step of a new run: 0, or with an init mesh schedule.start_step(steps, strength), the
        field set from the mesh (init_mesh.py) as an SDF when that step is past the SDF switch."""
        cfg = self.config
        start = start_step(cfg.steps, cfg.strength)
        if cfg.init_mesh:
            as_sdf = self.sdf_step is not None and start >= self.sdf_step
            self.metrics["init_mesh"] = {**initialize_field(self.field, cfg.init_mesh, cfg.scene_radius, as_sdf, cfg.seed),
                                         "start_step": start}
            log.info("starting from %s at step %d of %d (strength %g, t = %d)", cfg.init_mesh, start, cfg.steps, cfg.strength,
                     int(self.schedule[start]))
            self.artifacts.write_preview(start)
        return start

    def close(self) -> None:
        """Detach the run's log.txt from the logger; safe to call twice, or without setup()."""
        handler = getattr(self, "_log_handler", None)
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
            self._log_handler = None

    def _make_optimizer(self) -> FieldAdam:
        cfg = self.config
        groups = [{"params": self.field.encoding_parameters(), "lr": cfg.lr}, {"params": self.field.network_parameters(), "lr": cfg.lr_mlp}]
        return make_adam(groups, self.device)

    @torch.no_grad()
    def _switch_to_sdf(self, step: int) -> None:
        """The field becomes a signed distance (sdf_switch.py), calibrated on a few fixed random views;
        Adam restarts (its moments were for log density). A field with no surface yet stays log
        density and is tried again SDF_RETRY_SHARE of the steps later. Each try goes to metrics.json."""
        cfg = self.config
        cameras = random_cameras(CALIBRATION_VIEWS, torch.Generator().manual_seed(cfg.seed * 1_000_003 + cfg.steps)).to(self.device)
        settings = RenderSettings("lambertian", fixed_light(cameras), torch.ones(len(cameras), 3, device=self.device))

        def views() -> torch.Tensor:  # (V, H, W, 3)
            return render(self.field, cameras, cfg.resolution, cfg.samples_per_ray, settings, radius=cfg.scene_radius)["rgb"]

        result = switch_to_sdf(self.field, views, cfg.mesh_smooth)
        self.metrics.setdefault("sdf_switch", []).append({"step": step, "psnr": round(result.psnr, 2), "offset": round(result.offset, 4),
                                                          "done": result.done})
        if not result.done:
            self.sdf_step = step + max(1, round(SDF_RETRY_SHARE * cfg.steps))
            log.info("step %d: the field is no surface yet (as an SDF it would render at %.1f dB, %.0f needed); next try at step %d",
                     step, result.psnr, MIN_PSNR, self.sdf_step)
            return
        self.optimizer = self._make_optimizer()
        log.info("step %d: the field is now a signed distance (surface moved %.4f inward to render as before; %.1f dB)", step,
                 result.offset, result.psnr)

    def step_settings(self, step: int, rng: StepRandom, cameras: Cameras) -> RenderSettings:
        """Shading, light and background of training step `step`, drawn from its generators
        (the shading mode on the host, which branches on it; light and background on the device)."""
        cfg = self.config
        shading = "albedo"
        if step >= cfg.albedo_warmup * cfg.steps:
            u = float(torch.rand((), generator=rng.host))
            shading = ("textureless" if u < cfg.textureless_prob else
                       "albedo" if u < cfg.textureless_prob + cfg.albedo_prob else "lambertian")
        light = light_directions(cameras, rng.device)
        backgrounds = {
            "random": lambda: uniform((len(cameras), 3), rng.device).to(self.device),
            "white": lambda: torch.ones(len(cameras), 3, device=self.device),
            "black": lambda: torch.zeros(len(cameras), 3, device=self.device),
            "learned": lambda: None,
        }
        return RenderSettings(shading, light, backgrounds[cfg.background]())

    def train_step(self, step: int) -> float | None:
        """One optimization step, read back at once; returns the loss, or None if the step was skipped (non-finite)."""
        loss, finite, _ = self.queue_step(step).tolist()
        return loss if finite else None

    def queue_step(self, step: int) -> torch.Tensor:
        """One optimization step, queued on the device without waiting for it. Returns (3,) on the device:
        the loss, 1 if the step was taken (0: non-finite, skipped on the device), the guidance's non-finite values."""
        cfg = self.config
        if self.sdf_step is not None and step >= self.sdf_step and not self.field.sdf_mode:
            self._switch_to_sdf(step)
        rng = step_random(cfg.seed, step, self.device)
        cameras = random_cameras(cfg.batch_size, rng.host).to(self.device, non_blocking=True)  # B poses: one small copy
        settings = self.step_settings(step, rng, cameras)
        out = render(self.field, cameras, cfg.resolution, cfg.samples_per_ray, settings, rng.device, cfg.scene_radius)
        t = torch.full((cfg.batch_size,), int(self.schedule[step]), dtype=torch.long, device=self.device)
        view = View(cameras, settings, cfg.resolution, cfg.samples_per_ray, rng.device, cfg.scene_radius, out["opacity"])
        losses = self.guidance.losses(out["rgb"], t, view)
        if cfg.lambda_tv > 0:
            losses["tv"] = cfg.lambda_tv * self.field.total_variation()
        if self.field.sdf_mode and cfg.lambda_eikonal > 0:
            losses["eikonal"] = cfg.lambda_eikonal * self.field.eikonal()
        loss = sum(losses.values())
        decay = self.lr_decay(step)
        for group, base in zip(self.optimizer.param_groups, (cfg.lr, cfg.lr_mlp)):
            group["lr"] = base * decay
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # a non-finite loss gives non-finite gradients: the one check below sees both
        finite = self._step_if_finite(loss.detach())
        non_finite = getattr(self.guidance, "non_finite", None)  # counted before nan_to_num hid them
        count = non_finite[0].float() if non_finite is not None else torch.zeros((), device=self.device)
        self.guidance_values = non_finite[1] if non_finite is not None else 0
        return torch.stack([loss.detach().float(), finite.float(), count])

    def lr_decay(self, step: int) -> float:
        """The learning rates' factor at `step` (schedule.lr_factor), from the run's first trained step:
        0, a run from a shape's start step, or a refine's steps already done (kept across resumes)."""
        cfg = self.config
        first = self.metrics.get("refine", {}).get("steps_before", start_step(cfg.steps, cfg.strength))
        return lr_factor(step, cfg.steps, first, cfg.lr_final_ratio)

    def _step_if_finite(self, loss: torch.Tensor) -> torch.Tensor:
        """Adam's step unless the loss or a gradient is not finite; returns that verdict (a 0-d bool on the device).

        One fused check: the loss plus every gradient's norm (torch._foreach_norm, one kernel per
        dtype) is finite exactly when all of them are (a norm past 3e38 counts as non-finite too).
        Fused Adam takes the verdict as `found_inf` and skips the update on the device; other Adams
        need the host to look (one sync)."""
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        total = loss.float() + torch.stack(torch._foreach_norm(grads)).float().sum() if grads else loss.float()
        finite = torch.isfinite(total)
        if self.optimizer.defaults["fused"]:
            self.optimizer.step(found_inf=(~finite).float())
        elif bool(finite):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return finite

    def run(self, resume: bool = False) -> dict[str, Any]:
        """Train to config.steps (from the checkpoint when resuming), then export. Returns outputs."""
        started = time.perf_counter()
        out_of_memory = None
        try:
            start = self.setup(resume)
            self.loop(start)
            self._finish(started)
        except (RuntimeError, MemoryError) as exc:  # out of GPU or CPU memory: handled below, once the
            out_of_memory = memory_that_ran_out(exc)  # traceback (and the failed step's tensors in its frames) is gone
            if out_of_memory is None:
                raise
        except OSError as exc:  # disk full, folder not writable: what is already written stays complete
            raise write_failure(exc, self.run_dir, getattr(self, "last_step", 0)) from None
        finally:
            self.close()
        if out_of_memory is not None:
            raise self._out_of_memory(out_of_memory)
        self.on_event(protocol.done(self.run_id, self.outputs))
        return self.outputs

    def _out_of_memory(self, memory: str) -> TrainingError:
        """Out of GPU or CPU memory: free what can be freed, keep a checkpoint of the state so far, say what to lower."""
        step = getattr(self, "last_step", None)
        if memory == "cuda":
            torch.cuda.empty_cache()
        kept = None
        if step is not None:  # the loop had started: its state is good up to `step`
            self.optimizer.zero_grad(set_to_none=True)
            try:
                self._account(self.readback.flush())
                self._save_checkpoint(step)
                kept = step
            except (RuntimeError, OSError, MemoryError, TrainingError):
                pass
        return out_of_memory_error(self.config, memory, step, kept)

    def loop(self, start: int) -> None:
        """Train from step `start` to config.steps, or until a stop request; previews and checkpoints on the way."""
        cfg = self.config
        self.last_step = start
        self.on_step(start)
        self._bad_in_a_row, self._last_loss = 0, math.nan
        ticks = [time.perf_counter()]  # wall clock after each of the last 50 steps: the ETA
        for step in range(start, cfg.steps):
            if self.stop.is_set():
                log.info("stop requested at step %d", step)
                self.outputs["stopped_at"] = step
                break
            tick = time.perf_counter()
            values = self.queue_step(step)
            self.last_step = step + 1
            self._account(self.readback.push(step, values, time.perf_counter() - tick))
            ticks = (ticks + [time.perf_counter()])[-51:]
            eta = (cfg.steps - step - 1) * (ticks[-1] - ticks[0]) / (len(ticks) - 1)
            self.on_event(protocol.progress(self.run_id, step + 1, cfg.steps, int(self.schedule[step]), self._last_loss, eta))
            self.on_step(step + 1)
            if self._extract_requested.is_set():
                self._extract_requested.clear()
                self.artifacts.extract_now(step + 1)
            preview = cfg.preview_every and (step + 1) % cfg.preview_every == 0
            checkpoint = cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0
            if preview or checkpoint:  # metrics.json and the checkpoint hold every step so far
                self._account(self.readback.flush())
            if preview:
                self.artifacts.write_preview(step + 1)
            if checkpoint:
                self._save_checkpoint(step + 1)
        self._account(self.readback.flush())

    def _account(self, steps: list[tuple[int, float, list[float]]]) -> None:
        """Metrics of steps read back from the device: (step, host seconds, [loss, taken, non-finite guidance values])."""
        for step, elapsed, (loss, taken, non_finite) in steps:
            if non_finite:
                self._note_non_finite(step, int(non_finite))
            if not taken:
                loss = None
                self._bad_in_a_row += 1
                self.metrics["skipped_steps"].append(step)
                log.warning("step %d: non-finite loss or gradient; step skipped, state kept at the last good step", step)
            else:
                self._bad_in_a_row = 0
            for key, value in (("step", step), ("t", int(self.schedule[step])), ("loss", loss), ("step_s", round(elapsed, 5))):
                self.metrics[key].append(value)
            self._last_loss = math.nan if loss is None else loss
            if self._bad_in_a_row >= MAX_BAD_STEPS:  # keep what the last good state gives
                self._save_checkpoint(self.last_step)
                self.artifacts.write_preview(self.last_step)
                self.artifacts.write_metrics()
                raise TrainingError(
                    "non_finite",
                    f"{self._bad_in_a_row} steps in a row had a non-finite loss (last at step {step}); the run stopped.",
                    "Outputs so far are kept. Try a lower learning rate or guidance scale.",
                )

    def _note_non_finite(self, step: int, count: int) -> None:
        """The guidance produced `count` NaN or inf values at `step` (set to 0 before they reached the field)."""
        share = count / max(self.guidance_values, 1)
        self.metrics["guidance_non_finite"].append({"step": step, "count": count, "share": round(share, 6)})
        if share > NON_FINITE_WARN_SHARE:
            message = (f"step {step}: {share:.1%} of the guidance's values were NaN or inf (set to 0); "
                       "in fp16 that is overflow: try --precision bf16 or fp32")
            log.warning(message)
            if len(self.metrics["guidance_non_finite"]) % 100 == 1:  # the panel hears of it now and then, not every step
                self.on_event(protocol.log("warning", message))

    def _finish(self, started: float) -> None:
        cfg, step = self.config, self.last_step
        self.metrics["train_s"] = time.perf_counter() - started
        self.metrics["peak_mem_mb"], self.metrics["peak_mem_kind"] = device_peak_memory(self.device)  # of setup and training
        artifacts = self.artifacts
        self._save_checkpoint(step)
        ring = artifacts.render_ring()  # the final field's ring, rendered once: the last preview, ring.png and the quality
        artifacts.write_preview(step, ring)
        tick = time.perf_counter()
        paths = artifacts.extract_mesh(cfg.export)
        self.metrics["mesh_s"] = time.perf_counter() - tick
        self.outputs.update({f"mesh_{fmt}": str(path) for fmt, path in paths.items()})
        self.outputs["mesh"] = str(paths[cfg.export[0]]) if paths else None
        self.outputs["mesh_files"] = [str(path) for path in paths.values()]  # every file of the asset, texture and material included
        self.outputs["outcome"] = "no_mesh" if not paths else "stopped" if "stopped_at" in self.outputs else "complete"
        self.outputs["ring"] = str(artifacts.write_ring(ring))
        if self.guidance_kind == "analytic":
            self.metrics["quality"] = artifacts.evaluate_quality(ring)
            if artifacts.mesh is not None:
                self.metrics["mesh"].update(artifacts.mesh_error(self.metrics["quality"]["best_target"]))
        self.metrics["total_s"] = time.perf_counter() - started
        self.outputs["metrics"] = str(artifacts.write_metrics())
        self.outputs["steps_done"] = step

    def _save_checkpoint(self, step: int) -> Path:
        path = save_checkpoint(self.run_dir, step, self.field, self.optimizer, self.metrics)
        self.outputs["checkpoint"] = str(path)
        return path

    def _load_checkpoint(self) -> int:
        step, metrics = load_checkpoint(self.run_dir, self.field, self.optimizer, self.device)
        self.metrics.update(metrics)
        if self.config.refine_from:  # refine.py: a finished run's field, continued on a schedule laid out for more steps
            self.metrics.setdefault("refine", {"from": self.config.refine_from, "steps_before": step, "steps": self.config.steps})
            if step == self.metrics["refine"]["steps_before"]:  # its first step: Adam's moments were the source's, at small t
                self.optimizer = self._make_optimizer()
        steps = self.config.steps
        text = (f"resumed from {self.run_dir / CHECKPOINT_NAME} at step {step} of {steps}" if step < steps else
                f"the run is complete ({step} of {steps} steps): nothing to train; its mesh is extracted again from the checkpoint")
        log.info("%s", text)
        self.outputs["resumed_at"] = step
        self.on_event(protocol.message("log", id=self.run_id, level="info", message=text[0].upper() + text[1:] + ".", resumed_at=step))
        return step
