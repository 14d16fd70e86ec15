"""Which Python runs the backend (docs/ARCHITECTURE.md §10); first match wins:

1. the add-on preference "Backend Python", if set;
2. the environment variable DREAMTIME_BACKEND_PYTHON;
3. the virtual environment made by "Install backend";
4. the Python running Blender, if it can import torch (checked without importing it).
None of them: the panel says how to install the backend.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ENV_VAR = "DREAMTIME_BACKEND_PYTHON"
HOW_TO_INSTALL = (
    "No Python with torch for the backend. Open Edit > Preferences > Add-ons > DreamTime and press "
    "Install backend, or set Backend Python to a Python that has the backend's requirements."
)


def venv_python(venv: Path) -> Path:
    """The interpreter inside a virtual environment, on this OS."""
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def find_python(preference: str = "", venv: Path | None = None) -> tuple[str | None, str]:
    """(path to the backend Python or None, where it came from)."""
    if preference.strip():
        return str(Path(preference.strip()).expanduser()), "preference"
    if os.environ.get(ENV_VAR, "").strip():
        return os.environ[ENV_VAR].strip(), ENV_VAR
    if venv is not None and venv_python(venv).is_file():
        return str(venv_python(venv)), "installed backend"
    try:
        has_torch = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        has_torch = False
    if has_torch:
        return sys.executable, "Blender's Python"
    return None, "none"
