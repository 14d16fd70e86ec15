"""`python -m backend batch PROMPTS_FILE`: prompts x seeds as Ray tasks, one run folder each (docs/ARCHITECTURE.md §9).

Each job is a normal generation (the Trainer, in the Ray worker) in `<out>/<NNN>-<slug>-s<seed>/`,
its config built like the add-on's: the flags over the worker's device preset, validated by
GenerationConfig and preflight. A job whose config or prompt is bad fails at once (the same input
fails the same way); any other failure, a worker that died included, is retried once by Ray
(max_retries=1, retry_exceptions), resuming from the run's checkpoint, then reported; the other
jobs go on. At the end `<out>/index.json` lists every job and `<out>/contact_sheet.png` shows the
final previews. Without --ray-address a local Ray instance is started on this machine; with one,
the `backend` package travels to the cluster (runtime_env py_modules) and run folders written on
another node are copied back. Ray is an optional extra (`pip install .[cluster]`), imported here only.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import wording
from ..cli_help import config_help

MAX_RETRIES = 1  # Ray re-runs a failed job this many times
GATHERED = ("config.json", "metrics.json", "log.txt", "ring.png", "attempts.json", "mesh.glb", "mesh.ply", "mesh.obj")
FAIL_ATTEMPTS_HOOK = "fail_attempts"  # config extra: a test hook, see run_job


class InjectedFailure(RuntimeError):
    """Raised by the `fail_attempts` test hook (config extra) to simulate a transient failure."""


@dataclass
class Job:
    index: int
    prompt: str
    seed: int
    config: dict[str, Any] = field(default_factory=dict)  # this job's own config fields

    @property
    def folder_name(self) -> str:
        from ..run_folder import slugify

        return f"{self.index:03d}-{slugify(self.prompt, 40)}-s{self.seed}"


def add_arguments(parser: argparse.ArgumentParser, config_flags: dict[str, type]) -> None:
    parser.add_argument("prompts_file", metavar="PROMPTS_FILE",
                        help='one prompt per line (# comments), or a .json list of prompts or {"prompt": ..., "config": {...}}')
    parser.add_argument("--seeds", type=int, default=1, help="seeds per prompt: --seed, --seed + 1, ... (default 1)")
    parser.add_argument("--ray-address", help="an existing Ray cluster (auto or HOST:PORT); default: a local Ray on this machine")
    parser.add_argument("--gpus-per-job", type=float, help="GPUs per job, fractions share one (default: 1 if the cluster has GPUs, else 0)")
    parser.add_argument("--cpus-per-job", type=float, default=1.0, help="CPUs per job (default 1; also its torch threads)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (default: a bar on stderr)")
    for name, kind in config_flags.items():
        if name == "out":
            parser.add_argument("--out", metavar="ROOT", help="batch folder (default runs/batch-<date>-<time>)")
        elif name != "run_dir":
            parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None, metavar=name.upper(), help=config_help(name))
    parser.set_defaults(config_flags=[name for name in config_flags if name not in ("out", "run_dir")])


# ---------------------------------------------------------------------- jobs
def load_prompts(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(prompt, config fields) from a text file (one per line, # comments) or a JSON list."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"PROMPTS_FILE {path}: cannot read it ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"PROMPTS_FILE {path}: not JSON ({exc})") from None
        if not isinstance(items, list):
            raise ValueError(f"PROMPTS_FILE {path}: expected a JSON list of prompts")
        prompts = [_json_prompt(item, path, number) for number, item in enumerate(items, 1)]
    else:
        prompts = [(line.strip(), {}) for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not prompts:
        raise ValueError(f"PROMPTS_FILE {path}: no prompts in it")
    return prompts


def _json_prompt(item: Any, path: Path, number: int) -> tuple[str, dict[str, Any]]:
    if isinstance(item, str):
        return item, {}
    if (isinstance(item, dict) and isinstance(item.get("prompt"), str) and isinstance(item.get("config", {}), dict)
            and set(item) <= {"prompt", "config"}):
        return item["prompt"], dict(item.get("config", {}))
    raise ValueError(f'PROMPTS_FILE {path}: item {number} must be a prompt or {{"prompt": ..., "config": {{...}}}}')


def make_jobs(prompts: list[tuple[str, dict[str, Any]]], seeds: int, first_seed: int) -> list[Job]:
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    return [Job(i * seeds + s, prompt, first_seed + s, config)
            for i, (prompt, config) in enumerate(prompts) for s in range(seeds)]


def job_values(job: Job, flags: dict[str, Any], root: Path) -> dict[str, Any]:
    """The job's config fields: the flags, its own fields, prompt, seed and run folder; validated
    without the device preset (that is the worker's, see server.build_config)."""
    from ..config import GenerationConfig

    values = {**flags, **job.config, "prompt": job.prompt, "seed": job.seed, "run_dir": str(root / job.folder_name)}
    try:
        GenerationConfig.from_dict(values).validate()
    except TypeError as exc:
        from ..config import ConfigError

        raise ConfigError("config", str(exc)) from None
    return values


# ---------------------------------------------------------------------- one job, in a Ray worker
def run_job(values: dict[str, Any], threads: int, driver_node: str | None) -> dict[str, Any]:
    """One generation; returns its index.json record. Raises (so Ray retries) on anything but a
    bad config or prompt. Test hook: config extra `fail_attempts: N` raises InjectedFailure in the
    job's first N attempts (counted in the run folder's attempts.json), to test retries."""
    import torch

    from ..errors import TrainingError
    from ..serve.server import build_config
    from ..trainer import Trainer

    torch.set_num_threads(max(threads, 1))
    run_dir = Path(values["run_dir"])
    record: dict[str, Any] = {"prompt": values["prompt"], "seed": values["seed"], "run_dir": str(run_dir), "status": "failed",
                              "error": None, "quality": None, "time_s": None, "attempts": 1, "preview": None}
    try:
        config = build_config(values)
    except (ValueError, TrainingError) as exc:  # bad field, unknown prompt words, missing model: no retry
        return {**record, "run_dir": None, "error": wording.cli(str(exc))}
    attempts = _record_attempt(run_dir)
    started = time.perf_counter()
    try:
        if len(attempts) <= int(config.extra.get(FAIL_ATTEMPTS_HOOK, 0)):
            raise InjectedFailure(f"injected failure in attempt {len(attempts)} (config extra {FAIL_ATTEMPTS_HOOK}, a test hook)")
        outputs = Trainer(config, run_dir, run_id=run_dir.name).run(resume=(run_dir / "checkpoint.pt").is_file())
    except BaseException as exc:
        _record_attempt(run_dir, error=f"{type(exc).__name__}: {exc}")
        raise
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    quality = metrics.get("quality")
    outcome = outputs.get("outcome", "complete")
    no_mesh = outcome == "no_mesh"
    record.update(status="no_mesh" if no_mesh else "done", error=wording.cli(outputs["warning"]) if no_mesh else None,
                  time_s=round(time.perf_counter() - started, 2), attempts=len(attempts), preview=outputs.get("preview"),
                  quality={k: quality[k] for k in ("psnr", "best_target_name", "consistency")} if quality else None)
    if driver_node is not None and _node_id() != driver_node:
        record["files"] = collect_files(run_dir)
    return record


def _record_attempt(run_dir: Path, error: str | None = None) -> list[dict[str, Any]]:
    """Append an attempt (or the current one's error) to the run folder's attempts.json."""
    from ..run_folder import atomic_write_text

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "attempts.json"
    attempts = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    if error is None:
        attempts.append({"started": _dt.datetime.now().isoformat(timespec="seconds"), "node": _node_id(), "error": None})
    elif attempts:
        attempts[-1]["error"] = error
    atomic_write_text(path, json.dumps(attempts, indent=1))
    return attempts


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # not in a Ray worker
        return None


def collect_files(run_dir: Path) -> dict[str, bytes]:
    """The run folder's results (no checkpoint) by relative name, to copy back to the driver."""
    names = [name for name in GATHERED if (run_dir / name).is_file()]
    previews = sorted((run_dir / "previews").glob("step_*.png"))
    names += [p.relative_to(run_dir).as_posix() for p in previews[-1:]]
    return {name: (run_dir / name).read_bytes() for name in names}


def store_files(record: dict[str, Any], root: Path) -> dict[str, Any]:
    """Write a record's copied-back files under `root`, and point the record at them."""
    files = record.pop("files", None)
    if not files:
        return record
    from ..run_folder import atomic_write_bytes

    local = root / Path(record["run_dir"]).name
    for name, data in files.items():
        atomic_write_bytes(local / name, data)
    previews = [name for name in files if name.startswith("previews/")]
    return {**record, "run_dir": str(local), "preview": str(local / previews[-1]) if previews else None}


# ---------------------------------------------------------------------- the batch, on the driver
def run(args: argparse.Namespace) -> int:
    """The `batch` command: 0 when every job is done, 1 when some failed, 3 when none failed but some
    ended without a mesh (as `generate`), 2 on bad input."""
    try:
        import ray
    except ImportError:
        print("error: batch needs Ray: pip install 'dreamtime-backend[cluster]' (or pip install 'ray>=2.9')", file=sys.stderr)
        return 2
    flags = {name: getattr(args, name) for name in args.config_flags if getattr(args, name) is not None}
    jobs = make_jobs(load_prompts(args.prompts_file), args.seeds, flags.pop("seed", 0))
    root = Path(args.out or Path("runs") / f"batch-{_dt.datetime.now():%Y%m%d-%H%M%S}").resolve()
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    owns_ray = not ray.is_initialized()  # a caller (a notebook, the tests) may have connected already
    if owns_ray:
        ray.init(**init_options(args.ray_address))
    try:
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        gpus = args.gpus_per_job if args.gpus_per_job is not None else float(cluster_gpus > 0)
        if gpus < 0 or gpus > cluster_gpus:
            raise ValueError(f"--gpus-per-job {gpus:g}: the Ray cluster has {cluster_gpus:g} GPUs; no job could start")
        if gpus == 0:
            flags.setdefault("device", "cpu")  # a job given no GPU must not take one
        records = _run_jobs(ray, jobs, flags, root, gpus, args)
    finally:
        if owns_ray:
            ray.shutdown()
    summary = write_results(root, records, {"prompts_file": str(args.prompts_file), "seeds": args.seeds, "ray_address": args.ray_address,
                                            "gpus_per_job": gpus, "cpus_per_job": args.cpus_per_job,
                                            "wall_s": round(time.perf_counter() - started, 2)})
    failed = summary["failed"]
    for record in records:  # every job that did not give a mesh, each with its own reason
        if record["status"] != "done":
            kind = "failed" if record["status"] == "failed" else "no mesh"
            print(f"{kind}: {record['prompt']!r} seed {record['seed']}: {record['error']}", file=sys.stderr)
    print(f"{summary['done']} done, {summary['no_mesh']} without a mesh, {failed} failed in {summary['wall_s']:.0f} s: "
          f"{root / 'index.json'}", file=sys.stderr)
    print(root)
    return exit_status(summary)


def exit_status(summary: dict[str, Any]) -> int:
    """As `generate`: 1 when a job failed, else 3 when a job ended without a mesh, else 0."""
    return 1 if summary["failed"] else 3 if summary["no_mesh"] else 0


def init_options(address: str | None) -> dict[str, Any]:
    """ray.init's arguments: a local instance on this machine's CPUs, or the cluster at `address`;
    either way the `backend` package travels with the jobs."""
    package = Path(__file__).resolve().parents[1]  # the backend package
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING",
                               "runtime_env": {"py_modules": [str(package)]}}
    if address:
        return {**options, "address": address}
    return {**options, "num_cpus": os.cpu_count() or 1}


def _run_jobs(ray, jobs: list[Job], flags: dict[str, Any], root: Path, gpus: float, args: argparse.Namespace) -> list[dict[str, Any]]:
    from tqdm import tqdm

    task = ray.remote(run_job).options(num_cpus=args.cpus_per_job, num_gpus=gpus, max_retries=MAX_RETRIES, retry_exceptions=True)
    driver_node = ray.get_runtime_context().get_node_id()
    records: dict[int, dict[str, Any]] = {}
    pending: dict[Any, Job] = {}
    for job in jobs:
        try:
            values = job_values(job, flags, root)
        except ValueError as exc:
            records[job.index] = _failed(job, wording.cli(str(exc)), attempts=0)
            continue
        pending[task.remote(values, max(int(args.cpus_per_job), 1), driver_node)] = job
    bar = tqdm(total=len(jobs), initial=len(records), unit="job", file=sys.stderr, disable=args.quiet, dynamic_ncols=True)
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(ref)
        try:
            record = store_files(ray.get(ref), root)
        except Exception as exc:  # the job failed in every attempt (RayTaskError, a lost worker, ...)
            cause = getattr(exc, "cause", None) or exc
            text = str(cause).strip().splitlines()[0] if str(cause).strip() else f"the job's worker ended ({type(cause).__name__})"
            record = _failed(job, wording.cli(text), attempts=MAX_RETRIES + 1, run_dir=root / job.folder_name)
        records[job.index] = {"index": job.index, **record}
        write_results(root, list(records.values()), None)
        bar.update()
        bar.set_postfix(failed=sum(r["status"] == "failed" for r in records.values()), refresh=False)
    bar.close()
    return [records[job.index] for job in jobs if job.index in records]


def _failed(job: Job, error: str, attempts: int, run_dir: Path | None = None) -> dict[str, Any]:
    return {"index": job.index, "prompt": job.prompt, "seed": job.seed, "run_dir": str(run_dir) if run_dir and run_dir.is_dir() else None,
            "status": "failed", "error": error, "quality": None, "time_s": None, "attempts": attempts, "preview": None}


def write_results(root: Path, records: list[dict[str, Any]], batch: dict[str, Any] | None) -> dict[str, Any]:
    """index.json (rewritten after every job, so a stopped batch still has one) and, at the end
    (`batch` given), contact_sheet.png. Returns the summary."""
    from ..run_folder import atomic_write_text

    records = sorted(records, key=lambda r: r["index"])
    summary = {**(batch or {}), "jobs": len(records), "done": sum(r["status"] == "done" for r in records),
               "no_mesh": sum(r["status"] == "no_mesh" for r in records), "failed": sum(r["status"] == "failed" for r in records),
               "finished": batch is not None}
    if batch is not None:
        from .contact_sheet import contact_sheet

        summary["contact_sheet"] = str(contact_sheet(records, root / "contact_sheet.png"))
    atomic_write_text(root / "index.json", json.dumps({"batch": summary, "jobs": records}, indent=1, ensure_ascii=False))
    return summary
