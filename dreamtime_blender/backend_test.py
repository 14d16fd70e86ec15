"""Preferences › **Test backend**: start the backend the preferences name to see its `ready`
(probe.py), then run its doctor (doctor.py) beside it; both report into the preferences.

Knows nothing of a run: client.test_backend() says whether one is going (the doctor's timing
would be off then) and keeps pumping both while they are active.
"""

from __future__ import annotations

from . import backend_info, backend_link, doctor, probe
from .backends import BackendUnavailable, backend_env, open_backend, preferences
from .process import BackendProcess


def start(generating: bool) -> str:
    """Start the test; returns the status line, also shown in the preferences."""
    if probe.active() or doctor.active():
        return "a test is already running"
    try:
        process, name = open_backend()
    except BackendUnavailable as exc:
        return _status(backend_link.wording.sentences(str(exc), exc.hint))
    status = probe.watch(process, name, _status, lambda event: backend_info.remember(preferences(), event))
    if not isinstance(process, BackendProcess):
        _doctor_report(None, ["Doctor: run `python -m backend doctor` on the remote backend's machine."])
    elif generating:
        _doctor_report(None, ["Doctor: not while a generation runs (its timing would be off); Test again afterwards."])
    else:
        doctor.start(process.python, backend_link.backend_root(), backend_env(), _doctor_report)
    return status


def _status(text: str) -> str:
    prefs = preferences()
    if prefs is not None:
        prefs.backend_status = text
    return text


def _doctor_report(result: dict | None, lines: list[str]) -> None:
    prefs = preferences()
    if prefs is not None:
        prefs.doctor_lines = "\n".join(lines)
