"""The add-on (headless bpy) driving a remote backend: `python -m backend serve --listen` (issue 7).

The scenario starts the TCP backend with the backend's Python (DREAMTIME_BACKEND_PYTHON) itself,
points the preferences at it, and runs the panel's operators as with a local backend. The server
writes under its own --out and reads no file the add-on names: a targets file goes as its contents
(issue 17); a short --idle-timeout shows the add-on's keep-alive pings holding the connection.
"""

import hashlib
import json
import os
import socket
import subprocess
from pathlib import Path

from conftest import REPO, requires_bpy

pytestmark = requires_bpy

TOKEN = "a-token-long-enough-for-the-backend"
STEPS = 40  # long enough to drop the connection mid-run
IDLE_SECONDS = 5  # the server's idle timeout; the add-on pings every KEEPALIVE_SECONDS
KEEPALIVE_SECONDS = 0.5
TARGETS = {"targets": [{"name": "red torus", "parts": [{"shape": "torus", "color": "red"}]}]}


def _start_server(folder: Path) -> tuple[subprocess.Popen, int]:
    (folder / "token").write_text(TOKEN)
    (folder / "token").chmod(0o600)
    proc = subprocess.Popen([os.environ["DREAMTIME_BACKEND_PYTHON"], "-m", "backend", "serve", "--listen", "127.0.0.1:0",
                             "--token-file", str(folder / "token"), "--out", str(folder / "server-runs"),
                             "--idle-timeout", str(IDLE_SECONDS)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=open(folder / "server.log", "wb"))
    line = proc.stdout.readline().decode()
    assert line.startswith("listening on"), (line, (folder / "server.log").read_text())
    return proc, int(line.rsplit(":", 1)[1])


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------- scenarios (run in Blender)
def scenario_remote_generate_drop_and_reconnect():
    import bpy

    from in_blender import install_extension, pump_until, tiny_run

    tmp = Path(os.environ["DREAMTIME_TEST_TMP"])
    server, port = _start_server(tmp)
    try:
        addon = install_extension()
        client, props, prefs = addon.client, bpy.context.scene.dreamtime, addon.client.preferences()
        prefs.backend, prefs.remote_host, prefs.remote_port = "remote", "127.0.0.1", port
        prefs.remote_keepalive = KEEPALIVE_SECONDS
        assert prefs.bl_rna.properties["remote_token"].subtype == "PASSWORD"

        prefs.remote_token = "not-the-token-at-all-no"
        bpy.ops.dreamtime.test_backend()
        pump_until(client, lambda: not client.busy(), timeout=30)
        refused = prefs.backend_status
        prefs.remote_token = f"  {TOKEN}\n"  # pasted with the file's newline: still the token
        bpy.ops.dreamtime.test_backend()
        pump_until(client, lambda: not client.busy(), timeout=30)
        ready = prefs.backend_status

        # a run whose connection drops mid-run: an error in the panel, the run goes on on the server,
        # Reconnect picks it up; the preview and the mesh arrive over the connection
        tiny_run(props, steps=STEPS)
        props.preview_every = 10
        (tmp / "targets.json").write_text(json.dumps(TARGETS))
        overrides = json.loads(props.overrides)
        del overrides["out"]  # the server chooses where its run folders go
        props.overrides = json.dumps({**overrides, "targets": str(tmp / "targets.json")})  # a file here: sent as its contents
        assert bpy.ops.dreamtime.generate() == {"FINISHED"}
        seconds = {"to_step_3": pump_until(client, lambda: props.step >= 3, timeout=90)}
        client._run.process._sock.shutdown(socket.SHUT_RDWR)  # as if the network went away
        pump_until(client, lambda: not client.busy(), timeout=30)
        dropped = {"error": props.error, "hint": props.error_hint, "status": props.status, "step": props.step}
        assert bpy.ops.dreamtime.reconnect.poll()
        assert bpy.ops.dreamtime.reconnect() == {"FINISHED"}
        seconds["reconnected_run"] = pump_until(client, lambda: not client.busy(), timeout=180)
        assert props.status.startswith("done") and not props.error, (props.status, props.error, props.error_hint)
        (server_mesh,) = (tmp / "server-runs").glob("*/mesh.glb")
        server_targets = json.loads((server_mesh.parent / "config.json").read_text())["targets"]
        cache = prefs.remote_cache_dir()
        after = {"steps": props.step, "mesh_in_cache": Path(props.mesh_path).is_relative_to(cache),
                 "same_bytes": _sha256(props.mesh_path) == _sha256(server_mesh),
                 "preview_in_cache": Path(props.preview_path).is_relative_to(cache),
                 "faces": len(bpy.data.objects["a red torus"].data.polygons), "history_mesh": props.history[0].mesh_path == props.mesh_path,
                 "preview_size": list(bpy.data.images["DreamTime Preview"].size), "history": len(props.history),
                 "server_targets": server_targets}
        client.stop_all()
    finally:
        server.terminate()
        code = server.wait(60)
    return {"refused": refused, "ready": ready, "dropped": dropped, "after": after, "server_exit": code, "seconds": seconds}


# ---------------------------------------------------------------------- tests
def test_remote_backend_generates_and_reconnects_after_a_drop(blender):
    result = blender(__file__, "scenario_remote_generate_drop_and_reconnect", timeout=420)
    print(result)
    assert result["refused"].startswith("failed: The remote backend at 127.0.0.1:"), result["refused"]
    assert "refused the connection: Authentication failed: wrong or missing token. Copy the token" in result["refused"]
    assert result["ready"].startswith("ready: protocol 1") and "remote backend at 127.0.0.1:" in result["ready"]
    dropped = result["dropped"]
    assert "Lost the connection" in dropped["error"] and "Reconnect" in dropped["hint"] and dropped["status"].startswith("disconnected")
    after = result["after"]
    assert after["steps"] == STEPS and after["history"] == 1  # finished on the server, not cancelled by the drop
    assert after["mesh_in_cache"] and after["same_bytes"] and after["preview_in_cache"] and after["history_mesh"]
    assert after["faces"] > 100 and after["preview_size"] == [32, 32]
    assert after["server_targets"] == TARGETS  # the targets travelled as data, not as a path on this machine
    assert result["server_exit"] == 0
