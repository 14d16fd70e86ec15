"""dreamtime_blender/preferences.py and installer.py: Test backend, Install backend (with stand-in commands)."""

from conftest import requires_bpy

pytestmark = requires_bpy


def scenario_test_backend_and_installer():
    import sys

    import bpy

    from in_blender import install_extension, pump_until

    addon = install_extension()
    prefs = addon.client.preferences()
    assert bpy.ops.dreamtime.test_backend() == {"FINISHED"}
    pump_until(addon.client, lambda: not addon.client.busy(), timeout=60)
    ready = prefs.backend_status

    installer = addon.installer
    commands = installer.commands(prefs.venv_dir())
    assert commands[0][1][-1] == str(prefs.venv_dir()) and "torch>=2.1" in commands[-1][1]
    assert str(prefs.venv_dir()).startswith(bpy.utils.extension_path_user(addon.__name__))
    statuses = []
    steps = [("say hello", [sys.executable, "-c", "print('hello')"]),
             ("fail", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"])]
    assert installer.start(steps, statuses.append) and not installer.start(steps, statuses.append)
    pump_until(installer, lambda: not installer.running(), timeout=30)
    failed = statuses[-1]
    installer.start(steps[:1], statuses.append)
    pump_until(installer, lambda: not installer.running(), timeout=30)
    return {"ready": ready, "failed": failed, "ok": statuses[-1], "runs_dir": prefs.runs_dir()}


def test_test_backend_shows_ready_and_installer_reports_progress(blender):
    result = blender(__file__, "scenario_test_backend_and_installer")
    assert result["ready"].startswith("ready: protocol 1, device cpu") and "DREAMTIME_BACKEND_PYTHON" in result["ready"]
    assert result["failed"].startswith("failed: fail (exit code 3)") and "boom" in result["failed"]
    assert result["ok"] == "installed" and result["runs_dir"].endswith("runs")
