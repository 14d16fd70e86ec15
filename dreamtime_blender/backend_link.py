"""Where the backend sources are, and the stdlib/numpy part of them the add-on imports.

The extension zip bundles the backend as `bundled/backend/` inside the add-on (build.py); a
development checkout has it as `backend/` beside `dreamtime_blender/`. Either way the add-on
loads that package under its own name (`<add-on>.backend`, so it never shadows or is shadowed
by another `backend`) and imports only `protocol`, `config`, `schedule` and `wording` from it: stdlib and
numpy, never torch. The backend process runs the same sources with `cwd = backend_root()`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def backend_root() -> Path:
    """The folder holding the `backend` package: bundled in the extension, else the checkout."""
    for root in (HERE / "bundled", HERE.parent):
        if (root / "backend" / "__main__.py").is_file():
            return root
    raise ImportError(f"no backend sources in {HERE / 'bundled'} or {HERE.parent}; rebuild the extension (python build.py)")


def _backend_package():
    name = f"{__package__}.backend"
    if name not in sys.modules:
        folder = backend_root() / "backend"
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_package = _backend_package()
protocol = importlib.import_module(f"{_package.__name__}.protocol")
config = importlib.import_module(f"{_package.__name__}.config")
schedule = importlib.import_module(f"{_package.__name__}.schedule")
wording = importlib.import_module(f"{_package.__name__}.wording")

