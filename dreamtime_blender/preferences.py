"""Add-on preferences (docs/ARCHITECTURE.md §9, §10): a local backend process (which Python runs it) or a remote
backend (host, port, token); model, device, output folder; "Test backend" shows the backend's
`ready` answer and, for a local one, its doctor's (device, libraries, a measured step); "Install
backend" makes a venv for it with the torch build this machine's GPU needs (installer.py)."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy.types import AddonPreferences

from . import backend_info, backend_link, backend_python, backends, installer, remote

DEVICE_LABELS = {"auto": ("Auto", "CUDA when available, else an Apple GPU, else CPU"), "cpu": ("CPU", ""), "cuda": ("CUDA", ""),
                 "mps": ("Apple GPU (MPS)", "Apple silicon's GPU; not yet tested on hardware")}
DEVICES = [(name, *DEVICE_LABELS[name]) for name in backend_link.config.CHOICES["device"]]  # the config's choices, labelled
DEFAULTS = backend_link.config.GenerationConfig()
BACKENDS = [
    ("local", "Local Process", "Start the backend on this computer with the Backend Python"),
    ("remote", "Remote",
     "Connect to `python -m backend serve --listen` on another machine (directly with a token, or through an SSH tunnel)"),
]


def user_dir() -> Path:
    """The extension's own user folder (a folder in Blender's config for a legacy add-on)."""
    try:
        return Path(bpy.utils.extension_path_user(__package__, create=True))
    except (ValueError, RuntimeError, AttributeError):
        return Path(bpy.utils.user_resource("CONFIG", path="dreamtime", create=True))


class DreamTimePreferences(AddonPreferences):
    bl_idname = __package__

    backend: EnumProperty(name="Backend", items=BACKENDS, default="local")
    remote_host: StringProperty(name="Host", default="127.0.0.1",
                                description="The remote backend's address (127.0.0.1 through an SSH tunnel)")
    remote_port: IntProperty(name="Port", default=backend_link.protocol.DEFAULT_PORT, min=1, max=65535)
    remote_token: StringProperty(name="Token", subtype="PASSWORD", description="The contents of the backend's --token-file")
    remote_keepalive: FloatProperty(name="Keep Alive", default=remote.KEEPALIVE_SECONDS, min=0, unit="TIME_ABSOLUTE",
                                    description="Ping the remote backend this often while connected, so that its idle timeout "
                                                "(serve --idle-timeout, 10 min by default) does not close the connection of a long "
                                                "run; 0: never")
    backend_python: StringProperty(name="Backend Python", subtype="FILE_PATH",
                                   description="A Python with torch and the backend's requirements; empty: see the search order below")
    model: StringProperty(name="Model", default=DEFAULTS.model, description="Stable Diffusion hub id or local diffusers folder")
    device: EnumProperty(name="Device", items=DEVICES, default=DEFAULTS.device)
    output_folder: StringProperty(name="Output Folder", subtype="DIR_PATH",
                                  description="Run folders go here; empty: the extension's user folder")
    hang_seconds: FloatProperty(name="Silence Warning", default=120, min=1, unit="TIME_ABSOLUTE",
                                description="Say the backend seems stuck after this long without a word")
    backend_status: StringProperty(name="Backend Status")
    install_status: StringProperty(name="Install Status")
    doctor_lines: StringProperty(name="Doctor", description="The backend doctor's answer, one line each")
    backend_ready: StringProperty(name="Backend Ready", options={"HIDDEN"},
                                  description="The last ready event of the backend (JSON): its device and presets")

    def venv_dir(self) -> Path:
        return user_dir() / "venv"

    def runs_dir(self) -> str:
        return bpy.path.abspath(self.output_folder) if self.output_folder.strip() else str(user_dir() / "runs")

    def remote_cache_dir(self) -> Path:
        """Where previews and meshes from a remote backend are written."""
        return Path(self.runs_dir()) / "remote"

    def config_values(self) -> dict:
        """A remote backend chooses its own output folder: this machine's paths mean nothing there."""
        values = {"device": self.device, "model": self.model, "out": self.runs_dir()}
        if self.backend == "remote":
            del values["out"]
        return values

    def draw(self, context):
        layout = self.layout
        layout.row().prop(self, "backend", expand=True)
        if self.backend == "remote":
            self._draw_remote(layout)
        else:
            self._draw_local(layout)
        info = backend_info.known(self)
        if info is not None:
            layout.label(text=f"Backend device: {info.get('device')}; features {', '.join(info.get('features') or [])}", icon="INFO")
        if self.backend_status:
            layout.label(text=self.backend_status)
        for line in self.doctor_lines.splitlines():
            layout.label(text=line)
        if self.install_status:
            layout.label(text=f"Install: {self.install_status}")
        layout.prop(self, "model")
        layout.prop(self, "device")
        layout.prop(self, "output_folder")
        layout.prop(self, "hang_seconds")

    def _draw_remote(self, layout) -> None:
        column = layout.column(align=True)
        column.prop(self, "remote_host")
        column.prop(self, "remote_port")
        column.prop(self, "remote_token")
        column.prop(self, "remote_keepalive")
        for index, line in enumerate(_wrap("On the backend machine: python -m backend serve --listen 127.0.0.1:PORT, reached through "
                                           "ssh -L PORT:127.0.0.1:PORT; or --listen 0.0.0.0:PORT --token-file F with F's token here.")):
            layout.label(text=line, icon="INFO" if index == 0 else "BLANK1")
        layout.operator("dreamtime.test_backend", icon="PLAY")

    def _draw_local(self, layout) -> None:
        layout.prop(self, "backend_python")
        python, source = backends.backend_python_path()
        box = layout.box()
        if python is None:
            for index, line in enumerate(_wrap(backend_python.HOW_TO_INSTALL)):
                box.label(text=line, icon="ERROR" if index == 0 else "BLANK1")
        else:
            box.label(text=f"Backend Python: {python} ({source})", icon="CHECKMARK")
        row = layout.row()
        row.operator("dreamtime.test_backend", icon="PLAY")
        install = row.row()
        install.enabled = not installer.running()  # greyed while an install runs
        install.operator("dreamtime.install_backend", icon="IMPORT")


def _wrap(text: str, width: int = 90) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)
