"""What a backend offers a client before any run (docs/ARCHITECTURE.md §3): the `ready` event's
features and per-device presets, and the notice that the analytic prior is a demo prior."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import threading
from typing import Any

from ..config import DEVICES, ConfigError, preset_for


def check_sd_meanwhile() -> None:
    """Start sd_import_error() on a thread, so importing diffusers (seconds: it pulls in torch's
    compiler stack) overlaps the server's own start instead of following it; `ready` waits for it."""
    threading.Thread(target=sd_import_error, name="sd-import-check", daemon=True).start()


@functools.cache
def sd_import_error() -> str | None:
    """Why Stable Diffusion cannot run here (diffusers or transformers does not import), or None."""
    for name in ("diffusers", "transformers"):
        if importlib.util.find_spec(name) is None:
            return f"{name} is not installed"
        try:
            importlib.import_module(name)
        except Exception as exc:  # a broken install, a version clash with huggingface_hub or torch
            return f"{name} does not import ({type(exc).__name__}: {str(exc).strip()[:200]})"
    return None


def features() -> list[str]:
    """What this backend can do, for the `ready` event: `sd` only when diffusers and transformers import."""
    from ..trainer import Trainer

    found = ["analytic", "cancel", "attach", "init_mesh", "variations", "refine"]
    if sd_import_error() is None:
        found.append("sd")
    if hasattr(Trainer, "request_extract"):
        found.append("extract")
    return found


def presets() -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """For each device this backend can run on: its preset, and the guidance `auto` picks there
    (the `ready` event's `presets` and `auto_guidance`)."""
    from ..config import GenerationConfig
    from ..run_setup import resolve_device, resolve_guidance

    found, picks = {}, {}
    for name in DEVICES:
        try:
            device = resolve_device(name)
        except ConfigError:  # not on this machine
            continue
        found[device.type] = preset_for(device.type)
        picks[device.type] = resolve_guidance(GenerationConfig(guidance="auto"), device)
    return found, picks


def demo_prior_notice() -> str:
    from ..guidance.targets import known_words

    return (f"Guidance: the analytic prior, the offline demo prior. It knows only its {known_words()}; for free text "
            "choose Stable Diffusion (a model download, best on a GPU).")
