"""Add-on tests. Blender-side scenarios run in a fresh `bpy` subprocess each (in_blender.py), with
a temporary HOME, so Blender state never leaks between tests and never meets torch in-process."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("in_blender.py")
HAS_BPY = importlib.util.find_spec("bpy") is not None
# The backend's Python (torch): this one, unless a bpy-only venv runs the tests (e.g. bpy 4.2 in .ci/run).
BACKEND_PYTHON = os.environ.get("DREAMTIME_BACKEND_PYTHON") or sys.executable
requires_bpy = pytest.mark.skipif(not HAS_BPY, reason="bpy (Blender as a module) is not installed")


def load_by_path(relative: str):
    """A bpy-free module of the add-on, loaded by file path (the package __init__ needs bpy)."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(f"_dreamtime_test_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory) -> Path:
    sys.path.insert(0, str(REPO))
    try:
        import build
    finally:
        sys.path.remove(str(REPO))
    return build.build(tmp_path_factory.mktemp("dist"))


@pytest.fixture
def blender(tmp_path, extension_zip):
    """run(test_file, scenario) -> the scenario's result dict; fails with Blender's output."""

    def run(test_file: str, scenario: str, timeout: float = 240) -> dict:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "DREAMTIME_BACKEND_PYTHON": BACKEND_PYTHON,
               "DREAMTIME_TEST_ZIP": str(extension_zip), "DREAMTIME_TEST_TMP": str(tmp_path)}
        result = subprocess.run([sys.executable, str(RUNNER), test_file, scenario], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=timeout)
        lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
        assert result.returncode == 0 and lines, f"scenario {scenario} failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
        return json.loads(lines[-1][len("RESULT "):])

    return run
