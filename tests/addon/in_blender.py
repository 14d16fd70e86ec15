"""Runs one scenario function of a test file inside Blender (the bpy module):
`python in_blender.py TEST_FILE SCENARIO`; prints `RESULT {json}` on success.

Helpers for scenarios: install_extension() installs the built zip into the temporary HOME and
enables it, the way a user does; pump_until() drives client.pump() by hand (timers do not run
headless), bounded in time; fake_backend() makes the add-on spawn a stand-in backend.
"""

import importlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

sys.modules["torch"] = None  # the add-on must never need it: any import of torch fails


def install_extension():
    """Install DREAMTIME_TEST_ZIP as a user extension, enable it; return the add-on package."""
    import bpy

    zip_path = os.environ["DREAMTIME_TEST_ZIP"]
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    assert result == {"FINISHED"}, result
    name = "bl_ext.user_default.dreamtime"
    assert name in bpy.context.preferences.addons, list(bpy.context.preferences.addons.keys())
    return importlib.import_module(name)


def pump_until(client, condition, timeout: float, interval: float = 0.02) -> float:
    """Call client.pump() until condition() holds; the seconds it took. Fails after timeout."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"timed out after {timeout} s"
        client.pump()
        time.sleep(interval)
    return time.monotonic() - start


def tiny_run(props, steps: int = 20, prompt: str = "a red torus"):
    """Panel settings for a run of a few seconds on CPU with the analytic prior."""
    props.prompt, props.guidance, props.steps, props.resolution = prompt, "analytic", steps, 32
    props.samples_per_ray, props.mesh_resolution, props.preview_every = 16, 48, 5
    out = Path(os.environ["DREAMTIME_TEST_TMP"]) / "runs"
    props.overrides = json.dumps({"encoding": "dense", "dense_resolution": 24, "mlp_hidden": 0, "lr": 0.05, "preview_resolution": 32,
                                  "device": "cpu", "out": str(out), "checkpoint_every": 0,
                                  "blob_density": 5.0, "lambda_tv": 0.0, "mesh_smooth": 0.0,  # over the CPU preset: a mesh from step 1
                                  "texture_size": 256})


def fake_backend(addon, source: str) -> Path:
    """Make the add-on spawn `source` as the backend's `__main__` (a `backend` package in a temporary
    folder, so it wins over a real backend on PYTHONPATH); the folder."""
    root = Path(os.environ["DREAMTIME_TEST_TMP"]) / "fake"
    (root / "backend").mkdir(parents=True, exist_ok=True)
    (root / "backend" / "__init__.py").write_text("")
    (root / "backend" / "__main__.py").write_text(source)
    addon.backend_link.backend_root = lambda: root
    return root


def process_gone(pid: int) -> bool:
    """No such process, not even a zombie (Linux: /proc; elsewhere: kill(pid, 0))."""
    if os.path.isdir("/proc"):
        return not os.path.exists(f"/proc/{pid}")
    try:
        os.kill(pid, 0)
    except OSError:
        return True
    return False


if __name__ == "__main__":
    test_file, scenario = sys.argv[1], sys.argv[2]
    sys.path.insert(0, str(Path(__file__).parent))
    spec = importlib.util.spec_from_file_location("scenario_module", Path(__file__).parent / test_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = getattr(module, scenario)() or {}
    print("RESULT " + json.dumps(result), flush=True)
    sys.stdout.flush()
    os._exit(0)  # skip Blender's atexit teardown of a module-mode session: the result is out
