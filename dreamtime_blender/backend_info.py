"""What the add-on knows of its backend before a run: the last `ready` event (device, features and
each device's preset), kept in the preferences, and from it the run the panel's settings make —
the device it runs on and the steps it trains (docs/ARCHITECTURE.md §2, §10).

The panel sends only what the artist changed (properties.to_config), so a setting left at its
default is the backend's device preset's: 700 steps on a CPU, 5000 on CUDA. This is where the
panel learns which one that is.
"""

from __future__ import annotations

import json

from . import backend_link

CONFIG = backend_link.config


def remember(preferences, event: dict) -> None:
    """Keep a ready event's device, features, presets and auto guidance (in the preferences, for the next session too)."""
    if preferences is None:
        return
    info = {key: event.get(key) for key in ("device", "features", "presets", "auto_guidance")}
    preferences.backend_ready = json.dumps({**info, "backend": preferences.backend})


def known(preferences) -> dict | None:
    """The remembered ready of the backend the preferences name now, or None."""
    try:
        info = json.loads(preferences.backend_ready) if preferences is not None and preferences.backend_ready else None
    except ValueError:
        return None
    return info if isinstance(info, dict) and info.get("backend") == preferences.backend else None


def expected_run(values: dict, info: dict | None) -> tuple[str | None, int | None]:
    """(device, steps) of a run of the config `values` (what to_config sends) on the backend `info`
    describes; None for what is not known yet (no backend has answered)."""
    device = values.get("device", "auto")
    if device == "auto":
        device = info.get("device") if info else None
    if "steps" in values:
        return device, values["steps"]
    if device is None:
        return None, None
    presets = (info or {}).get("presets") or {}
    preset = presets.get(device) if isinstance(presets.get(device), dict) else CONFIG.preset_for(device)
    return device, int(preset.get("steps", CONFIG.GenerationConfig().steps))


def run_line(values: dict, info: dict | None) -> str:
    """The panel's line about the run Generate would start."""
    device, steps = expected_run(values, info)
    if device is None:
        cpu, default = CONFIG.preset_for("cpu").get("steps"), CONFIG.GenerationConfig().steps
        return f"Device not known yet ({cpu} steps on a CPU, {default} on CUDA): Test Backend in the preferences tells"
    preset = "" if "steps" in values else " (its preset)"
    return f"Runs on {device}: {steps} steps{preset}"


def resolved_guidance(values: dict, info: dict | None) -> str | None:
    """The guidance a run of `values` gets; `auto` is what the backend said it picks on that device
    (its ready event's `auto_guidance`), None while that is not known."""
    guidance = values.get("guidance", "auto")
    if guidance != "auto":
        return guidance
    device, _ = expected_run(values, info)
    picks = (info or {}).get("auto_guidance") or {}
    return picks.get(device) if isinstance(picks, dict) else None
