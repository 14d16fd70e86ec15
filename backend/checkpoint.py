"""checkpoint.pt: what a run needs to go on from a step (docs/ARCHITECTURE.md §6).

The field's parameters and whether it is an SDF yet, Adam's state, and the metrics so far, written
atomically (a killed process leaves the previous checkpoint whole). Loading a truncated or foreign
file raises TrainingError with code "resume", never a traceback. A hash grid saved by tiny-cuda-nn
loads into the pure-torch grid and back (the table and Adam's moments of it are reshaped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .adam import FieldAdam
from .errors import TrainingError
from .field import NeRFField
from .run_folder import atomic_path

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_VERSION = 1


def save_checkpoint(run_dir: Path, step: int, field: NeRFField, optimizer: FieldAdam, metrics: dict[str, Any]) -> Path:
    """The state after `step` steps, as run_dir/checkpoint.pt; returns its path."""
    path = run_dir / CHECKPOINT_NAME
    state = {
        "version": CHECKPOINT_VERSION,
        "step": step,
        "field": field.state_dict(),
        "sdf_mode": field.sdf_mode,
        "optimizer": optimizer.state_dict(),
        "metrics": metrics,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(run_dir: Path, field: NeRFField, optimizer: FieldAdam, device: torch.device) -> tuple[int, dict[str, Any]]:
    """Load run_dir/checkpoint.pt into `field` and `optimizer`; returns (its step, its metrics)."""
    path = run_dir / CHECKPOINT_NAME
    if not path.exists():
        raise TrainingError("resume", f"no checkpoint.pt in {run_dir}", "Start a new run, or point --resume at a run folder.")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
        field.load_state_dict(field.matching_state(state["field"]))
        field.sdf_mode = bool(state.get("sdf_mode", False))
        optimizer.load_state_dict(_matching_optimizer_state(state["optimizer"], optimizer))
        step = int(state["step"])
    except Exception as exc:  # a truncated or foreign file: say so, never a traceback
        raise TrainingError("resume", f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc})", "Start a new run.") from None
    return step, state.get("metrics", {})


def _matching_optimizer_state(saved: dict[str, Any], optimizer: FieldAdam) -> dict[str, Any]:
    """Adam's saved state with each moment shaped as its parameter is now: the same numbers, reshaped,
    where the field's layout changed (tcnn's flat table (T * F,) against the torch grid's (T, F))."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for index, entry in saved.get("state", {}).items():
        param = params[index] if isinstance(index, int) and index < len(params) else None
        state[index] = {
            name: value.reshape(param.shape)
            if param is not None and torch.is_tensor(value) and value.dim() > 0 and value.shape != param.shape
            and value.numel() == param.numel() else value
            for name, value in entry.items()
        }
    return {**saved, "state": state}
