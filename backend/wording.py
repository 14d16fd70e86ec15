"""The two wordings of a message that names a setting: the CLI's (flags) and the panel's (docs/ARCHITECTURE.md §3).

Standard library only: the add-on imports this file too (backend_link.py). A message or hint
written once names a setting as a marker, `[[field]]` or `[[field=value]]` (a GenerationConfig
field, or one of ACTIONS); `cli()` renders it as the flag a terminal user types (`--mesh-threshold`,
`--guidance sd`), `panel()` as the place an artist sets it in Blender (`Advanced › Extra Config
{"mesh_threshold": …}`, `Guidance: Stable Diffusion`, `Preferences › Device: CPU`). The CLI and the
batch print `cli()` text; the server sends `panel()` text, since its client is the add-on.
tests/backend/test_wording.py checks that every flag a rendering names exists in the CLI's parser;
tests/addon/test_wording_panel.py that every panel place names a real panel or preferences field.
"""

from __future__ import annotations

import json
import re

MARKER = re.compile(r"\[\[([a-z_0-9]+)(?:=([^\]]*))?\]\]")

# Where the artist sets a config field in Blender: the panel field's label, under the sub-panel it
# is in, or the add-on's preferences. A field not here is set in Advanced › Extra Config as JSON.
MAIN, ADVANCED, SCHEDULE, PREFERENCES = "", "Advanced › ", "Schedule › ", "Preferences › "
PANEL_PLACES: dict[str, tuple[str, str]] = {
    "prompt": (MAIN, "Prompt"), "negative_prompt": (MAIN, "Negative Prompt"), "seed": (MAIN, "Seed"), "steps": (MAIN, "Steps"),
    "guidance": (MAIN, "Guidance"), "resolution": (MAIN, "Resolution"),
    "schedule": (SCHEDULE, "Schedule"), "m1": (SCHEDULE, "m1"), "m2": (SCHEDULE, "m2"), "s1": (SCHEDULE, "s1"), "s2": (SCHEDULE, "s2"),
    "t_min": (SCHEDULE, "t min"), "t_max": (SCHEDULE, "t max"),
    "guidance_scale": (ADVANCED, "Guidance Scale"), "preview_every": (ADVANCED, "Preview Every"),
    "samples_per_ray": (ADVANCED, "Samples per Ray"), "mesh_resolution": (ADVANCED, "Mesh Resolution"),
    "mesh_faces": (ADVANCED, "Mesh Faces"), "texture_size": (ADVANCED, "Texture Size"),
    "model": (PREFERENCES, "Model"), "device": (PREFERENCES, "Device"), "out": (PREFERENCES, "Output Folder"),
}
EXTRA_CONFIG = (ADVANCED, "Extra Config")
# The panel's labels of choice values (properties.py and preferences.py label their enum items so).
VALUE_LABELS: dict[str, dict[str, str]] = {
    "guidance": {"auto": "Auto", "analytic": "Analytic (offline demo)", "sd": "Stable Diffusion"},
    "device": {"auto": "Auto", "cpu": "CPU", "cuda": "CUDA", "mps": "Apple GPU (MPS)"},
    "schedule": {"tp": "Time-prioritized (TP-SDS)", "uniform": "Uniform (plain SDS)", "linear": "Linear"},
}
# CLI flags whose name is not the field's (switches, and the one that turns a default off).
CLI_SWITCHES = {"low_vram": "--low-vram", "vertex_colors": "--vertex-colors", "use_w_d": "--no-wd"}
# Markers that are not config fields: (CLI words, panel words).
ACTIONS: dict[str, tuple[str, str]] = {
    "resume": ("--resume RUN_DIR", "the CLI's --resume RUN_DIR (the panel starts new runs)"),
}


def cli_flag(name: str) -> str:
    return CLI_SWITCHES.get(name) or "--" + name.replace("_", "-")


def _cli(match: re.Match) -> str:
    name, value = match.group(1), match.group(2)
    if name in ACTIONS:
        return ACTIONS[name][0]
    if name in CLI_SWITCHES:
        return CLI_SWITCHES[name]
    return cli_flag(name) + ("" if value is None else f" {value}")


def _panel(match: re.Match) -> str:
    name, value = match.group(1), match.group(2)
    if name in ACTIONS:
        return ACTIONS[name][1]
    place = PANEL_PLACES.get(name)
    if place is None:  # only in Extra Config, as JSON
        shown = "…" if value is None else json.dumps(_json_value(value))
        return f'{"".join(EXTRA_CONFIG)} {{"{name}": {shown}}}'
    text = "".join(place)
    if value is None:
        return text
    return f"{text}: {VALUE_LABELS.get(name, {}).get(value, value)}"


def _json_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def cli(text: str) -> str:
    """`text` for a terminal: each marker as its flag."""
    return MARKER.sub(_cli, text or "")


def panel(text: str) -> str:
    """`text` for the Blender panel: each marker as the place the artist sets it."""
    return MARKER.sub(_panel, text or "")


def fields_named(text: str) -> list[str]:
    """The markers' names in `text` (tests)."""
    return [match.group(1) for match in MARKER.finditer(text or "")]


def sentences(*parts: str) -> str:
    """Parts of a message (a message and its hint) joined as sentences: each ends with a full stop
    (unless it already ends a sentence) and starts with a capital; empty parts dropped."""
    out = []
    for part in parts:
        text = (part or "").strip()
        if not text:
            continue
        text = text[0].upper() + text[1:]
        out.append(text if text[-1] in ".!?" else text + ".")
    return " ".join(out)


WORDED_EVENTS = ("error", "log")  # protocol events whose message and hint may name settings


def panel_event(event: dict) -> dict:
    """A protocol event as the add-on shows it: its message and hint with settings as panel fields."""
    if event.get("type") not in WORDED_EVENTS:
        return event
    return {**event, **{key: panel(event[key]) for key in ("message", "hint") if isinstance(event.get(key), str)}}
