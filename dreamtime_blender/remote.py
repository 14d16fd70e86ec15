"""A backend on another machine, seen from Blender: `python -m backend serve --listen` over TCP.

Standard library only (socket). It offers what client.py uses of a BackendProcess — send, drain,
silent_for, returncode, stderr_tail, stop, kill — so the panel works the same either way. One
thread connects (Blender's main thread never waits on the network), sends `auth {token}` and the
requests queued meanwhile, then turns each line into a queue item like the process's reader:
("event", dict) or ("garbage", text). Previews and meshes arrive with their bytes (base64 `data`,
checked against `sha256`); they are written under `cache_dir/<run id>/` and the event's `path`
(and `done`'s outputs) point there, so preview.py and mesh_import.py read local files. The end of
the connection that we did not ask for is ("lost", {"message", "hint", "attached"}): the run goes
on on the server, and `attach {id}` on a new connection gets its state and result back.

The server reads no file this machine names (backend/serve/remote_policy.py): `targets_as_data`
sends a targets file's contents instead of its path. While connected, a `ping` every
`keepalive_seconds` keeps the server's idle timeout (serve --idle-timeout) from closing a
connection that only watches a long run; the pongs do not count as the backend's output, so a
stuck run is still noticed.
"""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .process import drain_queue

CONNECT_SECONDS = 10.0  # a host that does not answer within this is reported
KEEPALIVE_SECONDS = 60.0  # the preferences' default ping interval; the server's default idle timeout is 600 s
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class RemoteBackend:
    def __init__(self, host: str, port: int, token: str, protocol, cache_dir: str | Path, prepare: Callable[[dict], None] | None = None,
                 keepalive_seconds: float = 0.0):
        """`protocol` is the backend's protocol module (backend_link.protocol in Blender);
        `keepalive_seconds`: ping the backend this often while connected (0: never)."""
        self.host, self.port, self.token, self.protocol = host.strip(), int(port), token.strip(), protocol
        self.keepalive_seconds = keepalive_seconds
        self.cache_dir = Path(cache_dir)
        self.prepare = prepare or (lambda event: None)
        self.items: queue.Queue = queue.Queue()
        self.last_output = time.monotonic()
        self.local_copies: dict[str, str] = {}  # a file's path on the backend -> its copy here
        self._sock: socket.socket | None = None
        self._pending: list[bytes] = []  # requests sent before the connection was up
        self._lock = threading.Lock()
        self._closing = False  # we hung up: the end of the connection is not a loss
        self._attached = False  # the backend said ready
        self._refusal: dict | None = None  # an error the backend sent before ready (auth, busy)
        self._thread: threading.Thread | None = None
        self._hung_up = threading.Event()  # the connection is over: the pinger stops

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> "RemoteBackend":
        self._thread = threading.Thread(target=self._run, name="dreamtime-remote", daemon=True)
        self._thread.start()
        return self

    # ------------------------------------------------------------------ the connection thread
    def _run(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=CONNECT_SECONDS)
        except OSError as exc:
            self._lost(f"Cannot connect to the remote backend at {self.address}: {exc.strerror or exc}.",
                       "Is `python -m backend serve --listen` running there? Check Host and Port in the preferences (and the SSH tunnel).")
            return
        try:
            sock.settimeout(None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            with self._lock:
                self._sock = sock
                if self._closing:
                    return
                sock.sendall(self.protocol.encode(self.protocol.auth(self.token)).encode("utf-8") + b"".join(self._pending))
                self._pending.clear()
            if self.keepalive_seconds > 0:
                threading.Thread(target=self._ping_loop, name="dreamtime-remote-ping", daemon=True).start()
            with sock.makefile("rb") as stream:
                for line in stream:
                    item = self._decode(line)
                    if item is not None and item[0] == "event" and item[1]["type"] == "pong":
                        continue  # our keep-alive answered: not a sign of the run's life
                    self.last_output = time.monotonic()
                    if item is not None:
                        self.items.put(item)
            reason = "the connection was closed"
        except OSError as exc:
            reason = str(exc.strerror or exc)
        finally:
            self._hung_up.set()
            sock.close()
        if self._refusal is not None:
            self._lost(f"The remote backend at {self.address} refused the connection: {self._refusal['message']}",
                       self._refusal.get("hint", ""))
        else:
            self._lost(f"Lost the connection to the remote backend at {self.address} ({reason}).",
                       "The run goes on there: press Reconnect to get its progress and result." if self._attached else "")

    def _ping_loop(self) -> None:
        while not self._hung_up.wait(self.keepalive_seconds):
            if not self.send(self.protocol.message("ping")):
                return

    def _lost(self, message: str, hint: str) -> None:
        if not self._closing:
            self.items.put(("lost", {"message": message, "hint": hint, "attached": self._attached}))
        self._closing = True

    def _decode(self, line: bytes) -> tuple[str, Any] | None:
        protocol = self.protocol
        try:
            event = protocol.decode(line, protocol.EVENTS)
        except protocol.ProtocolError as exc:
            return "garbage", f"{exc}: {line[:200]!r}"
        if not self._attached:
            if event["type"] == "error":  # refused (auth, busy): reported with the connection's end
                self._refusal = event
                return None
            self._attached = event["type"] == "ready"
        try:
            if event["type"] in protocol.FILE_EVENTS:
                self._store(event)
            elif event["type"] == "done":
                self._localize_outputs(event)
            elif event.get("run_dir") and event.get("id"):  # the run's folder: here, its local copy
                event["remote_run_dir"], event["run_dir"] = event["run_dir"], str(self.run_folder(event["id"]))
            self.prepare(event)
        except Exception as exc:  # a bad file must not kill the reader
            event["_prepare_error"] = f"{type(exc).__name__}: {exc}"
        event.pop("data", None)
        return "event", event

    def _store(self, event: dict) -> None:
        """Write the event's bytes under the cache and point `path` at them."""
        data = self.protocol.file_data(event)  # ProtocolError when absent or corrupted
        local = self.run_folder(event["id"]) / local_name(event["type"], event["path"])
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.part")
        tmp.write_bytes(data)
        os.replace(tmp, local)
        self.local_copies[event["path"]] = str(local)
        event["remote_path"], event["path"] = event["path"], str(local)

    def _localize_outputs(self, event: dict) -> None:
        outputs = event["outputs"]
        if isinstance(outputs, dict):
            for key, value in list(outputs.items()):
                if isinstance(value, str) and value in self.local_copies:
                    outputs[key] = self.local_copies[value]
            outputs["remote_run_dir"], outputs["run_dir"] = outputs.get("run_dir"), str(self.run_folder(event["id"]))

    def run_folder(self, run_id: str) -> Path:
        return self.cache_dir / (SAFE_NAME.sub("_", str(run_id)).lstrip(".") or "run")

    # ------------------------------------------------------------------ main thread
    def send(self, message: dict) -> bool:
        """Queue or write one request; False once closed. `shutdown` hangs up (the server goes on)."""
        if message.get("type") == "shutdown":
            self.close()
            return True
        line = self.protocol.encode(message).encode("utf-8")
        with self._lock:
            if self._closing:
                return False
            if self._sock is None:
                self._pending.append(line)
                return True
            try:
                self._sock.sendall(line)
                return True
            except OSError:
                return False

    def drain(self, limit: int = 10_000) -> list[tuple[str, Any]]:
        """Everything the reader has queued so far (never blocks)."""
        return drain_queue(self.items, limit)

    @property
    def returncode(self) -> int | None:
        """None while connecting or connected; 0 once the connection is over."""
        return 0 if self._thread is not None and not self._thread.is_alive() else None

    pid = None  # no local process

    def stderr_tail(self, lines: int = 8) -> str:
        return ""  # the backend's log is on its own machine

    def silent_for(self) -> float:
        return time.monotonic() - self.last_output

    def close(self) -> None:
        """Hang up (from any thread); the reader ends without reporting a loss."""
        with self._lock:
            self._closing = True
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    kill = close

    def stop(self, grace: float = 2.0) -> int | None:
        self.close()
        if self._thread is not None:
            self._thread.join(grace)
        return self.returncode


def targets_as_data(values: dict, abspath: Callable[[str], str] = os.path.abspath) -> dict:
    """`values` with a targets file's path replaced by its JSON object, read here: a remote backend
    reads no path a client names. ValueError naming `targets` when the file cannot be read."""
    targets = values.get("targets")
    if not isinstance(targets, str) or not targets.strip():
        return values
    path = Path(abspath(targets))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"targets: cannot read {path} to send it to the remote backend ({exc})") from None
    return {**values, "targets": data}


def local_name(kind: str, remote_path: str) -> str:
    """Where a file from the backend goes inside its run's cache folder (never outside it)."""
    parts = [SAFE_NAME.sub("_", part).lstrip(".") or "file" for part in re.split(r"[\\/]", remote_path) if part]
    name = parts[-1] if parts else "file"
    if kind == "preview":
        return f"previews/{name}"
    if len(parts) >= 3 and parts[-3] == "extracts":  # a mid-run mesh: extracts/step_XXXXX/mesh.glb
        return f"extracts/{parts[-2]}/{name}"
    if len(parts) >= 2 and re.fullmatch(r"s\d+", parts[-2]):  # a variation's mesh: s<seed>/mesh.glb (cluster/variations.py)
        return f"{parts[-2]}/{name}"
    return name
