"""The one message format between the Blender add-on and the backend (docs/ARCHITECTURE.md §3).

Standard library only: the add-on (Blender's Python, no torch) and the backend both import this
file. One UTF-8 JSON object per line; every message has a `type`. The first event a backend
sends is `ready`, which states PROTOCOL_VERSION.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

PROTOCOL_VERSION = 1

# Requests (add-on -> backend), with their required fields.
REQUESTS: dict[str, tuple[str, ...]] = {
    "generate": ("id", "config"),
    "cancel": ("id",),
    "extract": ("id",),
    "shutdown": (),
    "ping": (),
    "attach": ("id",),  # re-send a run's latest progress, preview, mesh and end (a client that reconnected)
}

# Events (backend -> add-on), with their required fields.
EVENTS: dict[str, tuple[str, ...]] = {
    "ready": ("version", "device", "features"),
    "phase": ("id", "phase", "message"),  # before the first step: "download" (+ bytes_done, bytes_total), "load"
    "progress": ("id", "step", "steps", "t", "loss", "eta_s"),
    "preview": ("id", "step", "path", "width", "height"),
    "mesh": ("id", "path", "n_vertices", "n_faces"),
    "done": ("id", "outputs"),  # + `outcome` (OUTCOMES) and `step`: how the run ended
    "error": ("id", "code", "message", "hint"),
    "log": ("level", "message"),  # + `id`; `code` and `hint` for a warning about a run; `run_dir`: the run's folder, from its start
    "pong": (),
}


# Over TCP (`serve --listen`) the first line a client sends is `auth {token}` and nothing else is
# read before it passes; there `preview` and `mesh` events also carry the file's bytes as base64
# `data` with its `sha256`, since the client cannot see the backend's disk.
AUTH = "auth"
DEFAULT_PORT = 7841
FILE_EVENTS = ("preview", "mesh")  # events whose `path` names a file the client needs
MAX_FILE_BYTES = 256 << 20  # a larger file is announced with `data_error` instead of its bytes

# How a run that ends with `done` ended. "complete": every step trained and a mesh written;
# "stopped": a stop request (a client's cancel, or the backend's own: a signal, shutdown, stdin
# closed) ended it early, its checkpoint and mesh still written; "no_mesh": the field has no surface
# to extract (outputs' `mesh` is null, a `log` warning with a hint came first). A stopped run
# without a surface is "no_mesh", its `outputs.stopped_at` set. A done event without `outcome`
# (an older backend) is "complete". The server adds `stopped_by` to a stopped run's done: "client"
# (its cancel) or "backend" (the backend itself was stopped).
OUTCOMES = ("complete", "stopped", "no_mesh")


class ProtocolError(ValueError):
    """A line that is not a well-formed message of this protocol."""


def message(kind: str, **fields: Any) -> dict[str, Any]:
    """Build a message dict, checking the type and that its required fields are present."""
    required = REQUESTS.get(kind, EVENTS.get(kind))
    if required is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    missing = [name for name in required if name not in fields]
    if missing:
        raise ProtocolError(f"{kind}: missing field(s) {', '.join(missing)}")
    return {"type": kind, **fields}


def encode(msg: dict[str, Any]) -> str:
    """One message as one line of JSON (newline included); non-ASCII text kept as UTF-8."""
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


def decode(line: str | bytes, allowed: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """Parse one line into a message; raise ProtocolError with a short reason if it is not one.

    `allowed` restricts the accepted types (REQUESTS on the backend side, EVENTS in the add-on).
    """
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"not UTF-8: {exc.reason}") from None
    try:
        msg = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("not a message: expected a JSON object with a string 'type'")
    table = allowed if allowed is not None else {**REQUESTS, **EVENTS}
    required = table.get(msg["type"])
    if required is None:
        raise ProtocolError(f"unknown message type {msg['type']!r}")
    missing = [name for name in required if name not in msg]
    if missing:
        raise ProtocolError(f"{msg['type']}: missing field(s) {', '.join(missing)}")
    return msg


# Constructors, one per event the backend sends.
def ready(device: str, features: list[str], presets: dict[str, dict[str, Any]] | None = None,
          auto_guidance: dict[str, str] | None = None) -> dict[str, Any]:
    """`presets`: for each device this backend can run on, the config fields its preset sets (what a
    request that leaves them out gets); `auto_guidance`: the guidance `auto` picks there. So the panel
    can show the device, the steps and the guidance a run will have."""
    extra = {name: value for name, value in (("presets", presets), ("auto_guidance", auto_guidance)) if value is not None}
    return message("ready", version=PROTOCOL_VERSION, device=device, features=features, **extra)


def phase(run_id: str, name: str, message_text: str, **extra: Any) -> dict[str, Any]:
    """A long step before training: "download" (with bytes_done, bytes_total) or "load"."""
    return message("phase", id=run_id, phase=name, message=message_text, **extra)


def progress(run_id: str, step: int, steps: int, t: int, loss: float, eta_s: float) -> dict[str, Any]:
    return message("progress", id=run_id, step=step, steps=steps, t=t, loss=loss, eta_s=eta_s)


def preview(run_id: str, step: int, path: str, width: int, height: int) -> dict[str, Any]:
    return message("preview", id=run_id, step=step, path=path, width=width, height=height)


def mesh(run_id: str, path: str, n_vertices: int, n_faces: int) -> dict[str, Any]:
    return message("mesh", id=run_id, path=path, n_vertices=n_vertices, n_faces=n_faces)


def done(run_id: str, outputs: dict[str, Any]) -> dict[str, Any]:
    """The run's end: `outcome` from outputs' (OUTCOMES; "complete" if it has none), `step` its last step."""
    outcome = outputs.get("outcome", "complete")
    if outcome not in OUTCOMES:
        raise ProtocolError(f"done: outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    return message("done", id=run_id, outputs=outputs, outcome=outcome, step=outputs.get("steps_done"))


def outcome(event: dict[str, Any]) -> str:
    """A done event's outcome (OUTCOMES); "complete" for a backend that predates the field."""
    value = event.get("outcome", "complete")
    return value if value in OUTCOMES else "complete"


def error(run_id: str | None, code: str, message_text: str, hint: str = "") -> dict[str, Any]:
    return message("error", id=run_id, code=code, message=message_text, hint=hint)


def log(level: str, message_text: str) -> dict[str, Any]:
    return message("log", level=level, message=message_text)


def auth(token: str) -> dict[str, Any]:
    """The first line of a TCP connection (not a request: the transport reads it, the server never does)."""
    return {"type": AUTH, "token": token}


def with_file_data(event: dict[str, Any], max_bytes: int = MAX_FILE_BYTES) -> dict[str, Any]:
    """A preview or mesh event plus its file's bytes (`data`: base64, `sha256`: hex), or `data_error`
    (unreadable, or larger than `max_bytes`)."""
    if event.get("type") not in FILE_EVENTS:
        return event
    try:
        with open(event["path"], "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        return {**event, "data_error": f"unreadable on the backend: {exc}"}
    if len(data) > max_bytes:
        return {**event, "data_error": f"the {event['type']} file is larger than the {max_bytes / 2**20:.3g} MiB this backend sends "
                                       "over the connection (serve --max-file-mib); copy it from the backend's disk"}
    return {**event, "data": base64.b64encode(data).decode("ascii"), "sha256": hashlib.sha256(data).hexdigest()}


def file_data(event: dict[str, Any]) -> bytes:
    """The bytes a with_file_data event carries, checked; ProtocolError if absent or corrupted."""
    if "data" not in event:
        raise ProtocolError(event.get("data_error") or f"{event.get('type')} event without data")
    try:
        data = base64.b64decode(event["data"], validate=True)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"data is not base64: {exc}") from None
    if hashlib.sha256(data).hexdigest() != event.get("sha256"):
        raise ProtocolError("data does not match its sha256: corrupted in transit")
    return data
