"""Variations as Ray tasks (`generate PROMPT --variations N --ray-address A`): each seed one batch job
(batch.run_job: retried once, run folders from other nodes copied back), records for variations.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import protocol
from .batch import MAX_RETRIES, init_options, run_job, store_files
from .variations import Variations, record_of, variation_dir


def run_on_ray(variations: Variations, address: str) -> list[dict[str, Any]]:
    """Run every seed of `variations` on the Ray cluster at `address` (one CPU each, one GPU each when it has GPUs)."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray-address needs Ray: pip install 'dreamtime-backend[cluster]' (or pip install 'ray>=2.9')") from None

    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(**init_options(address))
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0) > 0)
        task = ray.remote(run_job).options(num_cpus=1, num_gpus=gpus, max_retries=MAX_RETRIES, retry_exceptions=True)
        driver = ray.get_runtime_context().get_node_id()
        pending = {task.remote(variations.child_config(seed).to_dict(), 1, driver): seed for seed in variations.seeds}
        records = {}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            seed = pending.pop(ref)
            try:
                job = store_files(ray.get(ref), variations.root)
                records[seed] = record_of(Path(job["run_dir"]), seed, job["status"], job.get("error"), job.get("time_s"))
            except Exception as exc:  # failed in every attempt (RayTaskError, a lost worker, ...)
                records[seed] = record_of(variation_dir(variations.root, seed), seed, "failed", f"{type(exc).__name__}: {exc}")
            variations.on_event(protocol.log("info", f"variation seed {seed}: {records[seed]['status']}"))
    finally:
        if owns_ray:
            ray.shutdown()
    return [records[seed] for seed in variations.seeds]
