"""Variations: one prompt, N seeds (config `variations`; `generate PROMPT --variations N`, the panel's Variations).

Seeds seed .. seed+N-1, each an ordinary run in its own run folder `<root>/s<seed>/`, one after
another on this backend, or as Ray tasks on a cluster when a Ray address is given
(ray_variations.py, through batch.run_job: a job there is exactly a batch job). Then `<root>/variations.png`, a contact sheet of the final
previews labelled with seed and, for the analytic prior, the target each seed reached, and
`<root>/variations.json`: every variation's folder, mesh, quality, and how many distinct targets
the N seeds reached (DreamTime's diversity across seeds, as a tool).

Behind the protocol this is one run: progress counts the steps of all N (variation k's step i is
k·steps + i), each variation's preview and mesh events go out as they come (the add-on keeps the
meshes for import and does not import them on its own), its `done` is held back, and one `done`
at the end carries the variations. A variation that fails is recorded and the others go on; a
stop request ends the current one as a stop does (its mesh is written) and starts no more.
`resume` skips the variations that finished and resumes the one that was cut short.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from .. import protocol
from ..config import GenerationConfig
from ..run_folder import atomic_write_text
from .contact_sheet import TRAINED

log = logging.getLogger("dreamtime")

SHEET_NAME = "variations.png"
NO_MESH_ERROR = "trained to the end, but the field has no surface to mesh (its preview shows what it reached)"
INDEX_NAME = "variations.json"


def variation_dir(root: Path, seed: int) -> Path:
    return root / f"s{seed}"


def record_of(run_dir: Path, seed: int, status: str = "done", error: str | None = None, time_s: float | None = None) -> dict[str, Any]:
    """A variation's entry in variations.json (and its contact-sheet cell), from its run folder."""
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    quality = metrics.get("quality")
    previews = sorted((run_dir / "previews").glob("step_*.png"))
    meshes = {fmt: str(run_dir / f"mesh.{fmt}") for fmt in ("glb", "ply", "obj") if (run_dir / f"mesh.{fmt}").is_file()}
    target = quality.get("best_target_name") if quality else None
    if status == "done" and not meshes:  # trained to the end, but the field has no surface (protocol outcome no_mesh)
        status, error = "no_mesh", error or NO_MESH_ERROR
    label = (target or f"seed {seed}") + (" (no mesh)" if status == "no_mesh" else "")  # also a Ray job's own no_mesh
    return {"prompt": "", "seed": seed, "run_dir": str(run_dir), "status": status, "error": error, "time_s": time_s,
            "steps_done": metrics["step"][-1] + 1 if metrics.get("step") else 0,  # what a refine must go past
            "preview": str(previews[-1]) if previews else None, "mesh": meshes.get("glb") or next(iter(meshes.values()), None),
            "quality": {k: quality[k] for k in ("psnr", "best_target_name", "consistency")} if quality else None,
            "label": label}


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """How many variations ended with a mesh (done), trained to the end without one (no_mesh) or failed,
    and how many distinct targets those with a mesh reached (analytic prior), and which."""
    reached = Counter(r["quality"]["best_target_name"] for r in records if r["status"] == "done" and r.get("quality"))
    return {"variations": len(records), "done": sum(r["status"] == "done" for r in records),
            "no_mesh": sum(r["status"] == "no_mesh" for r in records),
            "distinct_targets": len(reached) if reached else None, "targets": dict(reached.most_common())}


class Variations:
    """N seeds of one config; duck-types the Trainer for the server (run, request_extract)."""

    def __init__(self, config: GenerationConfig, root: str | Path, on_event: Callable[[dict[str, Any]], None] | None = None,
                 stop: threading.Event | None = None, run_id: str = "run",
                 ray_runner: Callable[["Variations"], list[dict[str, Any]]] | None = None):
        """`ray_runner`: runs the variations elsewhere and returns their records (ray_variations.run_on_ray)."""
        self.config = config.validate()
        self.root = Path(root)
        self.on_event = on_event or (lambda event: None)
        self.stop = stop or threading.Event()
        self.run_id, self.ray_runner = run_id, ray_runner
        self.seeds = [config.seed + k for k in range(config.variations)]
        self.current = None  # the Trainer running now (extract requests go to it)

    def request_extract(self) -> None:
        if self.current is not None:
            self.current.request_extract()

    def child_config(self, seed: int) -> GenerationConfig:
        return self.config.replace(seed=seed, variations=1, run_dir=str(variation_dir(self.root, seed))).validate()

    def run(self, resume: bool = False) -> dict[str, Any]:
        self.root.mkdir(parents=True, exist_ok=True)
        if not resume:
            atomic_write_text(self.root / "config.json", self.config.to_json())
        records = self.ray_runner(self) if self.ray_runner else self._run_here(resume)
        for record in records:
            record["prompt"] = self.config.prompt
        outputs = self.finish(records)
        self.on_event(protocol.done(self.run_id, outputs))
        return outputs

    # ------------------------------------------------------------------ one after another, here
    def _run_here(self, resume: bool) -> list[dict[str, Any]]:
        from ..errors import TrainingError
        from ..trainer import Trainer

        records = []
        for k, seed in enumerate(self.seeds):
            run_dir = variation_dir(self.root, seed)
            if self.stop.is_set():
                break
            if resume and (run_dir / "metrics.json").is_file():  # finished before the stop
                records.append(record_of(run_dir, seed))
                continue
            self.on_event(protocol.log("info", f"variation {k + 1} of {len(self.seeds)}: seed {seed}"))
            started = time.perf_counter()
            self.current = Trainer(self.child_config(seed), run_dir, on_event=self._child_events(k, started), stop=self.stop,
                                   run_id=self.run_id)
            try:
                self.current.run(resume=resume and (run_dir / "checkpoint.pt").is_file())
                records.append(record_of(run_dir, seed, time_s=round(time.perf_counter() - started, 2)))
            except TrainingError as exc:
                log.warning("variation seed %d failed: %s", seed, exc)
                self.on_event(protocol.log("warning", f"variation seed {seed} failed: {exc}"))
                records.append(record_of(run_dir, seed, "failed", str(exc)))
            finally:
                self.current = None
        return records

    def _child_events(self, k: int, started: float) -> Callable[[dict[str, Any]], None]:
        n, steps = len(self.seeds), self.config.steps

        def on_event(event: dict[str, Any]) -> None:
            if event["type"] == "done":  # one done, for all of them, at the end
                return
            if event["type"] == "progress":
                child_s = time.perf_counter() - started + event["eta_s"]  # this variation's whole time, as it looks now
                event = {**event, "step": k * steps + event["step"], "steps": n * steps, "eta_s": event["eta_s"] + (n - k - 1) * child_s}
            self.on_event(event)

        return on_event

    # ------------------------------------------------------------------ the sheet and the index
    def finish(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        from .contact_sheet import contact_sheet

        summary = summarize(records)
        sheet = contact_sheet(records, self.root / SHEET_NAME, columns=min(len(self.seeds), 8)) if records else None
        index = self.root / INDEX_NAME
        atomic_write_text(index, json.dumps({"prompt": self.config.prompt, "seeds": self.seeds, "schedule": self.config.schedule,
                                             **summary, "records": records}, indent=1, ensure_ascii=False))
        message = f"{summary['done']} of {len(self.seeds)} variations done"
        if summary["no_mesh"]:
            message += f", {summary['no_mesh']} without a mesh"
        if summary["distinct_targets"] is not None:
            reached = ", ".join(f"{name} x{count}" for name, count in summary["targets"].items())
            message += f"; {summary['distinct_targets']} distinct targets: {reached}"
        log.info(message)
        self.on_event(protocol.log("info", message))
        if sheet is not None:
            from PIL import Image

            with Image.open(sheet) as image:
                self.on_event(protocol.preview(self.run_id, len(self.seeds) * self.config.steps, str(sheet), image.width, image.height))
        return {"run_dir": str(self.root), "variations": records, "contact_sheet": str(sheet) if sheet else None,
                "variations_index": str(index), "distinct_targets": summary["distinct_targets"], "targets": summary["targets"],
                "steps_done": sum(r["status"] in TRAINED for r in records) * self.config.steps, "summary": message,
                "outcome": "stopped" if self.stop.is_set() else "complete"}
