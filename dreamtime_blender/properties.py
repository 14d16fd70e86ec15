"""The panel's state: one PropertyGroup on `Scene.dreamtime` (DESIGN §3, §9).

The settings map one to one onto the backend's GenerationConfig; `to_config()` builds that dict.
The runtime fields (status, step, loss, ...) are written only by `client.pump()`.
"""

from __future__ import annotations

import json

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty
from bpy.types import PropertyGroup

from . import backend_link, schedule_curve

SCHEDULES = [
    ("tp", "Time-prioritized (TP-SDS)", "DreamTime: t falls monotonically with the step, weighted by W(t)"),
    ("uniform", "Uniform (plain SDS)", "t drawn uniformly in [t_min, t_max] at every step"),
    ("linear", "Linear", "t falls linearly from t_max to t_min"),
]
GUIDANCES = [
    ("auto", "Auto", "Stable Diffusion when the backend has a CUDA GPU, else the analytic demo prior"),
    ("analytic", "Analytic (offline demo)", "Exact score of coloured primitives: no model, knows only its shapes and colours"),
    ("sd", "Stable Diffusion", "Any SD 1.x/2.x model (hub id or local folder, see preferences)"),
]
# Panel fields sent as they are: the names are GenerationConfig's.
CONFIG_FIELDS = (
    "prompt", "negative_prompt", "seed", "steps", "schedule", "m1", "m2", "s1", "s2", "t_min", "t_max",
    "guidance", "guidance_scale", "resolution", "preview_every", "samples_per_ray", "mesh_resolution",
)


def _curve(self, context) -> None:
    schedule_curve.update(self)


class DreamTimeRun(PropertyGroup):
    """One past run in the history list."""

    prompt: StringProperty(name="Prompt")
    seed: IntProperty(name="Seed")
    schedule: StringProperty(name="Schedule")
    status: StringProperty(name="Status")
    run_dir: StringProperty(name="Run Folder", subtype="DIR_PATH")
    mesh_path: StringProperty(name="Mesh", subtype="FILE_PATH")
    config_json: StringProperty(name="Config")


class DreamTimeProperties(PropertyGroup):
    # ------------------------------------------------------------------ what to make
    prompt: StringProperty(name="Prompt", default="a red torus", description="What to make")
    negative_prompt: StringProperty(name="Negative Prompt", description="What to steer away from (Stable Diffusion only)")
    seed: IntProperty(name="Seed", min=0, description="Cameras, noise and initialization all derive from it")
    steps: IntProperty(name="Steps", default=800, min=1, soft_max=10000, max=1_000_000, update=_curve, description="Optimization steps")
    # ------------------------------------------------------------------ schedule (DreamTime Eq. 7-8)
    schedule: EnumProperty(name="Schedule", items=SCHEDULES, default="tp", update=_curve)
    m1: FloatProperty(name="m1", default=800, min=0, max=1000, update=_curve, description="Upper end of W_p's flat region")
    m2: FloatProperty(name="m2", default=500, min=0, max=1000, update=_curve, description="Lower end of W_p's flat region (≤ m1)")
    s1: FloatProperty(name="s1", default=300, min=1, soft_max=1000, max=10000, update=_curve, description="Width of W_p's tail above m1")
    s2: FloatProperty(name="s2", default=100, min=1, soft_max=1000, max=10000, update=_curve, description="Width of W_p's tail below m2")
    t_min: IntProperty(name="t min", default=20, min=1, max=998, update=_curve, description="Smallest diffusion timestep used")
    t_max: IntProperty(name="t max", default=980, min=2, max=999, update=_curve, description="Largest diffusion timestep used")
    # ------------------------------------------------------------------ guidance and render
    guidance: EnumProperty(name="Guidance", items=GUIDANCES, default="auto")
    guidance_scale: FloatProperty(name="Guidance Scale", default=-1, min=-1, max=1000, description="Classifier-free guidance scale; -1: the guidance's default (sd 100, analytic 1)")
    resolution: IntProperty(name="Resolution", default=64, min=16, max=1024, step=8, description="Training render size, a multiple of 8")
    preview_every: IntProperty(name="Preview Every", default=100, min=0, description="Steps between previews (0: only at the end)")
    samples_per_ray: IntProperty(name="Samples per Ray", default=64, min=8, max=1024)
    mesh_resolution: IntProperty(name="Mesh Resolution", default=160, min=16, max=1024, description="Marching-cubes grid size per side")
    overrides: StringProperty(name="Extra Config", description='JSON object of further GenerationConfig fields, e.g. {"encoding": "dense"}')
    auto_import: BoolProperty(name="Import Mesh When Done", default=True)
    show_overlay: BoolProperty(name="Preview Overlay", default=True, description="Show the latest preview in the 3D View")
    # ------------------------------------------------------------------ runtime state (written by client.pump)
    running: BoolProperty(name="Running")
    status: StringProperty(name="Status", default="idle")
    run_id: StringProperty()
    step: IntProperty()
    steps_total: IntProperty()
    t: IntProperty()
    loss: FloatProperty()
    eta: FloatProperty(subtype="TIME_ABSOLUTE", unit="TIME_ABSOLUTE")
    error: StringProperty(name="Error")
    error_hint: StringProperty(name="Hint")
    warning: StringProperty(name="Warning")
    preview_path: StringProperty(subtype="FILE_PATH")
    run_dir: StringProperty(subtype="DIR_PATH")
    mesh_path: StringProperty(subtype="FILE_PATH")
    history: CollectionProperty(type=DreamTimeRun)
    history_index: IntProperty()

    def to_config(self, preferences=None) -> dict:
        """The GenerationConfig dict for this panel (plus the preferences' device, model, output)."""
        values = {name: getattr(self, name) for name in CONFIG_FIELDS}
        if preferences is not None:
            values.update(preferences.config_values())
        if self.overrides.strip():
            try:
                extra = json.loads(self.overrides)
            except json.JSONDecodeError as exc:
                raise backend_link.config.ConfigError("overrides", f"is not JSON: {exc}") from None
            if not isinstance(extra, dict):
                raise backend_link.config.ConfigError("overrides", "must be a JSON object")
            values.update(extra)
        return values

    def check(self, preferences=None) -> dict:
        """to_config(), validated by the backend's own rules; ConfigError names the field."""
        values = self.to_config(preferences)
        backend_link.config.GenerationConfig.from_dict(values).validate()
        return values

    def load_config(self, values: dict) -> None:
        """Set the panel from a config dict (a history entry's), ignoring fields it does not show."""
        for name in CONFIG_FIELDS:
            if name in values:
                setattr(self, name, values[name])


classes = (DreamTimeRun, DreamTimeProperties)


def register_pointer() -> None:
    bpy.types.Scene.dreamtime = PointerProperty(type=DreamTimeProperties)


def unregister_pointer() -> None:
    del bpy.types.Scene.dreamtime
