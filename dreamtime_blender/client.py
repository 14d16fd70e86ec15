"""Blender's side of the protocol (docs/ARCHITECTURE.md §3, §10): one backend run at a time.

`start()` opens the backend (backends.py) and sends `generate`; `pump()` is the `bpy.app.timers`
callback that drains the reader thread's queue on the main thread, applies the events to
`scene.dreamtime` (phases before the first step, progress, previews, the mesh, the end), and
returns the next interval (None when there is nothing left to watch). Nothing here waits on the
backend, but `stop_all()` (the add-on disabled, a file loaded, Blender quitting), which gives a
run up to STOP_SECONDS to write its checkpoint and mesh. Finished processes get `shutdown` and are
reaped by later pumps; a backend that dies, writes garbage or goes silent is reported in the panel state.

About 400 lines, over the ~300 target: a run's whole life on Blender's side (start, reconnect,
cancel, the event handlers, reaping) reads best in one file; what stands alone is already apart
(backends.py, process.py, remote.py, backend_test.py, probe.py, doctor.py, backend_info.py, preview.py, mesh_import.py).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import bpy

from . import backend_info, backend_link, backend_test, doctor, mesh_import, preview, probe, run_end, selection, variations
from .backends import OFFLINE_HINT, BackendUnavailable, online_access, open_backend, preferences
from .process import BackendProcess

PUMP_INTERVAL = 0.1  # s between pumps while anything runs (previews reach the image within it)
HANG_SECONDS = 120.0  # no event for this long: the panel says the backend seems stuck (preference)
CANCEL_SECONDS = 60.0  # cancel not answered with done within this: the backend is killed
EXIT_SECONDS = 10.0  # after shutdown: kill if still alive
EXIT_GRACE = 2.0  # after stdout closes: wait this long at most for the exit code and stderr's last lines
STOP_SECONDS = 30.0  # disabling the add-on, loading a file or quitting mid-run: the backend's time to write its outputs
NON_FATAL = {"busy", "no_run", "unsupported", "extract"}  # reported, the run goes on
CONFIG_FIELDS = set(backend_link.config.GenerationConfig.__dataclass_fields__)


class Run:
    def __init__(self, process: BackendProcess, scene: bpy.types.Scene, run_id: str, config: dict):
        self.process, self.scene_name, self.id, self.config = process, scene.name, run_id, config
        self.cancel_at: float | None = None
        self.extracts = 0  # extract requests not yet answered with a mesh
        self.hang_warned = False
        self.eof_at: float | None = None  # when stdout closed: the process is gone or going
        self.features: set[str] = set()  # from the backend's ready event
        self.device = "the backend"  # from its ready event
        self.phase = False  # a phase (download, load) is showing in the status line
        self.source_object = scene.dreamtime.source_object if config.get("init_mesh") or config.get("refine_from") else ""  # lands there


_run: Run | None = None
_closing: list[tuple[BackendProcess, float]] = []  # sent shutdown at this time; reaped by pump
_configs: dict[str, dict] = {}  # run id -> the config it was started with (for Reconnect)


def is_running() -> bool:
    return _run is not None


def supports(feature: str) -> bool:
    """Whether the running backend announced `feature` (e.g. "extract") in its ready event."""
    return _run is not None and feature in _run.features


def busy() -> bool:
    """Anything left for pump() to watch: a run, a backend test or its doctor, an import, or a process still exiting."""
    return bool(_run or probe.active() or doctor.active() or _closing or mesh_import.busy())


# ---------------------------------------------------------------------- requests
def start(scene: bpy.types.Scene, config: dict | None = None) -> str | None:
    """Start a run for the scene's settings (or for `config` over the preferences' values: a Refine);
    an error message instead, also shown in the panel."""
    global _run
    props = scene.dreamtime
    if _run is not None:
        return "a run is already going; cancel it first"
    props.error = props.error_hint = props.warning = ""
    try:
        if config is None:
            config = props.check(preferences())
        else:
            config = {**(preferences().config_values() if preferences() is not None else {}), **config}
            backend_link.config.GenerationConfig.from_dict(config).validate()
    except (ValueError, TypeError) as exc:
        where = f"[[{exc.field}]]" if getattr(exc, "field", None) in CONFIG_FIELDS else "this setting"
        return _fail(props, str(exc), backend_link.wording.panel(f"Change {where} and press Generate again."))
    try:
        process, _ = open_backend()
    except BackendUnavailable as exc:
        return _fail(props, str(exc), exc.hint)
    props.run_dir = props.mesh_path = props.preview_path = ""  # the last run's: this run's come with its events
    run_id = uuid.uuid4().hex[:12]
    process.send(backend_link.protocol.message("generate", id=run_id, config=config))
    _run, _configs[run_id] = Run(process, scene, run_id, config), config
    props.running, props.status, props.run_id = True, "starting the backend", run_id
    steps = backend_info.expected_run(config, backend_info.known(preferences()))[1] or 0  # 0: the first progress says
    props.step, props.steps_total, props.t, props.loss, props.eta = 0, steps, 0, 0.0, 0.0
    ensure_timer()
    return None


def test_backend() -> str:
    """Preferences › Test backend (backend_test.py): its ready, then its doctor; the status line."""
    status = backend_test.start(generating=_run is not None)
    ensure_timer()
    return status


def can_reconnect(scene: bpy.types.Scene) -> bool:
    prefs = preferences()
    return _run is None and prefs is not None and prefs.backend == "remote" and bool(scene.dreamtime.run_id)


def reconnect(scene: bpy.types.Scene) -> str | None:
    """Connect to the remote backend again and `attach` to the scene's last run: its progress,
    latest preview and, once it ended, its mesh and done event come as they would have live."""
    global _run
    props = scene.dreamtime
    if not can_reconnect(scene):
        return "nothing to reconnect to (a remote backend and a run started from this scene are needed)"
    props.error = props.error_hint = props.warning = ""
    try:
        process, name = open_backend()
    except BackendUnavailable as exc:
        return _fail(props, str(exc), exc.hint)
    process.send(backend_link.protocol.message("attach", id=props.run_id))
    config = _configs.get(props.run_id) or props.to_config(preferences())
    _run = Run(process, scene, props.run_id, config)
    props.running, props.status = True, f"reconnecting to the {name}"
    ensure_timer()
    return None


def cancel() -> None:
    """First call: ask the run to stop (it still writes its mesh). Second call: kill it."""
    if _run is None:
        return
    if _run.cancel_at is None:
        _run.cancel_at = time.monotonic()
        _run.process.send(backend_link.protocol.message("cancel", id=_run.id))
        _set(status="cancelling: finishing the current step and writing the mesh")
    else:
        _set(status="cancelled: the backend was killed (the run folder keeps its last checkpoint)")
        _end_run(kill=True)


def extract() -> None:
    if _run is not None and _run.process.send(backend_link.protocol.message("extract", id=_run.id)):
        _run.extracts += 1


def stop_all(quitting: bool = False) -> None:
    """Stop every backend and reap it (unregister, file load, quit). A run is stopped as Cancel
    stops it: the backend finishes its step and writes the checkpoint and mesh; this waits for
    that, at most STOP_SECONDS, then ends the process. `quitting`: Blender is exiting (atexit),
    its data may be gone: touch nothing of it."""
    global _run
    probe.cancel()
    doctor.cancel()
    processes = [p for p, _ in _closing] + ([_run.process] if _run else [])
    if _run is not None and not quitting:
        _set(status=f"stopping: the backend writes the checkpoint and mesh (up to {STOP_SECONDS:.0f} s)")
        _progress_cursor(True)
    if _run is not None:
        print(f"DreamTime: stopping the run; the backend writes its checkpoint and mesh (waiting up to {STOP_SECONDS:.0f} s)")
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        process.stop(grace=max(deadline - time.monotonic(), 0.5))
    if _run is not None:
        print(f"DreamTime: the backend has stopped (exit code {_run.process.returncode})")
        if not quitting:
            _progress_cursor(False)
            _set(running=False, status="stopped: the run folder keeps its checkpoint and mesh")
    _run = None
    _closing.clear()
    if not quitting and bpy.app.timers.is_registered(pump):
        bpy.app.timers.unregister(pump)


def _progress_cursor(on: bool) -> None:
    """Blender's busy cursor while the main thread waits for the backend to finish writing."""
    window_manager = getattr(bpy.context, "window_manager", None)
    if window_manager is not None and window_manager.windows:
        window_manager.progress_begin(0, 1) if on else window_manager.progress_end()


# ---------------------------------------------------------------------- the timer
def pump() -> float | None:
    """Drain and apply what the backends said; return the next interval, or None when idle."""
    tested = probe.pump()
    if tested is not None:
        retire(tested)
    doctor.pump()
    mesh_import.pump()
    if _run is not None:
        _pump_run(_run)
    _reap()
    return PUMP_INTERVAL if busy() else None


def _pump_run(run: Run) -> None:
    props = _props()
    if props is None:  # the scene was deleted or another file loaded
        _end_run(kill=True)
        return
    items = run.process.drain()
    previews = [i for i, (kind, item) in enumerate(items) if kind == "event" and item["type"] == "preview"]
    for index, (kind, item) in enumerate(items):
        if _run is not run:
            return
        if kind == "event" and not (item["type"] == "preview" and index != previews[-1]):  # only the newest preview
            _apply(run, props, item)
        elif kind == "eof":
            run.eof_at = time.monotonic()
        elif kind == "lost":  # a remote backend's connection ended
            _lost(props, item)
            return
        elif kind == "garbage":
            props.warning = f"The backend wrote a line that is not protocol: {item}"
            print("DreamTime:", props.warning)
    if _run is not run:
        return
    if run.hang_warned and items:
        run.hang_warned, props.warning = False, ""
    if run.eof_at is not None:
        if run.process.returncode is not None or time.monotonic() - run.eof_at > EXIT_GRACE:  # the exit code is in
            code, tail = run.process.returncode, run.process.stderr_tail()
            _fail(props, f"The backend stopped unexpectedly ({'still closing' if code is None else f'exit code {code}'}).",
                  tail or "See the system console.")
            _end_run(kill=True)
    elif run.cancel_at is not None and time.monotonic() - run.cancel_at > CANCEL_SECONDS:
        _fail(props, f"The backend did not stop within {CANCEL_SECONDS:.0f} s of Cancel; it was killed.",
              "The run folder keeps the last checkpoint.")
        _end_run(kill=True)
    elif run.process.silent_for() > _hang_seconds() and not run.hang_warned:
        run.hang_warned = True
        props.warning = f"No word from the backend for {run.process.silent_for():.0f} s; it may be stuck (Cancel twice kills it)."


def _apply(run: Run, props, event: dict) -> None:
    kind = event["type"]
    if event.get("id") not in (run.id, None):
        return
    if event.get("run_dir") and kind == "log":  # the run's folder, from its first event on (this run's, not the last one's)
        props.run_dir = event["run_dir"]
    if kind == "ready":
        if event["version"] != backend_link.protocol.PROTOCOL_VERSION:
            _fail(props, f"The backend speaks protocol {event['version']}; this add-on speaks {backend_link.protocol.PROTOCOL_VERSION}.",
                  "Update the add-on and the backend together.")
            _end_run(kill=True)
            return
        run.features, run.device = set(event["features"]), event["device"]
        props.status = f"running on {run.device}"
        backend_info.remember(preferences(), event)
    elif kind == "phase":  # downloading, loading the model: before the first step
        props.status, run.phase = event["message"], True
    elif kind == "progress":
        if run.phase:
            props.status, run.phase = f"running on {run.device}", False
        props.step, props.steps_total, props.t = event["step"], event["steps"], event["t"]
        props.loss, props.eta = event["loss"] if event["loss"] is not None else float("nan"), event["eta_s"]
    elif kind == "preview":
        if Path(event["path"]).name == variations.SHEET:  # a variations run's contact sheet, at its end
            preview.apply(event, variations.IMAGE_NAME)
        elif preview.apply(event) is None:
            props.warning = f"Preview {event['path']} unreadable: {event.get('_prepare_error', 'no pixels')}"
        props.preview_path = event["path"]
    elif kind == "mesh":
        _mesh(run, props, event)
    elif kind == "done":
        run_end.record(run, props, event)
        _end_run()
    elif kind == "error":
        if event["code"] in NON_FATAL or event["id"] is None:
            props.warning = run_end.text(event)
            run.extracts = max(run.extracts - (event["code"] in ("unsupported", "no_run", "extract")), 0)
        elif event["code"] == "cancelled":  # cancelled before training (while downloading): not an error
            props.running, props.status, props.warning = False, f"cancelled: {event['message']}", event.get("hint", "")
            _end_run()
        else:
            offline = event["code"] == "model_offline" and not online_access() and isinstance(run.process, BackendProcess)
            _fail(props, event["message"], OFFLINE_HINT if offline else event.get("hint", ""))
            _end_run()
    elif kind == "log" and event["level"] in ("warning", "error"):
        props.warning = run_end.text(event)


def _lost(props, info: dict) -> None:
    """The connection to a remote backend ended: an error in the panel; if the run had reached the
    backend it goes on there and Reconnect picks it up."""
    _fail(props, info["message"], info["hint"])
    if info["attached"]:
        props.status = "disconnected: the run goes on on the remote backend"
    _end_run(kill=True)


def _mesh(run: Run, props, event: dict) -> None:
    if "_prepare_error" in event:  # a remote backend's mesh that did not arrive (too large for it to send, or corrupted)
        props.warning = f"The mesh did not arrive: {event['_prepare_error']}"
        run.extracts = max(run.extracts - 1, 0)
        return
    props.mesh_path = event["path"]
    if run.config.get("variations", 1) > 1:  # kept for "Import" in the Variations panel, not imported one by one
        return
    prompt = run.config.get("prompt", "DreamTime")
    name = f"{prompt} (step {props.step})" if run.extracts else prompt
    run.extracts = max(run.extracts - 1, 0)
    if props.auto_import:
        scene_name, source = run.scene_name, run.source_object

        def failed(message: str) -> None:
            scene = bpy.data.scenes.get(scene_name)
            if scene is not None:
                scene.dreamtime.warning = f"Mesh import failed: {message}"

        def landed(obj) -> None:  # the backend exported it in the source's frame (backend/init_mesh.py)
            if source:
                selection.land_in_place(obj, source)

        size = 0.0 if source else props.import_size  # a result from an object keeps the object's size
        try:  # read on a thread, built in slices by later pumps
            mesh_import.start_import(bpy.context, event["path"], name, size, on_error=failed, on_done=landed)
        except (RuntimeError, OSError) as exc:
            failed(str(exc))


# ---------------------------------------------------------------------- helpers
def _end_run(kill: bool = False) -> None:
    """Forget the run; its process gets shutdown (or is killed) and is reaped by pump()."""
    global _run
    if _run is None:
        return
    _set(running=False)
    run, _run = _run, None
    retire(run.process, kill)


def retire(process: BackendProcess, kill: bool = False) -> None:
    """Ask a process to exit (or kill it); later pumps reap it."""
    if kill:
        process.kill()
    else:
        process.send(backend_link.protocol.message("shutdown"))
    _closing.append((process, time.monotonic()))
    ensure_timer()


def _reap() -> None:
    for entry in list(_closing):
        process, since = entry
        if process.returncode is None and time.monotonic() - since > EXIT_SECONDS:
            process.kill()
        if process.returncode is not None:
            process.stop()  # already exited: reaps and closes the pipes without waiting
            _closing.remove(entry)


def _hang_seconds() -> float:
    prefs = preferences()
    return float(prefs.hang_seconds) if prefs is not None else HANG_SECONDS


def _props():
    scene = bpy.data.scenes.get(_run.scene_name) if _run else None
    return scene.dreamtime if scene else None


def _set(**values) -> None:
    props = _props()
    for name, value in values.items():
        if props is not None:
            setattr(props, name, value)


def _fail(props, message: str, hint: str) -> str:
    props.error, props.error_hint, props.running, props.status = message, hint, False, "error"
    return message


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(pump):
        bpy.app.timers.register(pump, first_interval=PUMP_INTERVAL)
