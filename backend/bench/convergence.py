"""`python -m backend bench convergence` and `bench sensitivity` (issue 5, docs/ARCHITECTURE.md §8).

Every schedule variant × suite entry × seed is one normal training run (backend.trainer.Trainer)
with everything else identical: the same seed gives the same initialization, cameras, shading
and diffusion noise at every step, so runs differ only in t(i). Every `eval_every` steps the
field's evaluation ring is scored against the targets (metrics.py); at the end the run's own
metrics add the final quality and the mesh's Chamfer error. Results go to `bench.json` and plots.
With Stable Diffusion there are no targets: `--clip ID|DIR` scores the ring with CLIP instead
(R-precision, CLIP score, diversity: backend/bench/clip.py).

Runs are independent processes' work (`--jobs`); each run folder keeps `bench_run.json`, and a
rerun with the same settings reuses it, so an interrupted bench loses at most the runs in flight.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import GenerationConfig
from ..run_folder import atomic_write_text
from . import metrics as bench_metrics
from .suite import SuiteEntry, suite_entries, targets_path, write_targets

# Analytic runs small enough for a 2-core CPU: one run takes ~48 s on one idle core, so the quick
# suite (4 prompts x 3 schedules x 3 seeds, 2 runs at a time) is sized for ~15 minutes.
# Everything not named here is the device's generation preset.
BENCH_PRESET: dict[str, Any] = {
    "steps": 300,
    "resolution": 32,
    "preview_resolution": 48,  # the evaluation ring's size: 8 views scored every eval_every steps
    "samples_per_ray": 32,
    "dense_resolution": 64,
    "mesh_resolution": 96,
    "preview_every": 0,
    "checkpoint_every": 0,
    "lr": 0.1,  # twice the generation preset's: 300 steps reach ~26 dB on "a red torus"
}

# The sensitivity sweep: each TP-SDS parameter across its panel slider range, the rest at default.
SWEEP_VALUES = {"m1": (600.0, 1000.0), "m2": (200.0, 700.0), "s1": (50.0, 1000.0), "s2": (25.0, 400.0)}


@dataclass(frozen=True)
class Variant:
    """One schedule to compare: a label and the config fields it sets."""

    label: str
    overrides: dict[str, Any] = field(default_factory=dict, compare=False)


def schedule_variants(names: list[str]) -> list[Variant]:
    return [Variant(name, {"schedule": name}) for name in names]


def sensitivity_variants() -> list[Variant]:
    """tp at its defaults, each of m1, m2, s1, s2 at both ends of its slider, and W_d off."""
    variants = [Variant("tp", {"schedule": "tp"})]
    for name, values in SWEEP_VALUES.items():
        variants += [Variant(f"tp_{name}={value:g}", {"schedule": "tp", name: value}) for value in values]
    return variants + [Variant("tp_no_wd", {"schedule": "tp", "use_w_d": False})]


def bench_config(base: dict[str, Any], entry: SuiteEntry, targets_file: str, seed: int, variant: Variant,
                 run_dir: Path) -> GenerationConfig:
    values = {**base, **variant.overrides, "prompt": entry.prompt, "targets": targets_file, "seed": seed, "run_dir": str(run_dir)}
    return GenerationConfig(**values).validate()


# ---------------------------------------------------------------------- one run (in a worker)
def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one config, scoring the evaluation ring every `eval_every` steps. Returns the result.

    Reuses `bench_run.json` in the run folder when it was made with the same config.
    """
    run_dir = Path(job["config"]["run_dir"])
    saved = run_dir / "bench_run.json"
    if saved.exists():
        try:
            previous = json.loads(saved.read_text(encoding="utf-8"))
            if (previous.get("config") == job["config"] and previous.get("eval_every") == job["eval_every"]
                    and previous.get("clip") == job.get("clip")):
                return {**previous, "reused": True}
        except (OSError, ValueError):
            pass  # unreadable: run again
    from ..trainer import Trainer

    config = GenerationConfig.from_dict(job["config"]).validate()
    curve: dict[str, list] = {"eval_steps": [], "psnr": [], "consistency": [], "best_target": []}
    clip = None  # clip.RunScorer when --clip scores this (sd) run

    def evaluate(steps_done: int) -> None:
        nonlocal clip
        if steps_done % job["eval_every"] and steps_done != config.steps:
            return
        if trainer.guidance_kind != "analytic":
            if job.get("clip"):
                from .clip import RunScorer

                clip = clip or RunScorer(job["clip"], trainer.device)
                clip.evaluate(trainer.artifacts.render_ring())
                curve["eval_steps"].append(steps_done)
            return
        quality = trainer.artifacts.evaluate_quality()
        for key, value in (("eval_steps", steps_done), ("psnr", quality["psnr"]), ("consistency", quality["consistency"]),
                           ("best_target", quality["best_target"])):
            curve[key].append(value)

    trainer = Trainer(config, run_dir, on_step=evaluate)
    tick = time.perf_counter()
    trainer.run()
    metrics = trainer.metrics
    result = {
        "label": job["label"], "entry": job["entry"], "kind": job["kind"], "seed": config.seed,
        "config": job["config"], "eval_every": job["eval_every"], "run_dir": str(run_dir),
        **curve,
        "quality": metrics.get("quality"),
        "target_names": list(trainer.guidance.targets.names) if trainer.guidance_kind == "analytic" else [],
        "chamfer_rel": metrics.get("mesh", {}).get("chamfer_rel"),
        "mesh_euler": metrics.get("mesh", {}).get("euler"),
        "final_loss": next((v for v in reversed(metrics["loss"]) if v is not None), None),
        "wall_s": round(time.perf_counter() - tick, 2),
        "clip": job.get("clip"),
        **(clip.result() if clip else {}),
    }
    atomic_write_text(saved, json.dumps(result, indent=1))
    return result


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.getLogger("dreamtime").setLevel(logging.WARNING)


# ---------------------------------------------------------------------- the whole bench
def run_bench(
    variants: list[Variant],
    entries: tuple[SuiteEntry, ...],
    seeds: int,
    out: Path,
    base: dict[str, Any],
    eval_every: int,
    jobs: int = 1,
    suite: str = "",
    progress: bool = True,
    clip: str = "",
    store: Path | None = None,
) -> dict[str, Any]:
    """Run every variant × entry × seed, write `bench.json` and the plots into `out`. Returns bench.json's dict.

    clip: a CLIP model (hub id or folder) that scores sd runs (backend/bench/clip.py).
    store: a folder for runs and targets shared by several benches (bench robustness): each run's
    folder is named by a digest of its config, so a run two benches share is trained once.
    """
    from tqdm import tqdm

    from . import clip as bench_clip, plots as bench_plots

    job_list = []  # every config is built and validated before anything is written
    prompts = [entry.prompt for entry in entries]
    for index, entry in enumerate(entries):
        targets_file = targets_path(entry, (store or out) / "targets")
        for variant in variants:
            for seed in range(seeds):
                run_dir = out / "runs" / variant.label / entry.name / f"seed{seed}"
                config = bench_config(base, entry, targets_file, seed, variant, run_dir)
                if store is not None:
                    run_dir = store / "runs" / entry.name / f"{variant.label}-{config_digest(config)}" / f"seed{seed}"
                    config = config.replace(run_dir=str(run_dir))
                job_list.append({"label": variant.label, "entry": entry.name, "kind": entry.kind, "config": config.to_dict(),
                                 "eval_every": eval_every, **({"clip": bench_clip.job_spec(clip, prompts, index)} if clip else {})})
    for entry in entries:
        write_targets(entry, (store or out) / "targets")
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(job_list), file=sys.stderr, disable=not progress, unit="run", desc="bench")
    if jobs > 1:
        import multiprocessing

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init, initargs=(1,)) as pool:
            for future in as_completed([pool.submit(run_one, job) for job in job_list]):
                results.append(future.result())
                bar.update()
    else:
        for job in job_list:
            results.append(run_one(job))
            bar.update()
    bar.close()
    order = {(j["label"], j["entry"], j["config"]["seed"]): i for i, j in enumerate(job_list)}
    results.sort(key=lambda r: order[(r["label"], r["entry"], r["seed"])])

    steps = base["steps"]
    analytic = all(r["quality"] is not None for r in results)
    summary = bench_metrics.summarize(results, steps) if analytic else bench_metrics.loss_summary(results)
    clip_summary = bench_clip.summarize(results)
    for label, values in clip_summary.items():
        summary[label].update(values)
    bench = {
        "suite": suite,
        "steps": steps,
        "seeds": seeds,
        "eval_every": eval_every,
        "entries": [asdict(entry) for entry in entries],
        "variants": {v.label: v.overrides for v in variants},
        "base_config": {k: v for k, v in base.items()},
        "threshold_fractions": list(bench_metrics.THRESHOLD_FRACTIONS),
        "schedules": summary,
        "ratios": bench_metrics.ratios(summary) if analytic else bench_clip.ratios(summary),
        "clip": clip or None,
        "wall_s": round(time.perf_counter() - started, 1),
        "runs_reused": sum(bool(r.get("reused")) for r in results),
        "jobs": jobs,
        "cpu_count": os.cpu_count(),
        "runs": [{k: v for k, v in r.items() if k not in ("config", "clip")} | _without_embeddings(r) for r in results],
    }
    atomic_write_text(out / "bench.json", json.dumps(bench, indent=1))
    bench["plots"] = [str(p) for p in bench_plots.write_all(bench, out / "plots")]
    atomic_write_text(out / "bench.json", json.dumps(bench, indent=1))
    return bench


def config_digest(config: GenerationConfig) -> str:
    """A short digest of everything in a config but its run folder and seed: configs with equal
    digests and seeds train equally (a shared store keeps the seeds of one digest side by side)."""
    import hashlib

    values = {k: v for k, v in config.to_dict().items() if k not in ("run_dir", "seed")}
    return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]


def _without_embeddings(result: dict[str, Any]) -> dict[str, Any]:
    """bench.json keeps a run's final CLIP numbers; its embeddings stay in the run's bench_run.json."""
    final = result.get("clip_final")
    return {"clip_final": {k: v for k, v in final.items() if k != "embeddings"}} if final else {}


# ---------------------------------------------------------------------- CLI
def add_arguments(parser, sensitivity: bool = False) -> None:
    parser.add_argument("--suite", default="sweep" if sensitivity else "quick",
                        help="quick | full | minimal (sensitivity: sweep); sd: quick | minimal | pair | paper")
    if not sensitivity:
        parser.add_argument("--schedules", default="tp,uniform,linear", help="comma-separated: tp, uniform, linear")
    parser.add_argument("--seeds", type=int, default=2 if sensitivity else 3, help="seeds 0..N-1 per prompt and schedule")
    parser.add_argument("--steps", type=int, help=f"optimization steps per run (default {BENCH_PRESET['steps']} on the analytic prior)")
    parser.add_argument("--eval-every", type=int, help="steps between evaluations (default steps/12)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any config field for every run, e.g. --set resolution=64 (repeatable)")
    parser.add_argument("--targets", default="", help="a JSON targets file: bench just this set")
    parser.add_argument("--guidance", default="analytic", choices=("analytic", "sd"))
    parser.add_argument("--model", help="sd: hub id or local diffusers folder")
    parser.add_argument("--clip", default="", metavar="ID|DIR",
                        help="sd: a CLIP model (hub id or local folder) that scores the evaluation ring: "
                             "R-precision, CLIP score, diversity")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--jobs", type=int, help="runs in parallel processes (default: 2 on a CPU with >= 2 cores, else 1)")
    parser.add_argument("--out", default="bench_sensitivity" if sensitivity else "bench", help="output folder (bench.json, plots/, runs/)")
    parser.add_argument("--quiet", action="store_true")


def base_config(args) -> dict[str, Any]:
    """The config every run shares: the device's preset, the bench preset (analytic), the flags."""
    import torch

    from ..config import preset_for

    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    base: dict[str, Any] = {**preset_for(device), "device": device, "guidance": args.guidance}
    if args.guidance == "analytic":
        base.update(BENCH_PRESET)
    elif args.model:
        base["model"] = args.model
    if args.steps:
        base["steps"] = args.steps
    base.update(parse_overrides(args.set))
    return base


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`FIELD=VALUE` strings as config values, typed like the field's default (JSON for dicts)."""
    from ..config import ConfigError

    defaults = GenerationConfig().to_dict()
    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in defaults:
            raise ConfigError(name or item, f"--set needs FIELD=VALUE with a config field; known: {', '.join(sorted(defaults))}")
        kind = type(defaults[name])
        try:
            if kind is bool:
                value: Any = {"true": True, "1": True, "false": False, "0": False}[text.strip().lower()]
            elif kind in (dict, list):
                value = json.loads(text)
            else:
                value = kind(text)
        except (KeyError, ValueError):
            raise ConfigError(name, f"cannot read {text!r} as {kind.__name__}") from None
        values[name] = value
    return values


def run_cli(args, sensitivity: bool = False) -> int:
    base = base_config(args)
    if args.guidance == "sd":
        from .suite import sd_entries

        entries = sd_entries(args.suite)
    else:
        entries = suite_entries(args.suite, args.targets)
        if args.clip:
            raise ValueError("--clip: scores Stable Diffusion benches (--guidance sd); "
                             "the analytic prior is scored against its known targets")
    if args.clip:
        from .clip_model import preflight

        preflight(args.clip)
    variants = sensitivity_variants() if sensitivity else schedule_variants([s.strip() for s in args.schedules.split(",") if s.strip()])
    eval_every = args.eval_every or max(1, base["steps"] // 12)
    jobs = args.jobs or (2 if base["device"] == "cpu" and (os.cpu_count() or 1) >= 2 else 1)
    bench = run_bench(variants, entries, args.seeds, Path(args.out), base, eval_every, jobs, args.suite, progress=not args.quiet,
                      clip=args.clip)
    quality = {label: s.get("quality_db") for label, s in bench["schedules"].items()}
    printed = {"bench": str(Path(args.out) / "bench.json"), "ratios": bench["ratios"], "quality_db": quality, "wall_s": bench["wall_s"]}
    if args.clip:
        printed["r_precision"] = {label: s.get("r_precision") for label, s in bench["schedules"].items()}
    print(json.dumps(printed, indent=1))
    return 0
