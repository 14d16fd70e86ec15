"""Command line: `python -m backend generate|serve|batch|schedule|make-model|bench|doctor ...` (docs/ARCHITECTURE.md §1, §8).

stdout carries results only (the run folder's path, or the schedule's JSON); progress and logs go
to stderr, logs above the progress bar. Bad input ends in one line naming the problem, exit status 2;
a failed run, exit 1; a run whose field has no surface (no mesh), exit 3 (EXIT_STATUS). Messages
name settings as flags (backend/wording.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from . import protocol, wording
from .cli_help import config_help
from .config import DEVICES, HASHGRID_IMPLEMENTATIONS, PRECISIONS, ConfigError, GenerationConfig, preset_for

# CLI flag -> config field, for the flags that map one to one.
CONFIG_FLAGS = {
    "negative_prompt": str, "seed": int, "steps": int, "schedule": str, "m1": float, "m2": float, "s1": float,
    "s2": float, "t_min": int, "t_max": int, "guidance": str, "model": str, "weights": str, "targets": str, "guidance_scale": float,
    "resolution": int, "preview_resolution": int, "samples_per_ray": int, "encoding": str, "background": str,
    "dense_resolution": int, "mlp_hidden": int, "lambda_tv": float, "sdf_after": float, "mesh_threshold": float,
    "lr": float, "preview_every": int, "checkpoint_every": int, "mesh_resolution": int, "mesh_smooth": float, "mesh_faces": int,
    "texture_size": int, "export": str,
    "out": str, "run_dir": str, "device": str, "precision": str, "init_mesh": str, "strength": float, "variations": int,
    "hashgrid_implementation": str, "hashgrid_dtype": str,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description="DreamTime text-to-3D (TP-SDS) engine")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="optimize a NeRF for a prompt and export its mesh",
                              description="Optimize a NeRF for a prompt with TP-SDS and export its mesh into a new run folder, "
                                          "whose path is printed last. Exit status 0: done (or stopped early, mesh kept); "
                                          "1: the run failed; 2: bad input; 3: done without a mesh.")
    gen.add_argument("prompt", nargs="?", default=None, help='what to make, e.g. "a red torus" (the analytic prior: a shape and a colour)')
    for name, kind in CONFIG_FLAGS.items():
        gen.add_argument("--" + name.replace("_", "-"), type=kind, default=None, metavar=name.upper(), help=config_help(name))
    gen.add_argument("--no-wd", action="store_true", help="drop W_d from the TP-SDS weight (default: kept)")
    gen.add_argument("--low-vram", action="store_true", help="sd: CPU offload and attention slicing (default off)")
    gen.add_argument("--vertex-colors", action="store_true", help="also store per-vertex colours in the GLB and OBJ (default off)")
    gen.add_argument("--resume", metavar="RUN_DIR",
                     help="continue a run from its checkpoint, with its own config; with --steps M above its steps, refine it to M "
                          "in a new folder beside it (default: a new run)")
    gen.add_argument("--ray-address", help="--variations as Ray tasks on this cluster, auto or HOST:PORT (default: one after another here)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar (default: a bar on stderr)")

    serve = commands.add_parser("serve", help="the add-on's backend: protocol JSON lines on stdin/stdout, or over TCP")
    serve.add_argument("--listen", metavar="HOST:PORT", help="serve over TCP instead (e.g. 127.0.0.1:7841; port 0: any free one)")
    serve.add_argument("--token-file", metavar="F", help="clients must send this file's token (made if missing); needed off loopback")
    remote = serve.add_argument_group("what TCP clients may do (serve --listen; the stdio channel keeps each request's own paths)")
    remote.add_argument("--out", metavar="ROOT", help="every run folder is a new child of ROOT (default: runs/ in the working directory)")
    remote.add_argument("--models", metavar="DIR", action="append", default=[],
                        help="clients may name the model folders under DIR (repeatable); hub ids are always allowed")
    remote.add_argument("--allow-pickle-weights", action="store_true", help="also load PyTorch pickle weights (.bin), not only safetensors")
    remote.add_argument("--idle-timeout", metavar="S", type=float, default=None,
                        help="close a client that sends nothing for S seconds (600)")
    remote.add_argument("--max-file-mib", metavar="N", type=float, default=None,
                        help="largest preview or mesh sent over the connection, in MiB (256)")

    from .cluster.batch import add_arguments as add_batch_arguments

    add_batch_arguments(commands.add_parser("batch", help="prompts x seeds as Ray tasks, one run folder each; index.json + contact sheet"),
                        CONFIG_FLAGS)

    defaults = GenerationConfig()  # the schedule's defaults, as a generation has them
    sched = commands.add_parser("schedule", help="print t(i) of a timestep schedule")
    sched.add_argument("--kind", default=defaults.schedule)
    sched.add_argument("--steps", type=int, required=True)
    for name in ("m1", "m2", "s1", "s2"):
        sched.add_argument("--" + name, type=float, default=getattr(defaults, name))
    sched.add_argument("--t-min", type=int, default=defaults.t_min)
    sched.add_argument("--t-max", type=int, default=defaults.t_max)
    sched.add_argument("--seed", type=int, default=0)
    sched.add_argument("--no-wd", action="store_true")
    sched.add_argument("--json", action="store_true", help="one JSON object (the default output format)")

    make = commands.add_parser("make-model", help="write a random-weight Stable Diffusion folder (tests, GPU timing)")
    make.add_argument("--shape", default="tiny", choices=("tiny", "sd21-base", "tiny-clip"),
                      help="tiny: ~1M-parameter UNet; sd21-base: SD 2.1-base shapes; tiny-clip: a random CLIP for bench --clip")
    make.add_argument("--out", required=True, help="folder to write (new or empty)")
    make.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    make.add_argument("--force", action="store_true", help="replace a non-empty --out")

    asset = commands.add_parser("asset-eval", help="the run's asset as Blender shows it, against the analytic targets")
    asset.add_argument("run_dir", metavar="RUN_DIR")
    asset.add_argument("--samples", type=int, default=32, help="Cycles samples per pixel of the antialiased albedo renders")
    asset.add_argument("--blender-python", help="a Python with bpy (default: this one, or DREAMTIME_BLENDER_PYTHON)")
    doctor = commands.add_parser("doctor", help="what is installed, the device and its memory, a timed step, and what to fix")
    doctor.add_argument("--device", default="auto", choices=DEVICES)
    doctor.add_argument("--model", help="sd: hub id or local folder to check and, with its weights here, to time (GPU)")
    doctor.add_argument("--precision", default="auto", choices=PRECISIONS)
    doctor.add_argument("--json", action="store_true", help="one JSON object (the add-on's Test backend reads it)")

    bench = commands.add_parser("bench", help="measurements (docs/ARCHITECTURE.md §8)").add_subparsers(dest="bench", required=True)
    step = bench.add_parser("step", help="time a training step and its floor (the guidance alone); prints JSON")
    step.add_argument("--guidance", default="auto", choices=("auto", "analytic", "sd"), help="auto: sd with CUDA, else analytic")
    step.add_argument("--model", help="sd: hub id or local diffusers folder")
    step.add_argument("--prompt", default="a red cube")
    step.add_argument("--device", default="auto", choices=DEVICES)
    step.add_argument("--precision", default="auto", choices=PRECISIONS)
    step.add_argument("--steps", type=int, default=10, help="timed steps K, after the warm-up")
    step.add_argument("--warmup", type=int, default=3)
    step.add_argument("--resolution", type=int, default=64, help="training render size")
    step.add_argument("--encoding", help="hashgrid | dense (default: the device's preset)")
    step.add_argument("--hashgrid-implementation", choices=HASHGRID_IMPLEMENTATIONS, help="auto: tcnn on CUDA when it imports")
    step.add_argument("--samples-per-ray", type=int)
    step.add_argument("--batch-size", type=int, default=1)
    step.add_argument("--low-vram", action="store_true", help="sd: attention slicing, VAE checkpointing")
    step.add_argument("--extra", type=json.loads, default={}, help='config extra as JSON, e.g. \'{"channels_last": true}\'')
    from .bench.convergence import add_arguments

    add_arguments(bench.add_parser("convergence",
                                   help="schedules x seeds x prompts: quality, diversity, steps-to-quality; bench.json + plots"))
    add_arguments(bench.add_parser("sensitivity", help="TP-SDS with m1, m2, s1, s2 across their slider ranges and W_d off"),
                  sensitivity=True)
    bench.add_parser("report", help="bench.json as Markdown tables").add_argument("bench_json")
    from .bench.prompts import add_arguments as add_prompts_arguments

    add_prompts_arguments(bench.add_parser("prompts",
                                           help="every analytic shape without a colour and in two colours: mesh, χ, colour, PSNR, seconds"))
    from .bench.robustness import add_arguments as add_robustness_arguments

    add_robustness_arguments(bench.add_parser("robustness", help="tp vs uniform over step budget, lr decay, W_d and modes (issue 15)"))
    return parser


def config_from_args(args: argparse.Namespace) -> GenerationConfig:
    """Preset for the device, then every flag given; validated."""
    from .run_setup import resolve_device

    overrides = {name: getattr(args, name) for name in CONFIG_FLAGS if getattr(args, name) is not None}
    device = resolve_device(overrides.get("device", "auto"))
    values = {**preset_for(device.type), **overrides, "prompt": args.prompt or ""}
    if args.no_wd:
        values["use_w_d"] = False
    if args.low_vram:
        values["low_vram"] = True
    if args.vertex_colors:
        values["vertex_colors"] = True
    return GenerationConfig.from_dict(values).validate()


def given_flags(args: argparse.Namespace) -> dict:
    """{config field: value} of the config flags on the command line (switches included when set)."""
    given = {name: getattr(args, name) for name in CONFIG_FLAGS if getattr(args, name) is not None}
    switches = {"use_w_d": (args.no_wd, False), "low_vram": (args.low_vram, True), "vertex_colors": (args.vertex_colors, True)}
    return {**given, **{name: value for name, (on, value) in switches.items() if on}}


def run_generate(args: argparse.Namespace) -> int:
    from .errors import TrainingError
    from .run_folder import new_run_dir
    from .run_setup import preflight
    from .trainer import Trainer

    if args.resume and args.steps is not None:  # a refine (refine.py): a new folder beside the run
        from .refine import prepare_refine

        config = prepare_refine(args.resume, args.steps)
        run_dir = Path(config.run_dir)
    elif args.resume:
        from .resume import ResumeError, resumed_config

        run_dir = Path(args.resume)
        try:
            config, notes = resumed_config(run_dir, given_flags(args), args.prompt)
        except ResumeError as exc:
            return fail(str(exc), 2)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    else:
        config = config_from_args(args)
        try:
            preflight(config)
        except TrainingError as exc:
            return fail(f"{exc}" + (f"\nhint: {exc.hint}" if exc.hint else ""), 1)
        try:
            name = config.prompt if config.variations == 1 else f"{config.prompt} {config.variations} variations"
            run_dir = Path(config.run_dir) if config.run_dir else new_run_dir(config.out, name, config.seed)
        except OSError as exc:
            return fail(f"cannot make a run folder in {config.out}: {exc.strerror or exc}\nhint: choose a writable folder with --out", 1)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: (stop.set(), signal.signal(signal.SIGINT, signal.SIG_DFL)))
    progress = ProgressBar(config.steps * config.variations, enabled=not args.quiet)
    if config.variations > 1:
        from .cluster.variations import Variations

        ray_runner = None
        if args.ray_address:
            from .cluster.ray_variations import run_on_ray

            ray_runner = functools.partial(run_on_ray, address=args.ray_address)
        runner = Variations(config, run_dir, on_event=progress.on_event, stop=stop, ray_runner=ray_runner)
    else:
        runner = Trainer(config, run_dir, on_event=progress.on_event, stop=stop)
    try:
        outputs = runner.run(resume=bool(args.resume))
    except TrainingError as exc:
        progress.close()
        return fail(f"{exc}" + (f"\nhint: {exc.hint}" if exc.hint else ""), 1)
    progress.close()
    if outputs.get("summary"):  # variations
        print(f"{outputs['summary']}; contact sheet {outputs['contact_sheet']}", file=sys.stderr)
    else:
        print(end_line(outputs, config.steps), file=sys.stderr)
    print(run_dir)
    return EXIT_STATUS[outputs.get("outcome", "complete")]


# The exit status of a generation by how it ended (protocol.OUTCOMES); README's "Exit status" says the same.
EXIT_STATUS = {"complete": 0, "stopped": 0, "no_mesh": 3}


def end_line(outputs: dict, steps: int) -> str:
    """The last stderr line of a generation: how it ended and every file of the asset."""
    files = ", ".join(Path(path).name for path in outputs.get("mesh_files", []))
    outcome, done = outputs.get("outcome", "complete"), outputs.get("steps_done", steps)
    if outcome == "no_mesh":
        stopped = f", stopped early at step {done} of {steps}" if "stopped_at" in outputs else f" after {done} steps"
        return f"done without a mesh{stopped} (exit status 3): {outputs.get('warning', 'the field has no surface')}"
    if outputs.get("resumed_at") is not None and outputs["resumed_at"] >= steps and outcome == "complete":
        return f"the run was already complete ({done} of {steps} steps): nothing trained, its mesh extracted again; wrote {files}"
    if outcome == "stopped":
        return f"stopped early at step {done} of {steps}; the checkpoint and the mesh of the current state were written: {files}"
    return f"done: {done} steps; wrote {files}"


class ProgressBar:
    """A tqdm bar on stderr fed by protocol events, drawn from the first step (a resumed run's bar
    starts at its checkpoint's step); while it shows, log lines go above it (tqdm.write) instead of
    through it."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.enabled, self.bar = total, enabled, None
        self._swapped: list[tuple[logging.Handler, logging.Handler]] = []
        if enabled:
            root = logging.getLogger()
            for handler in list(root.handlers):
                if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr, sys.__stderr__):
                    above = _AboveTheBar()
                    above.setFormatter(handler.formatter)
                    above.setLevel(handler.level)
                    root.removeHandler(handler)
                    root.addHandler(above)
                    self._swapped.append((handler, above))

    def _at(self, step: int):
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=step, file=sys.stderr, disable=not self.enabled, dynamic_ncols=True, unit="step")
        self.bar.n = step
        return self.bar

    def on_event(self, event: dict) -> None:
        if event["type"] == "log" and "resumed_at" in event:
            self._at(event["resumed_at"]).refresh()
        elif event["type"] == "progress":
            bar = self._at(event["step"])
            bar.set_postfix(t=event["t"], loss=f"{event['loss']:.4g}", refresh=False)
            bar.refresh()
        # log events need nothing here: the trainer logs what they say (above the bar)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        root = logging.getLogger()
        for handler, above in self._swapped:
            root.removeHandler(above)
            root.addHandler(handler)
        self._swapped.clear()


class _AboveTheBar(logging.Handler):
    """A log line written above the progress bar, which is then drawn again below it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def run_schedule(args: argparse.Namespace) -> int:
    from .schedule import timesteps

    config = GenerationConfig(prompt="schedule", steps=args.steps, schedule=args.kind, m1=args.m1, m2=args.m2, s1=args.s1, s2=args.s2,
                              t_min=args.t_min, t_max=args.t_max, seed=args.seed)
    config.validate()
    t = timesteps(args.kind, args.steps, args.m1, args.m2, args.s1, args.s2, args.t_min, args.t_max, args.seed, use_w_d=not args.no_wd)
    print(json.dumps({"kind": args.kind, "t": [int(v) for v in t]}))
    return 0


def run_serve(args: argparse.Namespace) -> int:
    remote_only = {"--out": args.out, "--models": args.models, "--allow-pickle-weights": args.allow_pickle_weights,
                   "--idle-timeout": args.idle_timeout, "--max-file-mib": args.max_file_mib}
    if args.listen is None and args.token_file is None:
        given = [flag for flag, value in remote_only.items() if value not in (None, False, [])]
        if given:
            return fail(f"{', '.join(given)}: for serve --listen only (on stdio each request names its own output folder and model)", 2)
        from .serve.server import main as serve

        return serve()
    from .serve.tcp_server import IDLE_SECONDS, main as serve_tcp

    return serve_tcp(args.listen or f"127.0.0.1:{protocol.DEFAULT_PORT}", args.token_file, args.out, args.models, args.allow_pickle_weights,
                     IDLE_SECONDS if args.idle_timeout is None else args.idle_timeout,
                     protocol.MAX_FILE_BYTES / 2**20 if args.max_file_mib is None else args.max_file_mib)


def run_batch(args: argparse.Namespace) -> int:
    from .cluster.batch import run

    return run(args)


def run_make_model(args: argparse.Namespace) -> int:
    from .guidance.make_model import make_model

    print(make_model(args.shape, args.out, args.seed, args.force))
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from .bench import convergence as bench_convergence, step as bench_step

    if args.bench == "step":
        return bench_step.run(args)
    if args.bench == "prompts":
        from .bench import prompts as bench_prompts

        return bench_prompts.run_cli(args)
    if args.bench == "report":
        from .bench import report as bench_report

        return bench_report.run_cli(args)
    if args.bench == "robustness":
        from .bench import robustness as bench_robustness

        return bench_robustness.run_cli(args)
    return bench_convergence.run_cli(args, sensitivity=args.bench == "sensitivity")


def run_asset_eval(args: argparse.Namespace) -> int:
    from .asset.evaluate import run_cli

    return run_cli(args)


def run_doctor(args: argparse.Namespace) -> int:
    from .bench.doctor import run

    return run(args)


def fail(message: str, status: int) -> int:
    """One error line (markers in CLI words: backend/wording.py) and the exit status."""
    print(f"error: {wording.cli(message)}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    handlers = {"generate": run_generate, "schedule": run_schedule, "serve": run_serve, "make-model": run_make_model, "bench": run_bench,
                "batch": run_batch, "asset-eval": run_asset_eval, "doctor": run_doctor}
    try:
        return handlers[args.command](args)
    except ConfigError as exc:
        return fail(str(exc), 2)
    except ValueError as exc:  # bad targets, unknown words, ...
        return fail(str(exc), 2)
    except KeyboardInterrupt:  # Ctrl-C before a run began (a running one stops cleanly and keeps its mesh)
        return fail("interrupted", 130)
