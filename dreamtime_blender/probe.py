""""Test backend": start the backend once, show its `ready` answer in the preferences, shut it down.

Pumped by client.pump() like a run, so the button never blocks Blender.
"""

from __future__ import annotations

import time

PROBE_SECONDS = 120.0  # torch's first import can be slow on a cold disk

_probe = None  # (process, "python (source)", started)


def active() -> bool:
    return _probe is not None


def start() -> str:
    """Start a backend just to see its `ready`; returns the status line it also writes."""
    global _probe
    from . import client

    if _probe is not None:
        return "a test is already running"
    try:
        process, name = client.open_backend()
    except client.BackendUnavailable as exc:
        return _status(f"{exc} {exc.hint}")
    _probe = (process, name, time.monotonic())
    client.ensure_timer()
    return _status(f"starting {name} ...")


def pump() -> None:
    global _probe
    from . import client

    if _probe is None:
        return
    process, name, started = _probe
    items = process.drain()
    ready = [item for kind, item in items if kind == "event" and item["type"] == "ready"]
    if ready:
        event = ready[0]
        _status(f"ready: protocol {event['version']}, device {event['device']}, features {', '.join(event['features'])}; {name}")
    elif lost := [item for kind, item in items if kind == "lost"]:  # a remote backend: refused or unreachable
        _status(f"failed: {lost[0]['message']} {lost[0]['hint']}".strip())
    elif ("eof", None) in items:
        _status(f"failed: {name} ended (exit code {process.returncode}): {process.stderr_tail(3)}")
    elif time.monotonic() - started > PROBE_SECONDS:
        _status(f"no answer from {name} within {PROBE_SECONDS:.0f} s")
    else:
        return
    _probe = None
    client.retire(process)


def cancel() -> None:
    global _probe
    if _probe is not None:
        _probe[0].stop(grace=1.0)
    _probe = None


def _status(text: str) -> str:
    from . import client

    prefs = client.preferences()
    if prefs is not None:
        prefs.backend_status = text
    return text
