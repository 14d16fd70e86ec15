"""dreamtime_blender/run_end.py and the panel's state during a run (issue 14): a run without a mesh
reads "done without a mesh" with what to change in panel words, a run the backend stopped reads
"stopped by the backend at step N", the Run folder is the current run's from its first event, and a
bad setting's hint names the panel field. Stand-in backends say what a real one says."""

from conftest import requires_bpy

pytestmark = requires_bpy

# A backend that starts the run (its folder, one step) on generate, and ends it on the first ping:
# as the prompt says ("no mesh" or "stopped"), with the events and fields a real backend sends.
FAKE = """
import json, os, sys

def send(**message):
    print(json.dumps(message), flush=True)

send(type="ready", version=1, device="cpu", features=["analytic", "cancel"], presets={"cpu": {"steps": 700}})
for line in sys.stdin:
    message = json.loads(line)
    if message["type"] == "generate":
        run, prompt = message["id"], message["config"]["prompt"]
        folder = os.path.join(os.getcwd(), "new-run")
        send(type="log", id=run, level="info", message="Run folder " + folder, run_dir=folder)
        send(type="progress", id=run, step=1, steps=700, t=980, loss=0.5, eta_s=60.0)
    elif message["type"] == "ping" and prompt == "no mesh":
        send(type="log", id=run, level="warning", code="no_mesh",
             message="No mesh: no surface above density threshold 5 (the densest point found is 4.91).",
             hint="Train longer (more Steps), or lower Advanced › Extra Config {\\"mesh_threshold\\": …}, and generate again.")
        send(type="done", id=run, outcome="no_mesh", step=700,
             outputs={"run_dir": folder, "steps_done": 700, "mesh": None, "outcome": "no_mesh"})
    elif message["type"] == "ping" and prompt == "stopped":
        send(type="done", id=run, outcome="stopped", step=81, stopped_by="backend",
             outputs={"run_dir": folder, "steps_done": 81, "stopped_at": 81, "mesh": folder + "/mesh.glb", "outcome": "stopped"})
    elif message["type"] == "shutdown":
        break
"""


def scenario_run_ends_and_the_run_folder():
    import bpy

    from in_blender import fake_backend, install_extension, pump_until

    addon = install_extension()
    client, props = addon.client, bpy.context.scene.dreamtime
    fake_backend(addon, FAKE)
    props.auto_import = False
    seen = {}
    for prompt in ("no mesh", "stopped"):
        props.run_dir, props.mesh_path = "/the/last/run", "/the/last/run/mesh.glb"
        props.prompt = prompt
        assert bpy.ops.dreamtime.generate() == {"FINISHED"}
        at_start = props.run_dir
        pump_until(client, lambda: props.step == 1, timeout=30)
        during = props.run_dir
        client._run.process.send({"type": "ping"})
        pump_until(client, lambda: not client.busy(), timeout=30)
        seen[prompt] = {"at_start": at_start, "during": during, "end": props.run_dir, "status": props.status, "warning": props.warning,
                        "error": props.error, "history": props.history[-1].status, "history_mesh": props.history[-1].mesh_path}
    props.prompt, props.overrides = "a red torus", '{"mesh_threshold": -1}'
    assert client.start(bpy.context.scene) == props.error  # what the Generate button reports
    seen["bad setting"] = {"error": props.error, "hint": props.error_hint}
    props.overrides = '{"device": "tpu"}'
    client.start(bpy.context.scene)
    seen["bad preference"] = {"error": props.error, "hint": props.error_hint}
    return seen


def test_a_run_without_a_mesh_and_a_stopped_run_say_so_and_the_run_folder_is_the_current_runs(blender):
    seen = blender(__file__, "scenario_run_ends_and_the_run_folder")
    no_mesh, stopped = seen["no mesh"], seen["stopped"]
    for run in (no_mesh, stopped):
        assert run["at_start"] == "" and run["during"].endswith("new-run") and run["end"] == run["during"], run
    assert no_mesh["status"] == "done without a mesh after 700 steps" and no_mesh["history"] == "no mesh" and not no_mesh["error"]
    assert no_mesh["warning"].startswith("No mesh: no surface above density threshold 5")
    assert "Train longer (more Steps)" in no_mesh["warning"]
    assert no_mesh["history_mesh"] == ""
    assert stopped["status"] == "stopped by the backend at step 81 of 700: the checkpoint and mesh are kept"
    assert stopped["history"] == "stopped" and stopped["history_mesh"].endswith("new-run/mesh.glb")
    assert seen["bad setting"]["error"].startswith("mesh_threshold:")
    assert seen["bad setting"]["hint"] == 'Change Advanced › Extra Config {"mesh_threshold": …} and press Generate again.'
    assert seen["bad preference"]["error"].startswith("device:")
    assert seen["bad preference"]["hint"].startswith("Change Preferences › Device")
