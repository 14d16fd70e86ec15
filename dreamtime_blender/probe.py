""""Test backend": watch a backend started just to see its `ready` answer, then let it go.

client.test_backend() starts the backend and hands it here; client.pump() calls pump() like a run,
so the button never blocks Blender. This module knows nothing of the client: the status line goes
through the `report` callable it is given, and a finished backend is handed back to pump's caller
to retire.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from . import backend_link

PROBE_SECONDS = 120.0  # torch's first import can be slow on a cold disk

_probe = None  # (process, "python (source)", started, report, on_ready)


def active() -> bool:
    return _probe is not None


def watch(process: Any, name: str, report: Callable[[str], str], on_ready: Callable[[dict], None] | None = None) -> str:
    """Watch `process` (just started) for its `ready` (handed to `on_ready`); returns the status line it also reports."""
    global _probe
    _probe = (process, name, time.monotonic(), report, on_ready or (lambda event: None))
    return report(f"starting {name} ...")


def pump() -> Any | None:
    """Read what the watched backend said; the process once the test is over (to retire), else None."""
    global _probe
    if _probe is None:
        return None
    process, name, started, report, on_ready = _probe
    items = process.drain()
    ready = [item for kind, item in items if kind == "event" and item["type"] == "ready"]
    if ready:
        event = ready[0]
        on_ready(event)
        report(f"ready: protocol {event['version']}, device {event['device']}, features {', '.join(event['features'])}; {name}")
    elif lost := [item for kind, item in items if kind == "lost"]:  # a remote backend: refused or unreachable
        report(f"failed: {backend_link.wording.sentences(lost[0]['message'], lost[0]['hint'])}")
    elif ("eof", None) in items:
        report(f"failed: {name} ended (exit code {process.returncode}): {process.stderr_tail(3)}")
    elif time.monotonic() - started > PROBE_SECONDS:
        report(f"no answer from {name} within {PROBE_SECONDS:.0f} s")
    else:
        return None
    _probe = None
    return process


def cancel() -> None:
    global _probe
    if _probe is not None:
        _probe[0].stop(grace=1.0)
    _probe = None
