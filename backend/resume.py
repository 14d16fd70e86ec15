"""`generate --resume RUN_DIR`: the run's own config, and what becomes of the flags given with it
(docs/ARCHITECTURE.md §6).

A resumed run trains on with the config it was started with (config.json): the same cameras,
noise and schedule step for step. Of the flags given beside --resume, those that only shape what
the end of the run writes (SAFE_ON_RESUME: the mesh's extraction and export, previews,
checkpoints, the device) are applied; any other that differs from the run's value is ignored and
named in a note; a prompt that differs from the run's is an error (it would be another run).
`--steps` above the run's is a refine, handled before this (see the refine issue's code).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import ConfigError, GenerationConfig

SAFE_ON_RESUME = ("preview_every", "checkpoint_every", "mesh_resolution", "mesh_threshold", "mesh_smooth", "mesh_faces", "texture_size",
                  "export", "vertex_colors", "device", "precision")


class ResumeError(ValueError):
    """A resume that cannot be what was asked (CLI exit status 2)."""


def resumed_config(run_dir: str | Path, given: dict[str, Any], prompt: str | None) -> tuple[GenerationConfig, list[str]]:
    """The config a resume of `run_dir` runs with, and notes on the flags `given` beside it
    ({field: value} of the flags on the command line; `prompt`: the prompt given, or None)."""
    run_dir = Path(run_dir)
    try:
        values = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        config = GenerationConfig.from_dict(values).validate()
    except (OSError, ValueError) as exc:
        raise ResumeError(f"cannot resume {run_dir}: no readable config.json ({exc})") from None
    if prompt is not None and prompt.strip() != config.prompt.strip():
        raise ResumeError(f"--resume {run_dir}: that run's prompt is {config.prompt!r}, not {prompt!r}. Leave the prompt out to "
                          "continue it, or leave --resume out to start a new run of this prompt")
    applied, ignored = {}, []
    for name, value in given.items():
        if name == "export" and isinstance(value, str):
            value = tuple(fmt.strip() for fmt in value.split(",") if fmt.strip())
        current = getattr(config, name)
        if value == current or (isinstance(current, tuple) and tuple(value) == current):
            continue
        if name in SAFE_ON_RESUME:
            applied[name] = value
        else:
            ignored.append(f"--{name.replace('_', '-')} {value} (the run keeps {_shown(current)})")
    notes = []
    if applied:
        try:
            config = GenerationConfig.from_dict({**config.to_dict(), **applied}).validate()
        except ConfigError:
            raise
        notes.append("applied to the resumed run: " + ", ".join(f"--{n.replace('_', '-')} {_shown(getattr(config, n))}" for n in applied))
    if ignored:
        notes.append("ignored, a resumed run trains on with its own config: " + "; ".join(ignored))
    return config, notes


def _shown(value: Any) -> str:
    return ",".join(value) if isinstance(value, (tuple, list)) else str(value)
