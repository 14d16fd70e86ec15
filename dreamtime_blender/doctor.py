""""Test backend", its second half: `python -m backend doctor --json` (the torch build, the device
and its memory, the libraries, a short measured step against its floor, and a verdict) run in the
background for a local backend, and its answer as lines for the preferences.

Like probe.py it knows nothing of the client: client.test_backend() starts it with the backend's
Python, client.pump() calls pump(), and the result goes through the `report` callable, as the
report's JSON and its summary lines. Blender's main thread never waits on it.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .process import popen_backend

DOCTOR_SECONDS = 300.0  # its benchmark takes well under a minute on a CPU; a first CUDA init can be slow
KEYS = ("device", "torch", "cuda", "diffusers", "tcnn", "precision", "step_ms", "floor_ms", "ratio", "peak_mem_mb", "ok", "problems")

_job = None  # (process, output chunks, started, report)


def active() -> bool:
    return _job is not None


def start(python: str, root: Path, env: dict[str, str], report: Callable[[dict | None, list[str]], None]) -> None:
    """Run the doctor; report(result or None, lines) once it has answered, failed or timed out."""
    global _job
    cancel()
    process = popen_backend(python, root, ["doctor", "--json"], env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    chunks: list[bytes] = []
    threading.Thread(target=lambda: chunks.extend(process.stdout), name="dreamtime-doctor", daemon=True).start()
    _job = (process, chunks, time.monotonic(), report)
    report(None, ["Doctor: measuring the backend (a minute at most on a CPU) ..."])


def pump() -> None:
    global _job
    if _job is None:
        return
    process, chunks, started, report = _job
    if process.poll() is None:
        if time.monotonic() - started > DOCTOR_SECONDS:
            process.kill()
            process.wait()
            _job = None
            report(None, [f"Doctor: no answer within {DOCTOR_SECONDS:.0f} s; run `python -m backend doctor` in a terminal."])
        return
    time.sleep(0.05)  # the reader thread's last lines
    output = b"".join(chunks).decode("utf-8", "replace")
    _job = None
    result = parse(output)
    if result is None:
        tail = " | ".join(output.strip().splitlines()[-3:])[:300]
        if "invalid choice: 'doctor'" in output:
            report(None, ["Doctor: this backend has no doctor command yet; update the backend."])
        else:
            report(None, [f"Doctor failed (exit code {process.returncode}): {tail}"])
        return
    report(result, summary(result))


def cancel() -> None:
    global _job
    if _job is not None and _job[0].poll() is None:
        _job[0].kill()
        _job[0].wait()
    _job = None


def parse(output: str) -> dict | None:
    """The doctor's JSON object: the whole output, else its last line that is one."""
    for text in [output] + output.strip().splitlines()[::-1]:
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict) and "device" in value:
            return value
    return None


def _text(value: Any) -> str:
    if value in (None, "", False):
        return "none"
    if value is True:
        return "yes"
    if isinstance(value, dict):
        return ", ".join(f"{key} {_text(item)}" for key, item in value.items())
    return str(value)


def summary(result: dict) -> list[str]:
    """The doctor's answer as a few lines: what runs where, how fast against its floor, the verdict."""
    lines = [f"Device {_text(result.get('device'))}, precision {_text(result.get('precision'))}; torch {_text(result.get('torch'))}, "
             f"CUDA {_text(result.get('cuda'))}, diffusers {_text(result.get('diffusers'))}, tiny-cuda-nn {_text(result.get('tcnn'))}"]
    numbers = [result.get(key) for key in ("step_ms", "floor_ms", "ratio", "peak_mem_mb")]
    if all(isinstance(n, (int, float)) for n in numbers):
        step, floor, ratio, peak = numbers
        lines.append(f"A step takes {step:.0f} ms, its floor {floor:.0f} ms ({ratio:.2f}x); peak memory {peak:.0f} MB")
    problems = result.get("problems") or []
    if result.get("ok") and not problems:
        lines.append("Doctor: OK")
    else:
        lines.append("Doctor: " + ("; ".join(_text(p) for p in problems) if problems else "not OK"))
    return lines
