"""`generate --help` (and `batch --help`): a line for each config flag, from the config itself.

The description is the field's own comment in backend/config.py (GenerationConfig, one line each:
the one source), the default its default there and, where the CPU preset changes it, the preset's
too (config.CPU_PRESET), since a CPU run gets that one.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from functools import lru_cache

from . import config

FIELD_LINE = re.compile(r"^    (\w+): [^=]+= .*?  # (.+)$")


@lru_cache(maxsize=1)
def field_comments() -> dict[str, str]:
    """{field: its comment} of GenerationConfig, read from config.py's source."""
    source = inspect.getsource(config.GenerationConfig)
    return {match.group(1): match.group(2).strip() for match in map(FIELD_LINE.match, source.splitlines()) if match}


def shown(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    if value == "":
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_help(name: str) -> str:
    """One line for the flag of config field `name`: what it is and its default(s); % escaped for argparse."""
    field = next(f for f in dataclasses.fields(config.GenerationConfig) if f.name == name)
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    line = f"{field_comments().get(name, name.replace('_', ' '))} (default {shown(default)}"
    if name in config.CPU_PRESET and config.CPU_PRESET[name] != default:
        line += f"; on a CPU {shown(config.CPU_PRESET[name])}"
    if name in config.CHOICES:
        line += f"; one of {', '.join(config.CHOICES[name])}"
    return (line + ")").replace("%", "%%")
