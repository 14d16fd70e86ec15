"""How a run's end reads in the panel (docs/ARCHITECTURE.md §3, §10): the status line and the
history entry from the done event's outcome (protocol.OUTCOMES), and a message with its hint as
sentences.

- complete: "done: 700 steps"; history "done".
- stopped: "cancelled at step 81 of 700" when this add-on's Cancel (or the client's, over TCP)
  stopped it, "stopped by the backend at step 81 of 700" when the backend was stopped (a signal,
  its shutdown); history "cancelled" / "stopped". The checkpoint and the mesh are kept either way.
- no_mesh: "done without a mesh after 700 steps"; history "no mesh"; the warning with what to change
  stays in the panel.
"""

from __future__ import annotations

import json

from . import backend_link, variations

HISTORY_STATUS = {"complete": "done", "no_mesh": "no mesh"}


def text(event: dict) -> str:
    """An error or warning event's message and hint, as sentences."""
    return backend_link.wording.sentences(event.get("message", ""), event.get("hint", ""))


def words(event: dict, cancelled: bool, steps_total: int) -> tuple[str, str]:
    """(status line, history status) of a done event; `cancelled`: this add-on sent Cancel."""
    outcome = backend_link.protocol.outcome(event)
    outputs = event.get("outputs", {})
    step = event.get("step", outputs.get("steps_done"))
    of = f" of {steps_total}" if steps_total else ""
    if outcome == "stopped" or (outcome == "complete" and "stopped_at" in outputs):
        by_client = cancelled or event.get("stopped_by") == "client"
        if by_client:
            return f"cancelled at step {step}{of}: the checkpoint and mesh are kept", "cancelled"
        return f"stopped by the backend at step {step}{of}: the checkpoint and mesh are kept", "stopped"
    if outcome == "no_mesh":
        stopped = f", stopped at step {step}{of}" if "stopped_at" in outputs else f" after {step} steps"
        return f"done without a mesh{stopped}", HISTORY_STATUS[outcome]
    return f"done: {step} steps", HISTORY_STATUS[outcome]


def record(run, props, event: dict) -> None:
    """The panel's state and a history entry for the run's done event."""
    outputs = event.get("outputs", {})
    props.run_dir = outputs.get("run_dir", "") or props.run_dir
    status, history = words(event, run.cancel_at is not None, props.steps_total)
    item = props.history.add()
    sent = {**backend_link.config.GenerationConfig().to_dict(), **run.config}  # what the run had: its changes over the defaults
    item.prompt, item.seed, item.schedule, item.status = sent["prompt"], sent["seed"], sent["schedule"], history
    mesh = outputs.get("mesh", outputs.get("mesh_glb", props.mesh_path)) or ""
    item.run_dir, item.mesh_path, item.config_json = props.run_dir, mesh, json.dumps(run.config)
    item.backend_run_dir = outputs.get("remote_run_dir") or props.run_dir
    item.steps_done, item.variations = int(outputs.get("steps_done", props.step) or 0), int(sent.get("variations", 1))
    item.source_object = run.source_object
    props.history_index = len(props.history) - 1
    props.running, props.status = False, status
    if "variations" in outputs:
        variations.store(props, outputs, getattr(run.process, "local_copies", {}))
