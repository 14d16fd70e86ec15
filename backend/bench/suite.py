"""The prompts `bench convergence` runs (issue 5, docs/ARCHITECTURE.md §8): multi-modal sets on the analytic prior.

Three kinds of entry:
  colour modes    a shape without a colour: K targets with one geometry, any one is right;
  geometry modes  targets that differ in shape (a cone pointing up or down, a mug with its handle
                  on the left or the right: the analogue of text-to-3D's multi-face problem, where
                  a field that mixes the modes looks right from some views and wrong from others);
  controls        one target: the schedules' speed and accuracy without any choice to make.

An entry is a prompt the analytic prior reads, or a targets dict in the JSON format of
backend/guidance/targets.py (written to a file in the bench folder so each run reads it like `--targets`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SuiteEntry:
    name: str  # short id, used in folder names and tables
    kind: str  # colour modes | geometry modes | control
    prompt: str  # the prompt of the run (for analytic entries with targets: a label)
    targets: dict[str, Any] | None = field(default=None, compare=False)  # JSON targets; None: from the prompt


def _cone(name: str, rotation: float) -> dict[str, Any]:
    return {"name": name, "parts": [{"shape": "cone", "color": "orange", "rotation": [rotation, 0, 0]}]}


def _mug(name: str, side: float) -> dict[str, Any]:
    """A cylinder with a torus handle on the +x (side 1) or -x (side -1) side, ring in the xz plane."""
    body = {"shape": "cylinder", "color": "blue", "scale": 0.75}
    handle = {"shape": "torus", "color": "blue", "scale": 0.45, "center": [0.35 * side, 0, 0], "rotation": [90, 0, 0]}
    return {"name": name, "parts": [body, handle]}


CONE_UP_OR_DOWN = SuiteEntry("cone_up_down", "geometry modes", "an orange cone, up or down",
                             {"targets": [_cone("cone up", 0), _cone("cone down", 180)]})
MUG_HANDLE = SuiteEntry("mug_handle", "geometry modes", "a blue mug, handle left or right",
                        {"targets": [_mug("handle right", 1), _mug("handle left", -1)]})
SPHERE_OR_CUBE = SuiteEntry("sphere_or_cube", "geometry modes", "a green sphere or a green cube", None)

SUITES: dict[str, tuple[SuiteEntry, ...]] = {
    "quick": (
        SuiteEntry("torus", "colour modes", "a torus"),
        CONE_UP_OR_DOWN,
        MUG_HANDLE,
        SuiteEntry("red_torus", "control", "a red torus"),
    ),
    "full": (
        SuiteEntry("torus", "colour modes", "a torus"),
        SuiteEntry("capsule", "colour modes", "a capsule"),
        CONE_UP_OR_DOWN,
        MUG_HANDLE,
        SPHERE_OR_CUBE,
        SuiteEntry("red_torus", "control", "a red torus"),
        SuiteEntry("yellow_cube", "control", "a yellow cube"),
    ),
    # The sensitivity sweep: one colour-mode and one geometry-mode set.
    "sweep": (SuiteEntry("torus", "colour modes", "a torus"), MUG_HANDLE),
    # Tests: one prompt, cheap to run.
    "minimal": (SuiteEntry("red_sphere", "control", "a red sphere"),),
}


def suite_entries(name: str, targets_file: str = "") -> tuple[SuiteEntry, ...]:
    """The entries of suite `name`, or one entry read from a targets file when one is given."""
    if targets_file:
        data = json.loads(Path(targets_file).read_text(encoding="utf-8"))
        kind = "control" if len(data.get("targets", [])) == 1 else "geometry modes"
        return (SuiteEntry(Path(targets_file).stem, kind, Path(targets_file).stem, data),)
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    return SUITES[name]


# The `paper` suite: prompts in the style of the figures of DreamFusion and DreamTime (objects,
# animals, characters; written for this bench, not copied from the papers). Animals and characters
# have a front and a back, where the multi-face (Janus) problem the paper addresses shows. Scored
# with --clip: R@1 among these 15 prompts (chance 1/15). The command a GPU user runs is in README
# "Does TP-SDS help?"; it has not been run here (no GPU, no weights).
PAPER_SUITE: tuple[SuiteEntry, ...] = tuple(
    SuiteEntry(name, kind, prompt) for name, kind, prompt in (
        ("hamburger", "object", "a DSLR photo of a hamburger"),
        ("teapot", "object", "a DSLR photo of a blue and white porcelain teapot"),
        ("rocking_chair", "object", "a DSLR photo of a wooden rocking chair"),
        ("sports_car", "object", "a zoomed out DSLR photo of a red sports car"),
        ("pancakes", "object", "a DSLR photo of a stack of pancakes with maple syrup"),
        ("corgi", "animal", "a zoomed out DSLR photo of a corgi"),
        ("squirrel", "animal", "a DSLR photo of a squirrel eating an acorn"),
        ("eagle", "animal", "a DSLR photo of a bald eagle"),
        ("frog", "animal", "a DSLR photo of a frog sitting on a lily pad"),
        ("owl", "animal", "a DSLR photo of an owl perched on a branch"),
        ("astronaut", "character", "a DSLR photo of an astronaut in a white spacesuit, full body"),
        ("knight", "character", "a knight in shining armor, full body"),
        ("robot", "character", "a DSLR photo of a robot playing the guitar"),
        ("wizard", "character", "a cartoon wizard with a long beard and a blue hat, full body"),
        ("fox_figurine", "character", "a ceramic figurine of a fox wearing a red coat"),
    )
)

# Stable Diffusion has no known answer: text prompts whose objects have several plausible forms.
SD_SUITES: dict[str, tuple[SuiteEntry, ...]] = {
    "quick": (
        SuiteEntry("mug", "open", "a ceramic coffee mug"),
        SuiteEntry("corgi", "open", "a corgi dog, full body"),
        SuiteEntry("chair", "open", "a wooden chair"),
    ),
    "minimal": (SuiteEntry("mug", "open", "a ceramic coffee mug"),),
    # Tests of the CLIP scores: two prompts, so R@1 has a chance level (0.5) below 1.
    "pair": (SuiteEntry("mug", "open", "a ceramic coffee mug"), SuiteEntry("chair", "open", "a wooden chair")),
    "paper": PAPER_SUITE,
}


def sd_entries(name: str) -> tuple[SuiteEntry, ...]:
    if name not in SD_SUITES:
        raise ValueError(f"unknown suite {name!r} for sd guidance; known: {', '.join(SD_SUITES)}")
    return SD_SUITES[name]


def targets_path(entry: SuiteEntry, folder: Path) -> str:
    """Where `entry`'s targets file goes in `folder` (empty string for prompt-only entries)."""
    return "" if entry.targets is None else str(folder / f"{entry.name}.targets.json")


def write_targets(entry: SuiteEntry, folder: Path) -> str:
    """Write `entry`'s targets file into `folder`; returns its path ("" for prompt-only entries)."""
    path = targets_path(entry, folder)
    if path:
        folder.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(entry.targets, indent=1), encoding="utf-8")
    return path
