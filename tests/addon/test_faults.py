"""Issue 6 in Blender: bad settings, a missing, dying, mute or foreign backend, and a .blend saved and
reopened. Each scenario runs in its own Blender subprocess (in_blender.py); the stand-in backends
are a `backend` package in a temporary folder. test_client.py covers a backend killed mid-run,
garbage on stdout and cancel."""

import os

from conftest import requires_bpy

pytestmark = requires_bpy


# ---------------------------------------------------------------------- scenarios (run in Blender)
def _generate():
    """bpy.ops.dreamtime.generate(); an operator that reports an error raises: its text instead."""
    import bpy

    try:
        return bpy.ops.dreamtime.generate()
    except RuntimeError as exc:
        return str(exc)


def _fake_backend(addon, source: str):
    """Make the add-on spawn `source` as the backend's `__main__`."""
    from pathlib import Path

    root = Path(os.environ["DREAMTIME_TEST_TMP"]) / "fake"
    (root / "backend").mkdir(parents=True, exist_ok=True)
    (root / "backend" / "__init__.py").write_text("")  # a package: it wins over a real backend on PYTHONPATH
    (root / "backend" / "__main__.py").write_text(source)
    addon.backend_link.backend_root = lambda: root


def scenario_bad_settings_and_no_backend():
    import bpy

    from in_blender import install_extension, tiny_run

    addon = install_extension()
    client, props = addon.client, bpy.context.scene.dreamtime
    results = {}
    for name, change in (
        ("m2", {"m1": 400, "m2": 600}),
        ("t_min", {"t_min": 600, "t_max": 500}),
        ("prompt", {"prompt": "   "}),
        ("overrides", {"overrides": "{not json"}),
        ("unknown", {"overrides": '{"colour": "red"}'}),
    ):
        tiny_run(props)
        for key, value in change.items():
            setattr(props, key, value)
        outcome = _generate()
        assert not client.is_running() and not props.running, name
        results[name] = [str(outcome), props.error, props.error_hint]
        for key in change:
            props.property_unset(key)
    tiny_run(props)
    client.preferences().backend_python = "/nonexistent/bin/python3"
    results["missing"] = [str(_generate()), props.error, props.error_hint]
    assert not client.is_running()
    client.preferences().backend_python = ""
    os.environ.pop("DREAMTIME_BACKEND_PYTHON")  # and Blender's own Python has no torch (in_blender.py blocks it)
    results["none"] = [str(_generate()), props.error, props.error_hint]
    assert not client.is_running()
    return results


def _run_fake_backend_to_its_end(source: str):
    """Generate against a fake backend running `source`; pump until the add-on gives up on it."""
    import bpy

    from in_blender import install_extension, process_gone, pump_until

    addon = install_extension()
    client, props = addon.client, bpy.context.scene.dreamtime
    _fake_backend(addon, source)
    assert _generate() == {"FINISHED"}
    pid = client._run.process.pid
    pump_until(client, lambda: not client.busy(), timeout=30)
    assert not props.running and process_gone(pid)
    return props


def scenario_backend_exits_at_start():
    props = _run_fake_backend_to_its_end(
        "import sys\n"
        "sys.stderr.write(\"Traceback (most recent call last):\\nModuleNotFoundError: No module named 'torch'\\n\")\nsys.exit(3)\n")
    assert props.status == "error"
    return {"error": props.error, "hint": props.error_hint}


def scenario_wrong_protocol_version():
    props = _run_fake_backend_to_its_end(
        "import json, sys\n"
        "print(json.dumps({'type': 'ready', 'version': 99, 'device': 'cpu', 'features': []}), flush=True)\nsys.stdin.read()\n")
    return {"error": props.error, "hint": props.error_hint}


def scenario_mute_backend_is_reported_and_cancel_kills_it():
    import bpy

    from in_blender import install_extension, process_gone, pump_until

    addon = install_extension()
    client, props = addon.client, bpy.context.scene.dreamtime
    _fake_backend(addon, "import sys\nsys.stdin.read()\n")  # stuck before its ready event (a hung import, a dead GPU driver)
    prefs = client.preferences()
    default = prefs.hang_seconds
    prefs.hang_seconds = 1.0
    assert _generate() == {"FINISHED"}
    pid = client._run.process.pid
    pump_until(client, lambda: "No word from the backend" in props.warning, timeout=20)
    offered = bpy.ops.dreamtime.cancel.poll()
    bpy.ops.dreamtime.cancel()
    first = props.status
    bpy.ops.dreamtime.cancel()  # not answered: the second one kills
    pump_until(client, lambda: not client.busy(), timeout=20)
    assert not props.running and process_gone(pid) and not bpy.ops.dreamtime.cancel.poll()
    return {"default": default, "warning": props.warning, "cancel_offered": offered, "first": first, "second": props.status,
            "generate_again": bpy.ops.dreamtime.generate.poll()}


PANEL_VALUES = {
    "prompt": "un tore rouge 🍩 赤いトーラス", "negative_prompt": "blurry", "seed": 123456, "steps": 321, "schedule": "uniform",
    "m1": 700.0, "m2": 450.0, "s1": 250.0, "s2": 80.0, "t_min": 30, "t_max": 950, "guidance": "analytic", "guidance_scale": 7.5,
    "resolution": 96, "preview_every": 25, "samples_per_ray": 48, "mesh_resolution": 128, "overrides": '{"encoding": "dense"}',
    "auto_import": False, "show_overlay": False,
}


def scenario_blend_saved_and_reopened():
    from pathlib import Path

    import bpy

    from in_blender import install_extension

    addon = install_extension()
    props = bpy.context.scene.dreamtime
    for name, value in PANEL_VALUES.items():
        setattr(props, name, value)
    item = props.history.add()
    item.prompt, item.seed, item.status, item.run_dir, item.config_json = "a red torus", 7, "done", "/runs/x", '{"seed": 7}'
    props.running, props.status = True, "running on cpu"  # saved mid-run
    config = props.to_config(addon.client.preferences())
    path = Path(os.environ["DREAMTIME_TEST_TMP"]) / "scene.blend"
    assert bpy.ops.wm.save_as_mainfile(filepath=str(path)) == {"FINISHED"}
    for name in ("prompt", "seed", "schedule", "m1", "overrides"):
        props.property_unset(name)
    props.history.clear()
    assert bpy.ops.wm.open_mainfile(filepath=str(path)) == {"FINISHED"}
    props = bpy.context.scene.dreamtime
    values = {name: getattr(props, name) for name in PANEL_VALUES}
    history = [(h.prompt, h.seed, h.status, h.run_dir, h.config_json) for h in props.history]
    return {"values": values, "history": history, "running": props.running, "status": props.status,
            "same_config": props.to_config(addon.client.preferences()) == config, "can_generate": bpy.ops.dreamtime.generate.poll()}


# ---------------------------------------------------------------------- tests
def test_bad_settings_and_no_backend_are_panel_errors_before_anything_starts(blender):
    result = blender(__file__, "scenario_bad_settings_and_no_backend")
    for name, words in (("m2", "m2: must be <= m1"), ("t_min", "t_min: must be < t_max"), ("prompt", "prompt: must not be empty"),
                        ("overrides", "overrides: is not JSON"), ("unknown", "colour: unknown config field")):
        outcome, error, hint = result[name]
        assert error.startswith(words) and words in outcome and hint, (name, result[name])
    outcome, error, hint = result["missing"]
    assert "Cannot start the backend with /nonexistent/bin/python3 (preference)" in error and "Backend Python" in hint
    outcome, error, hint = result["none"]
    assert error == "No backend Python found." and "Install backend" in hint


def test_backend_that_exits_at_start_shows_its_exit_code_and_last_words(blender):
    result = blender(__file__, "scenario_backend_exits_at_start")
    assert result["error"] == "The backend stopped unexpectedly (exit code 3)."
    assert "No module named 'torch'" in result["hint"]


def test_backend_of_another_protocol_version_is_refused(blender):
    result = blender(__file__, "scenario_wrong_protocol_version")
    assert result["error"] == "The backend speaks protocol 99; this add-on speaks 1." and "Update" in result["hint"]


def test_mute_backend_is_reported_after_the_preferred_time_and_cancel_kills_it(blender):
    result = blender(__file__, "scenario_mute_backend_is_reported_and_cancel_kills_it")
    assert result["default"] == 120 and result["cancel_offered"] and "it may be stuck" in result["warning"]
    assert result["first"].startswith("cancelling") and result["second"].startswith("cancelled: the backend was killed")
    assert result["generate_again"]


def test_blend_file_keeps_the_panel_settings_and_history(blender):
    result = blender(__file__, "scenario_blend_saved_and_reopened")
    values = result["values"]
    assert values == {**PANEL_VALUES, **{k: values[k] for k in ("m1", "m2", "s1", "s2", "guidance_scale")}}
    assert all(abs(values[k] - PANEL_VALUES[k]) < 1e-4 for k in ("m1", "m2", "s1", "s2", "guidance_scale"))
    assert result["history"] == [["a red torus", 7, "done", "/runs/x", '{"seed": 7}']] and result["same_config"]
    assert not result["running"] and result["status"] == "idle" and result["can_generate"]  # no backend belongs to it now
