""""Install backend": a virtual environment in the extension's user folder with the backend's
requirements, made by subprocesses whose output the preferences show line by line.

Runs one command at a time; a reader thread collects its output; `pump()` (a timer on the main
thread) moves to the next command and writes the status. Nothing blocks Blender.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import bpy

from . import backend_link, backend_python

PUMP_INTERVAL = 0.25


def requirements() -> list[str]:
    """The backend's requirements: bundled requirements.txt, else the checkout's pyproject.toml."""
    root = backend_link.backend_root()
    listed = root / "requirements.txt"
    if listed.is_file():
        lines = listed.read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    with open(root / "pyproject.toml", "rb") as handle:
        return list(tomllib.load(handle)["project"]["dependencies"])


def commands(venv: Path, base_python: str = sys.executable) -> list[tuple[str, list[str]]]:
    python = str(backend_python.venv_python(venv))
    return [
        ("create the virtual environment", [base_python, "-m", "venv", str(venv)]),
        ("upgrade pip", [python, "-m", "pip", "install", "--upgrade", "pip"]),
        ("install torch, diffusers and the rest (large download)", [python, "-m", "pip", "install", *requirements()]),
    ]


class Job:
    def __init__(self, steps: list[tuple[str, list[str]]], on_status):
        self.steps, self.on_status, self.index = steps, on_status, -1
        self.proc: subprocess.Popen | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=20)
        self.result: str | None = None  # "ok" or the failure message, when finished

    def _next(self) -> None:
        self.index += 1
        label, argv = self.steps[self.index]
        self.on_status(f"{self.index + 1}/{len(self.steps)} {label} ...")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.append(line.decode("utf-8", "replace").rstrip())

    def pump(self) -> bool:
        """Advance; True while still working."""
        try:
            if self.proc is None:
                self._next()
            elif self.proc.poll() is None:
                label = self.steps[self.index][0]
                self.on_status(f"{self.index + 1}/{len(self.steps)} {label}: {self.lines[-1] if self.lines else '...'}"[:300])
            elif self.proc.returncode != 0:
                tail = " | ".join(list(self.lines)[-3:])
                self.result = f"failed: {self.steps[self.index][0]} (exit code {self.proc.returncode}): {tail}"[:500]
            elif self.index + 1 < len(self.steps):
                self._next()
            else:
                self.result = "ok"
        except OSError as exc:
            self.result = f"failed: {exc}"
        if self.result is not None:
            self.on_status("installed" if self.result == "ok" else self.result)
        return self.result is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()


_job: Job | None = None


def start(steps: list[tuple[str, list[str]]], on_status) -> bool:
    """Start installing; False if an install is already running."""
    global _job
    if _job is not None:
        return False
    _job = Job(steps, on_status)
    bpy.app.timers.register(pump, first_interval=0.0)
    return True


def pump() -> float | None:
    global _job
    if _job is None or not _job.pump():
        _job = None
        return None
    return PUMP_INTERVAL


def running() -> bool:
    return _job is not None


def stop() -> None:
    global _job
    if _job is not None:
        _job.kill()
        _job = None
    if bpy.app.timers.is_registered(pump):
        bpy.app.timers.unregister(pump)
