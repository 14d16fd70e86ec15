"""Which backend the preferences name, and starting it (docs/ARCHITECTURE.md §10): a local process
run by the backend Python (backend_python.py) with the environment Blender's settings imply — no
model downloads while Blender's "Allow Online Access" is off — or a connection to a remote one."""

from __future__ import annotations

import bpy

from . import backend_link, backend_python, preview, remote
from .process import BackendProcess

OFFLINE_HINT = (
    "Blender's Allow Online Access is off (Edit > Preferences > System > Network), so DreamTime does not let the backend "
    "download models. Turn it on to download this model once, or set Model in the add-on's preferences to a local diffusers folder."
)


def preferences():
    addon = bpy.context.preferences.addons.get(__package__)
    return addon.preferences if addon else None


def backend_python_path() -> tuple[str | None, str]:
    prefs = preferences()
    return backend_python.find_python(prefs.backend_python if prefs else "", prefs.venv_dir() if prefs else None)


def online_access() -> bool:
    """Blender's "Allow Online Access" (Preferences > System > Network; bpy.app.online_access, 4.2+)."""
    return bool(getattr(bpy.app, "online_access", True))


def backend_env() -> dict[str, str]:
    """What Blender's settings imply for a local backend: no model downloads while online access is off."""
    return {} if online_access() else {"HF_HUB_OFFLINE": "1"}


def new_process(python: str) -> BackendProcess:
    return BackendProcess(python, backend_link.backend_root(), backend_link.protocol, preview.prepare, backend_env()).start()


class BackendUnavailable(Exception):
    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


def open_backend() -> tuple[BackendProcess | remote.RemoteBackend, str]:
    """Start the backend the preferences name (a local process, or a connection to a remote one)
    and a name for it in messages; BackendUnavailable says why it cannot be started."""
    prefs = preferences()
    if prefs is not None and prefs.backend == "remote":
        if not prefs.remote_host.strip():
            raise BackendUnavailable("No remote host set.", "Set Host and Port in the add-on's preferences, or choose Local Process.")
        connection = remote.RemoteBackend(prefs.remote_host, prefs.remote_port, prefs.remote_token, backend_link.protocol,
                                          prefs.remote_cache_dir(), preview.prepare, prefs.remote_keepalive)
        return connection.start(), f"remote backend at {connection.address}"
    python, source = backend_python_path()
    if python is None:
        raise BackendUnavailable("No backend Python found.", backend_python.HOW_TO_INSTALL)
    try:
        return new_process(python), f"{python} ({source})"
    except OSError as exc:
        raise BackendUnavailable(f"Cannot start the backend with {python} ({source}): {exc}",
                                 "Check Backend Python in the preferences.") from None
