""""Install backend": a virtual environment in the extension's user folder with the backend's
requirements, made by subprocesses whose output the preferences show line by line.

The torch build is the one this machine needs: on Windows and Linux, `nvidia-smi` is asked first;
if it finds an NVIDIA GPU, torch comes from PyTorch's CUDA index (on Windows the default wheel has
no CUDA: an artist with an NVIDIA card would silently get the CPU and the demo prior), else from
its CPU index on Linux (the default Linux wheel carries gigabytes of CUDA libraries for nothing);
macOS gets the default build (Apple GPUs through MPS). The last step asks the new venv which
device torch sees, and the status says it.

Runs one command at a time; a reader thread collects its output; `pump()` (a timer on the main
thread) moves to the next command and writes the status. A step's label and command may depend on
what earlier steps printed (a callable of the outputs so far). No command opens a console window
on Windows. Nothing blocks Blender.
"""

from __future__ import annotations

import collections
import platform
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Callable

import bpy

from . import backend_link, backend_python
from .process import CREATE_NO_WINDOW

PUMP_INTERVAL = 0.25
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"  # torch's CUDA 12.8 wheels (an NVIDIA driver of 570 or newer)
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
NVIDIA_SMI = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
DEVICE_CHECK = (
    "import torch; cuda = torch.cuda.is_available(); mps = getattr(torch.backends, 'mps', None); "
    "device = 'cuda' if cuda else 'mps' if mps is not None and mps.is_available() else 'cpu'; "
    "print('DEVICE', torch.__version__, device, torch.cuda.get_device_name(0) if cuda else '')"
)


def requirements() -> list[str]:
    """The backend's requirements: bundled requirements.txt, else the checkout's pyproject.toml."""
    root = backend_link.backend_root()
    listed = root / "requirements.txt"
    if listed.is_file():
        lines = listed.read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    with open(root / "pyproject.toml", "rb") as handle:
        return list(tomllib.load(handle)["project"]["dependencies"])


def nvidia_gpu(lines: list[str]) -> str | None:
    """The first GPU `nvidia-smi --query-gpu=name,...` printed ("NVIDIA GeForce RTX 4090, 560.35, 24564 MiB"), or None."""
    found = [line.split(",")[0].strip() for line in lines if line.count(",") >= 2 and line.split(",")[0].strip()]
    return found[0] if found else None


def torch_step(python: str, system: str, gpu: str | None, torch_spec: str = "torch") -> tuple[str, list[str]]:
    """The step that installs torch: its label and pip command, for `system` (platform.system()) and the GPU found."""
    pip = [python, "-m", "pip", "install", torch_spec]
    if system == "Darwin":
        return "install torch (the default build: Apple GPUs through MPS)", pip
    if gpu is not None:
        return f"install torch with CUDA for the {gpu} (a large download)", [*pip, "--index-url", CUDA_INDEX]
    if system == "Linux":
        return "install torch, CPU build (nvidia-smi found no NVIDIA GPU)", [*pip, "--index-url", CPU_INDEX]
    return "install torch, CPU build (nvidia-smi found no NVIDIA GPU)", pip  # Windows' default wheel is the CPU one


def installed_device(lines: list[str]) -> str:
    """The final status from DEVICE_CHECK's line: 'installed: torch 2.13.0+cu128, device cuda (NVIDIA ...)'."""
    found = [line.split(" ", 3) for line in lines if line.startswith("DEVICE ")]
    if not found:
        return "installed (the device check printed nothing)"
    _, version, device, *name = found[-1]
    named = f" ({name[0].strip()})" if name and name[0].strip() else ""
    return f"installed: torch {version}, device {device}{named}"


def commands(venv: Path, base_python: str = sys.executable, system: str | None = None) -> list[tuple]:
    """The install steps: (label, argv) or (label, argv, optional); a later label and argv may be a
    callable of the outputs so far (index -> lines), as the torch step is of nvidia-smi's."""
    python = str(backend_python.venv_python(venv))
    system = system or platform.system()
    needed = requirements()
    torch_spec = next((spec for spec in needed if spec.replace(" ", "").lower().startswith(("torch>", "torch=", "torch<", "torch~"))
                       or spec.strip().lower() == "torch"), "torch")
    rest = [spec for spec in needed if spec != torch_spec]
    steps: list[tuple] = []
    if system != "Darwin":
        steps.append(("look for an NVIDIA GPU (nvidia-smi)", NVIDIA_SMI, True))  # absent or failing: no GPU, not an error

    def torch_of(outputs: dict[int, list[str]]) -> tuple[str, list[str]]:
        return torch_step(python, system, nvidia_gpu(outputs.get(0, [])) if system != "Darwin" else None, torch_spec)

    steps += [
        ("create the virtual environment", [base_python, "-m", "venv", str(venv)]),
        ("upgrade pip", [python, "-m", "pip", "install", "--upgrade", "pip"]),
        (lambda outputs: torch_of(outputs)[0], lambda outputs: torch_of(outputs)[1]),
        ("install diffusers and the rest", [python, "-m", "pip", "install", *rest]),
        ("check which device the backend uses", [python, "-c", DEVICE_CHECK]),
    ]
    return steps


class Job:
    def __init__(self, steps: list[tuple], on_status: Callable[[str], None]):
        self.steps, self.on_status, self.index = steps, on_status, -1
        self.proc: subprocess.Popen | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=20)
        self.outputs: dict[int, list[str]] = {}  # step index -> its output lines (the last 200)
        self.result: str | None = None  # "ok" or the failure message, when finished
        self.done_status = "installed"

    def _label(self, index: int) -> str:
        label = self.steps[index][0]
        return label(self.outputs) if callable(label) else label

    def _next(self) -> None:
        self.index += 1
        step = self.steps[self.index]
        argv = step[1](self.outputs) if callable(step[1]) else step[1]
        self.on_status(f"{self.index + 1}/{len(self.steps)} {self._label(self.index)} ...")
        self.lines.clear()
        self.outputs[self.index] = []
        try:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         creationflags=CREATE_NO_WINDOW)
        except OSError:
            if not self._optional():
                raise
            self.proc = None  # e.g. no nvidia-smi: nothing to learn from it
            self._advance()
            return
        self.reader = threading.Thread(target=self._read, args=(self.proc, self.outputs[self.index]), daemon=True)
        self.reader.start()

    def _optional(self) -> bool:
        return len(self.steps[self.index]) > 2 and bool(self.steps[self.index][2])

    def _advance(self) -> None:
        if self.index + 1 < len(self.steps):
            self._next()
        else:
            self.result = "ok"

    def _read(self, proc: subprocess.Popen, output: list[str]) -> None:
        for line in proc.stdout:
            text = line.decode("utf-8", "replace").rstrip()
            self.lines.append(text)
            output.append(text)
            del output[:-200]

    def pump(self) -> bool:
        """Advance; True while still working."""
        try:
            if self.index < 0:
                self._next()
            elif self.proc is not None and self.proc.poll() is None:
                label = self._label(self.index)
                self.on_status(f"{self.index + 1}/{len(self.steps)} {label}: {self.lines[-1] if self.lines else '...'}"[:300])
            else:
                self._finished_step()
        except OSError as exc:
            self.result = f"failed: {exc}"
        if self.result is not None:
            self.on_status(self.done_status if self.result == "ok" else self.result)
        return self.result is None

    def _finished_step(self) -> None:
        if self.proc is not None:
            self.reader.join(1.0)  # its last lines
            if self.proc.returncode != 0 and not self._optional():
                tail = " | ".join(list(self.lines)[-3:])
                self.result = f"failed: {self._label(self.index)} (exit code {self.proc.returncode}): {tail}"[:500]
                return
            if self.proc.returncode != 0:
                self.outputs[self.index] = []  # an optional step that failed taught nothing
        if any(line.startswith("DEVICE ") for line in self.outputs.get(self.index, [])):
            self.done_status = installed_device(self.outputs[self.index])
        self._advance()

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
