"""backend/wording.py: every setting a message names is one the reader can set — a real CLI flag in
the terminal, a real panel field in Blender (that half: tests/addon/test_wording_panel.py)."""

import argparse
import ast
import dataclasses
import re
from pathlib import Path

import pytest

from backend import wording
from backend.cli import build_parser
from backend.config import GenerationConfig

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(REPO / "backend").rglob("*.py"), *(REPO / "dreamtime_blender").rglob("*.py")])
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
# Flags of other programs that messages quote (hf download, pip, nvidia-smi, ssh).
OTHER_PROGRAMS = {"local-dir", "index-url", "upgrade", "query-gpu", "format", "json"}


def string_literals(path: Path) -> list[str]:
    """Every string constant of a module, f-strings' literal parts included (docstrings too: they are read)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def every_option(parser: argparse.ArgumentParser) -> set[str]:
    options = set()
    for action in parser._actions:
        options.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= every_option(sub)
    return options


OPTIONS = every_option(build_parser())
GENERATE = every_option(build_parser()._subparsers._group_actions[0].choices["generate"])
FIELDS = {f.name for f in dataclasses.fields(GenerationConfig)}


def test_every_flag_any_message_or_hint_names_is_a_flag_of_the_cli():
    unknown = {}
    for path in SOURCES:
        for text in string_literals(path):
            for name in FLAG.findall(text):
                if "--" + name not in OPTIONS and name not in OTHER_PROGRAMS:
                    unknown.setdefault(f"--{name}", []).append(str(path.relative_to(REPO)))
    assert not unknown, unknown


def test_every_marker_in_the_sources_is_a_setting_with_a_generate_flag():
    named = {name for path in SOURCES if path.name != "wording.py" for text in string_literals(path) for name in wording.fields_named(text)}
    assert {"mesh_threshold", "mesh_smooth", "steps", "guidance", "device", "model", "low_vram"} <= named  # the scan sees them
    for name in named:
        assert name in FIELDS or name in wording.ACTIONS, name
        flag = wording.cli(f"[[{name}]]").split()[0]
        assert flag in GENERATE, (name, flag)


@pytest.mark.parametrize("name", sorted(FIELDS - {"extra", "prompt"}))
def test_every_config_field_renders_as_a_generate_flag_or_says_it_has_none(name):
    flag = wording.cli(f"[[{name}]]")
    if flag in GENERATE:
        return
    assert wording.panel(f"[[{name}]]").startswith("Advanced › Extra Config"), name  # no flag: only the panel's Extra Config


def test_the_two_wordings_of_one_hint():
    hint = "Train longer (more [[steps]]), or lower [[mesh_threshold]], or use [[guidance=sd]] on [[device=cuda]]."
    assert wording.cli(hint) == "Train longer (more --steps), or lower --mesh-threshold, or use --guidance sd on --device cuda."
    assert wording.panel(hint) == ('Train longer (more Steps), or lower Advanced › Extra Config {"mesh_threshold": …}, '
                                   "or use Guidance: Stable Diffusion on Preferences › Device: CUDA.")
    assert wording.cli("[[low_vram=true]]") == "--low-vram"
    assert wording.panel("[[low_vram=true]]") == 'Advanced › Extra Config {"low_vram": true}'
    assert wording.cli("no markers, {braces} and [brackets] stay") == "no markers, {braces} and [brackets] stay"
