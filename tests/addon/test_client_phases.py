"""The panel before the first step (issue 16): it shows the device and the steps the backend's preset
will run, the model download's bytes and then "Loading model", a cancel during the download as a
cancel, Blender's Allow Online Access (off: the backend may not download, and the error says so),
the demo-prior notice, and Test backend's doctor. Stand-in backends (in_blender.fake_backend) say
exactly what a real one says; the last scenario runs the real backend."""

import json
import os

from conftest import requires_bpy

pytestmark = requires_bpy

READY_CUDA = {"type": "ready", "version": 1, "device": "cuda", "features": ["analytic", "sd", "cancel"],
              "presets": {"cuda": {}, "cpu": {"steps": 700}}, "auto_guidance": {"cuda": "sd", "cpu": "analytic"}}
DOCTOR = {"device": "cuda", "torch": "2.13.0+cu128", "cuda": "12.8", "diffusers": "0.42.1", "tcnn": False, "precision": "fp16",
          "step_ms": 212.0, "floor_ms": 190.0, "ratio": 1.116, "peak_mem_mb": 6100.0, "ok": True, "problems": []}

# A backend that answers `serve` with READY_CUDA, records the generate request and its environment,
# then speaks as a downloading backend does, one event per `ping` the scenario sends; and `doctor --json`.
FAKE = """
import json, os, sys
from pathlib import Path

def send(**message):
    print(json.dumps(message), flush=True)

if sys.argv[1:] == ["doctor", "--json"]:
    print("loading torch ...")
    print(json.dumps(%(doctor)s))
    sys.exit(0)
send(**%(ready)s)
line = sys.stdin.readline()
if not line:
    sys.exit(0)
request = json.loads(line)
if request["type"] != "generate":  # Test backend's probe: shutdown
    sys.exit(0)
offline = os.environ.get("HF_HUB_OFFLINE")
Path(os.environ["DREAMTIME_TEST_TMP"], "request.json").write_text(json.dumps({**request, "HF_HUB_OFFLINE": offline}))
run, model = request["id"], request["config"]["model"]
if os.environ.get("HF_HUB_OFFLINE") == "1":
    send(type="error", id=run, code="model_offline", hint="Run once with network to cache it.",
         message=model + " is not a local folder and not in the Hugging Face cache, and the hub is offline (HF_HUB_OFFLINE is set)")
    sys.stdin.read()
    sys.exit(0)
script = [
    dict(type="phase", id=run, phase="download", message="Downloading " + model + " 1.2 / 5.2 GB",
         bytes_done=1200000000, bytes_total=5200000000),
    dict(type="phase", id=run, phase="load", message="Loading model " + model),
    dict(type="progress", id=run, step=1, steps=5000, t=980, loss=0.5, eta_s=600.0),
]
for line in sys.stdin:
    message = json.loads(line)
    if message["type"] == "ping" and script:
        send(**script.pop(0))
    elif message["type"] == "cancel" and len(script) == 2:  # the download was the last said
        send(type="error", id=run, code="cancelled",
             message="cancelled while downloading " + model + " (1.2 / 5.2 GB); nothing was trained",
             hint="What arrived stays in the Hugging Face cache: the next run of this model continues the download.")
    elif message["type"] == "cancel":
        send(type="done", id=run, outputs={"run_dir": os.getcwd(), "steps_done": 1, "stopped_at": 1})
    elif message["type"] == "shutdown":
        break
""" % {"doctor": repr(DOCTOR), "ready": repr(READY_CUDA)}


def _request():
    from pathlib import Path

    return json.loads((Path(os.environ["DREAMTIME_TEST_TMP"]) / "request.json").read_text())


# ---------------------------------------------------------------------- scenarios (run in Blender)
def scenario_device_steps_download_load_and_doctor():
    import time

    import bpy

    from in_blender import fake_backend, install_extension, pump_until

    addon = install_extension()
    client, props, prefs = addon.client, bpy.context.scene.dreamtime, addon.client.preferences()
    bpy.context.preferences.system.use_online_access = True
    fake_backend(addon, FAKE)
    props.prompt, props.guidance = "a blue teapot", "sd"
    before = addon.backend_info.run_line(props.to_config(prefs), addon.backend_info.known(prefs))
    assert bpy.ops.dreamtime.test_backend() == {"FINISHED"}
    slowest, start = 0.0, time.monotonic()
    while client.busy():  # the probe and the doctor, in the background: no pump waits for them
        assert time.monotonic() - start < 60
        tick = time.thread_time()
        client.pump()
        slowest = max(slowest, time.thread_time() - tick)
        time.sleep(0.02)
    known = addon.backend_info.run_line(props.to_config(prefs), addon.backend_info.known(prefs))
    assert bpy.ops.dreamtime.generate() == {"FINISHED"}
    steps_at_start, statuses = props.steps_total, []
    for words in ("Downloading", "Loading model", "running on"):
        client._run.process.send({"type": "ping"})
        pump_until(client, lambda: words in props.status, timeout=20)
        statuses.append(props.status)
    step = props.step
    bpy.ops.dreamtime.cancel()
    pump_until(client, lambda: not client.busy(), timeout=20)
    props.steps = 123
    changed = addon.backend_info.run_line(props.to_config(prefs), addon.backend_info.known(prefs))
    return {"before": before, "known": known, "changed": changed, "steps_at_start": steps_at_start, "statuses": statuses,
            "step": step, "end": props.status, "error": props.error, "sent": _request()["config"],
            "offline_env": _request()["HF_HUB_OFFLINE"], "doctor": prefs.doctor_lines.splitlines(), "ready": prefs.backend_status,
            "slowest_pump_cpu_s": slowest}


def scenario_cancel_during_the_download():
    import bpy

    from in_blender import fake_backend, install_extension, process_gone, pump_until

    addon = install_extension()
    client, props = addon.client, bpy.context.scene.dreamtime
    bpy.context.preferences.system.use_online_access = True
    fake_backend(addon, FAKE)
    props.prompt, props.guidance = "a blue teapot", "sd"
    assert bpy.ops.dreamtime.generate() == {"FINISHED"}
    pid = client._run.process.pid
    client._run.process.send({"type": "ping"})
    pump_until(client, lambda: "Downloading" in props.status, timeout=20)
    bpy.ops.dreamtime.cancel()
    pump_until(client, lambda: not client.busy(), timeout=20)
    return {"status": props.status, "error": props.error, "warning": props.warning, "running": props.running, "gone": process_gone(pid),
            "history": len(props.history)}


def scenario_online_access_off():
    import bpy

    from in_blender import fake_backend, install_extension, pump_until

    addon = install_extension()
    client, props = addon.client, bpy.context.scene.dreamtime
    bpy.context.preferences.system.use_online_access = False
    fake_backend(addon, FAKE)
    props.prompt, props.guidance = "a blue teapot", "sd"
    assert bpy.ops.dreamtime.generate() == {"FINISHED"}
    pump_until(client, lambda: props.status == "error", timeout=20)
    client.stop_all()
    return {"online_access": bpy.app.online_access, "env": _request()["HF_HUB_OFFLINE"], "error": props.error, "hint": props.error_hint}


def scenario_real_backend_on_a_cpu_says_demo_prior_and_its_preset():
    import bpy

    from in_blender import install_extension, pump_until, tiny_run

    addon = install_extension()
    client, props, prefs = addon.client, bpy.context.scene.dreamtime, addon.client.preferences()
    tiny_run(props)
    props.property_unset("guidance")  # auto: on a CPU the backend picks the analytic prior
    props.property_unset("steps")
    props.overrides = props.overrides[:-1] + ', "steps": 12}'  # Extra Config's steps are the run's
    assert bpy.ops.dreamtime.generate() == {"FINISHED"}
    pump_until(client, lambda: "demo prior" in props.warning, timeout=120)
    warning = props.warning
    pump_until(client, lambda: not client.busy(), timeout=180)
    props.overrides = ""
    return {"warning": warning, "status": props.status, "line": addon.backend_info.run_line(props.to_config(prefs),
                                                                                         addon.backend_info.known(prefs))}


# ---------------------------------------------------------------------- tests
def test_panel_shows_the_device_steps_download_and_load_and_test_backend_shows_the_doctor(blender):
    result = blender(__file__, "scenario_device_steps_download_load_and_doctor")
    assert result["before"].startswith("Device not known yet (700 steps on a CPU, 5000 on CUDA)")
    assert result["known"] == "Runs on cuda: 5000 steps (its preset)" and result["steps_at_start"] == 5000
    assert "steps" not in result["sent"] and result["sent"]["guidance"] == "sd"  # the CUDA preset decides
    assert result["changed"] == "Runs on cuda: 123 steps"
    assert result["statuses"] == ["Downloading stabilityai/stable-diffusion-2-1-base 1.2 / 5.2 GB",
                                  "Loading model stabilityai/stable-diffusion-2-1-base", "running on cuda"]
    assert result["step"] == 1 and result["end"] == "cancelled at step 1 of 5000: the checkpoint and mesh are kept" and not result["error"]
    assert result["offline_env"] is None  # online access on: the backend may download
    assert result["ready"].startswith("ready: protocol 1, device cuda")
    assert result["doctor"] == ["Device cuda, precision fp16; torch 2.13.0+cu128, CUDA 12.8, diffusers 0.42.1, tiny-cuda-nn none",
                                "A step takes 212 ms, its floor 190 ms (1.12x); peak memory 6100 MB", "Doctor: OK"]
    assert result["slowest_pump_cpu_s"] < 0.05, result


def test_cancel_during_the_download_is_a_cancel_not_an_error(blender):
    result = blender(__file__, "scenario_cancel_during_the_download")
    assert result["status"].startswith("cancelled: cancelled while downloading stabilityai/stable-diffusion-2-1-base (1.2 / 5.2 GB)")
    assert not result["error"] and not result["running"] and result["gone"] and "continues the download" in result["warning"]


def test_online_access_off_keeps_the_backend_offline_and_the_error_says_how_to_allow_it(blender):
    result = blender(__file__, "scenario_online_access_off")
    assert result["online_access"] is False and result["env"] == "1"
    assert "HF_HUB_OFFLINE" in result["error"] and "Allow Online Access is off" in result["hint"]
    assert "local diffusers folder" in result["hint"]


def test_real_backend_on_a_cpu_announces_the_demo_prior_and_its_preset(blender):
    result = blender(__file__, "scenario_real_backend_on_a_cpu_says_demo_prior_and_its_preset")
    assert "offline demo prior" in result["warning"] and result["status"] == "done: 12 steps"
    assert result["line"] == "Runs on cpu: 700 steps (its preset)"
