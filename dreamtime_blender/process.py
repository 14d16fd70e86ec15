"""The backend process seen from Blender: spawn, write, read, stop. Standard library only.

`python -m backend serve` runs with cwd and PYTHONPATH at the backend sources. A reader thread
turns each stdout line into an item on a queue — ("event", dict) or ("garbage", text), and
("eof", None) at the end — after running `prepare(event)` on it there (the preview PNG is decoded
on that thread, not on Blender's main thread). Another thread keeps stderr's last lines for error
messages. `drain()` never blocks; `stop()` ends the process and reaps it (no zombie).
"""

from __future__ import annotations

import collections
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

STDERR_LINES = 40  # stderr lines kept for an error's hint
CREATE_NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # Windows: a subprocess opens no console window


def popen_backend(python: str, root: Path, args: list[str], env: dict[str, str] | None = None, **pipes) -> subprocess.Popen:
    """`python -m backend ARGS` with cwd and PYTHONPATH at the backend sources and no console window
    on Windows; `env` is set over Blender's environment (minus its own Python's settings)."""
    full = {key: value for key, value in os.environ.items() if key not in ("PYTHONHOME", "PYTHONSTARTUP")}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), full.get("PYTHONPATH", "")) if p)
    full["PYTHONUNBUFFERED"] = "1"
    full.update(env or {})
    return subprocess.Popen([python, "-m", "backend", *args], cwd=root, env=full, creationflags=CREATE_NO_WINDOW, **pipes)


def drain_queue(items: queue.Queue, limit: int) -> list:
    """Up to `limit` items already in `items`, without blocking."""
    drained = []
    while len(drained) < limit:
        try:
            drained.append(items.get_nowait())
        except queue.Empty:
            break
    return drained


class BackendProcess:
    def __init__(self, python: str, root: Path, protocol, prepare: Callable[[dict], None] | None = None,
                 env: dict[str, str] | None = None):
        """`protocol` is the backend's protocol module (backend_link.protocol in Blender); `env`: variables
        set for the backend (e.g. HF_HUB_OFFLINE)."""
        self.python, self.root, self.protocol, self.env = python, Path(root), protocol, dict(env or {})
        self.prepare = prepare or (lambda event: None)
        self.items: queue.Queue = queue.Queue()
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self.proc: subprocess.Popen | None = None
        self.last_output = time.monotonic()  # when stdout last said anything
        self._write_lock = threading.Lock()

    def start(self) -> "BackendProcess":
        self.proc = popen_backend(self.python, self.root, ["serve"], self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.last_output = time.monotonic()
        threading.Thread(target=self._read_stdout, name="dreamtime-stdout", daemon=True).start()
        self._stderr_reader = threading.Thread(target=self._read_stderr, name="dreamtime-stderr", daemon=True)
        self._stderr_reader.start()
        return self

    # ------------------------------------------------------------------ threads
    def _read_stdout(self) -> None:
        decode = self._decode
        try:
            for line in self.proc.stdout:
                self.last_output = time.monotonic()
                self.items.put(decode(line))
        except (OSError, ValueError):
            pass
        finally:
            self.items.put(("eof", None))

    def _decode(self, line: bytes) -> tuple[str, Any]:
        try:
            event = self.protocol.decode(line, self.protocol.EVENTS)
        except self.protocol.ProtocolError as exc:
            return "garbage", f"{exc}: {line[:200]!r}"
        try:
            self.prepare(event)
        except Exception as exc:  # a bad preview file must not kill the reader
            event["_prepare_error"] = f"{type(exc).__name__}: {exc}"
        return "event", event

    def _read_stderr(self) -> None:
        try:
            for line in self.proc.stderr:
                self.stderr.append(line.decode("utf-8", "replace").rstrip())
        except (OSError, ValueError):
            pass

    # ------------------------------------------------------------------ main thread
    def send(self, message: dict) -> bool:
        """Write one request; False if the process is gone."""
        line = self.protocol.encode(message).encode("utf-8")
        with self._write_lock:
            try:
                self.proc.stdin.write(line)
                self.proc.stdin.flush()
                return True
            except (OSError, ValueError, AttributeError):
                return False

    def drain(self, limit: int = 10_000) -> list[tuple[str, Any]]:
        """Everything the reader has queued so far (never blocks)."""
        return drain_queue(self.items, limit)

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def stderr_tail(self, lines: int = 8) -> str:
        if self.returncode is not None:  # it has exited: its last lines are at most a moment away
            self._stderr_reader.join(0.5)
        return "\n".join(list(self.stderr)[-lines:])

    def silent_for(self) -> float:
        """Seconds since stdout last said anything."""
        return time.monotonic() - self.last_output

    def kill(self) -> None:
        """End the process now (a later stop() or returncode reaps it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def stop(self, grace: float = 2.0, then: float = 2.0) -> int | None:
        """Close stdin (the backend stops its run after the current step, writes its checkpoint and
        mesh, and exits) and wait `grace` s for that; then terminate, then kill, `then` s each; always reaps."""
        if self.proc is None:
            return None
        for step, wait in ((self._close_stdin, grace), (self.proc.terminate, then), (self.proc.kill, then)):
            if self.proc.poll() is not None:
                break
            step()
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        if self.proc.poll() is None:
            self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            try:
                pipe.close()
            except (OSError, ValueError):
                pass
        return self.proc.returncode

    def _close_stdin(self) -> None:
        with self._write_lock:
            try:
                self.proc.stdin.close()
            except (OSError, ValueError):
                pass
