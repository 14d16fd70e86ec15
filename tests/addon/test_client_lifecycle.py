"""Stopping mid-run without losing work (issue 16): disabling the add-on, loading another file and
quitting Blender each stop the run as Cancel does — the backend finishes its step and writes the
checkpoint and mesh of the current state — and the add-on waits for that (bounded, saying so in
the panel and on the console) before it ends the process. The real backend, in Blender (bpy)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import BACKEND_PYTHON, RUNNER, requires_bpy

pytestmark = requires_bpy


# ---------------------------------------------------------------------- scenarios (run in Blender)
def _long_run():
    """A 2000-step run at a known run folder, past its second step; (addon, client, props, pid, run_dir)."""
    import bpy

    from in_blender import install_extension, pump_until, tiny_run

    addon = install_extension()
    client, props = addon.client, bpy.context.scene.dreamtime
    tiny_run(props, steps=2000)
    run_dir = Path(os.environ["DREAMTIME_TEST_TMP"]) / "run"
    props.overrides = props.overrides[:-1] + f', "run_dir": {json.dumps(str(run_dir))}}}'
    assert bpy.ops.dreamtime.generate() == {"FINISHED"}
    pump_until(client, lambda: props.step >= 2, timeout=120)
    assert not (run_dir / "mesh.glb").exists()  # the mesh comes only when the run ends
    return addon, client, props, client._run.process.pid, run_dir


def _watch_the_stop(client, props, said: list):
    """Record the panel's status and the console while stop_all() waits on the backend."""
    import contextlib
    import io

    process = client._run.process
    real_stop = process.stop

    def stop(*args, **kwargs):
        said.append(props.status)
        return real_stop(*args, **kwargs)

    process.stop = stop
    console = io.StringIO()
    said.append(console)
    return contextlib.redirect_stdout(console)


def _outputs(run_dir: Path, pid: int) -> dict:
    from in_blender import process_gone

    return {"gone": process_gone(pid), "mesh": (run_dir / "mesh.glb").is_file(), "checkpoint": (run_dir / "checkpoint.pt").is_file(),
            "metrics": (run_dir / "metrics.json").is_file()}


def scenario_disable_mid_run():
    import bpy  # noqa: F401  (addon_utils comes with it)
    # isort: split
    import addon_utils

    addon, client, props, pid, run_dir = _long_run()
    said: list = []
    with _watch_the_stop(client, props, said):
        addon_utils.disable(addon.__name__)
    status, console = said[1], said[0].getvalue()
    return {**_outputs(run_dir, pid), "status": status, "console": console}


def scenario_load_another_file_mid_run():
    import bpy

    addon, client, props, pid, run_dir = _long_run()
    path = Path(os.environ["DREAMTIME_TEST_TMP"]) / "other.blend"
    said: list = []
    with _watch_the_stop(client, props, said):
        assert bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True) == {"FINISHED"}
        assert bpy.ops.wm.open_mainfile(filepath=str(path)) == {"FINISHED"}
    return {**_outputs(run_dir, pid), "status": said[1], "console": said[0].getvalue(), "busy": client.busy()}


def scenario_quit_mid_run():
    """Exits Blender's Python for real (atexit runs); the test reads the run folder afterwards."""
    addon, client, props, pid, run_dir = _long_run()
    print("RESULT " + json.dumps({"pid": pid, "run_dir": str(run_dir)}), flush=True)
    sys.exit(0)


# ---------------------------------------------------------------------- tests
def test_disabling_the_add_on_mid_run_waits_for_the_checkpoint_and_mesh(blender):
    result = blender(__file__, "scenario_disable_mid_run", timeout=300)
    assert result["gone"] and result["mesh"] and result["checkpoint"] and result["metrics"], result
    assert result["status"].startswith("stopping: the backend writes the checkpoint and mesh (up to 30 s)")
    assert "waiting up to 30 s" in result["console"] and "the backend has stopped (exit code 0)" in result["console"]


def test_loading_another_file_mid_run_waits_for_the_checkpoint_and_mesh(blender):
    result = blender(__file__, "scenario_load_another_file_mid_run", timeout=300)
    assert result["gone"] and result["mesh"] and result["checkpoint"] and not result["busy"], result
    assert result["status"].startswith("stopping:") and "exit code 0" in result["console"]


def test_quitting_blender_mid_run_waits_for_the_checkpoint_and_mesh(tmp_path, extension_zip):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "DREAMTIME_BACKEND_PYTHON": BACKEND_PYTHON,
           "DREAMTIME_TEST_ZIP": str(extension_zip), "DREAMTIME_TEST_TMP": str(tmp_path)}
    done = subprocess.run([sys.executable, str(RUNNER), __file__, "scenario_quit_mid_run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT "):])
    run_dir = Path(result["run_dir"])
    assert (run_dir / "mesh.glb").is_file() and (run_dir / "checkpoint.pt").is_file(), done.stdout[-3000:]
    assert "the backend has stopped (exit code 0)" in done.stdout, done.stdout[-3000:]
    assert not Path(f"/proc/{result['pid']}").exists() or sys.platform != "linux"
