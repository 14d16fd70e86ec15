"""The panel's state: one PropertyGroup on `Scene.dreamtime` (docs/ARCHITECTURE.md §2, §10).

The settings map one to one onto the backend's GenerationConfig, and take their defaults, enum
items and ranges from it (backend/config.py: the field defaults, CHOICES, BOUNDS), so the panel
never restates them. `to_config()` sends the prompt and only the settings the artist changed from
those defaults: the rest the backend's device preset decides (a CPU runs fewer steps than a GPU).
The runtime fields (status, step, loss, ...) are written only by `client.pump()`.
"""

from __future__ import annotations

import json

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty
from bpy.types import PropertyGroup

from . import backend_link, remote, schedule_curve

CONFIG = backend_link.config
DEFAULTS = CONFIG.GenerationConfig()  # the panel's defaults are the backend's
MAX_BLENDER_INT = 2**31 - 1  # an IntProperty is 32-bit signed: the seed's range stops here in the panel
SCHEDULE_LABELS = {
    "tp": ("Time-prioritized (TP-SDS)", "DreamTime: t falls monotonically with the step, weighted by W(t)"),
    "uniform": ("Uniform (plain SDS)", "t drawn uniformly in [t_min, t_max] at every step"),
    "linear": ("Linear", "t falls linearly from t_max to t_min"),
}
GUIDANCE_LABELS = {
    "auto": ("Auto", "Stable Diffusion when the backend has a CUDA GPU, else the analytic demo prior"),
    "analytic": ("Analytic (offline demo)", "Exact score of coloured primitives: no model, knows only its shapes and colours"),
    "sd": ("Stable Diffusion", "Any SD 1.x/2.x model (hub id or local folder, see preferences)"),
}
# The config's choices, labelled; a choice without a label fails here, at import, not in the panel.
SCHEDULES = [(kind, *SCHEDULE_LABELS[kind]) for kind in CONFIG.CHOICES["schedule"]]
GUIDANCES = [(kind, *GUIDANCE_LABELS[kind]) for kind in CONFIG.CHOICES["guidance"]]
# Panel fields sent as they are: the names are GenerationConfig's.
CONFIG_FIELDS = (
    "prompt", "negative_prompt", "seed", "steps", "schedule", "m1", "m2", "s1", "s2", "t_min", "t_max",
    "guidance", "guidance_scale", "resolution", "preview_every", "samples_per_ray", "mesh_resolution",
    "mesh_faces", "texture_size", "variations",
)
PRESET_NOTE = "; left at {default} the backend's device preset decides (CPU: {cpu})"


def config_range(name: str) -> dict:
    """default, min and max of a numeric panel setting, from GenerationConfig."""
    low, high = CONFIG.BOUNDS[name]
    return {"default": getattr(DEFAULTS, name), "min": low, "max": min(high, MAX_BLENDER_INT) if isinstance(high, int) else high}


def preset_note(name: str) -> str:
    """What a setting left at its default becomes on a CPU backend (config.CPU_PRESET), if that differs."""
    cpu = CONFIG.CPU_PRESET.get(name, getattr(DEFAULTS, name))
    return PRESET_NOTE.format(default=getattr(DEFAULTS, name), cpu=cpu) if cpu != getattr(DEFAULTS, name) else ""


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
    backend_run_dir: StringProperty(name="Backend Run Folder")  # the run folder as the backend names it (Refine sends it)
    steps_done: IntProperty(name="Steps Done")
    variations: IntProperty(name="Variations", default=1)
    source_object: StringProperty(name="Source Object")  # a run from the selected object: that object's name


class DreamTimeProperties(PropertyGroup):
    # ------------------------------------------------------------------ what to make
    # The prompt is always sent; the panel starts from one the offline analytic prior knows (the config's default is empty).
    prompt: StringProperty(name="Prompt", default="a red torus", description="What to make")
    negative_prompt: StringProperty(name="Negative Prompt", default=DEFAULTS.negative_prompt,
                                    description="What to steer away from (Stable Diffusion only)")
    seed: IntProperty(name="Seed", **config_range("seed"), description="Cameras, noise and initialization all derive from it")
    steps: IntProperty(name="Steps", **config_range("steps"), soft_max=10000, update=_curve,
                       description="Optimization steps" + preset_note("steps"))
    # ------------------------------------------------------------------ schedule (DreamTime Eq. 7-8)
    schedule: EnumProperty(name="Schedule", items=SCHEDULES, default=DEFAULTS.schedule, update=_curve)
    m1: FloatProperty(name="m1", **config_range("m1"), update=_curve, description="Upper end of W_p's flat region")
    m2: FloatProperty(name="m2", **config_range("m2"), update=_curve, description="Lower end of W_p's flat region (≤ m1)")
    s1: FloatProperty(name="s1", **config_range("s1"), soft_min=1, soft_max=1000, update=_curve, description="Width of W_p's tail above m1")
    s2: FloatProperty(name="s2", **config_range("s2"), soft_min=1, soft_max=1000, update=_curve, description="Width of W_p's tail below m2")
    t_min: IntProperty(name="t min", **config_range("t_min"), update=_curve, description="Smallest diffusion timestep used")
    t_max: IntProperty(name="t max", **config_range("t_max"), update=_curve, description="Largest diffusion timestep used")
    # ------------------------------------------------------------------ beyond one prompt (docs/ARCHITECTURE.md §4.9)
    start_from_selected: BoolProperty(name="Start from Selected Object", default=False, update=_curve,
                                      description="Generate from the active object's shape (and colours); the result lands in its place")
    strength: FloatProperty(name="Strength", **config_range("strength"), subtype="FACTOR", update=_curve,
                            description="Share of the schedule that runs from the selected object: 1 reshapes freely, "
                                        "0.4 keeps its coarse shape and adds detail")
    variations: IntProperty(name="Variations", **config_range("variations"),
                            description="Seeds seed .. seed + N - 1, one run each, and a contact sheet to pick from")
    refine_steps: IntProperty(name="Refine to", default=1400, min=2, max=MAX_BLENDER_INT, soft_max=20000,
                              description="Steps a refined run has in all (above the steps the run has done)")
    # ------------------------------------------------------------------ guidance and render
    guidance: EnumProperty(name="Guidance", items=GUIDANCES, default=DEFAULTS.guidance)
    # min: the config's default -1 ("the guidance's own scale"), below the scales proper (BOUNDS)
    guidance_scale: FloatProperty(name="Guidance Scale", **{**config_range("guidance_scale"), "min": DEFAULTS.guidance_scale},
                                  description="Classifier-free guidance scale; -1: the guidance's default (sd 100, analytic 1)")
    resolution: IntProperty(name="Resolution", **config_range("resolution"), step=8,
                            description="Training render size, a multiple of 8" + preset_note("resolution"))
    preview_every: IntProperty(name="Preview Every", **config_range("preview_every"),
                               description="Steps between previews (0: only at the end)" + preset_note("preview_every"))
    samples_per_ray: IntProperty(name="Samples per Ray", **config_range("samples_per_ray"),
                                 description="Samples per ray" + preset_note("samples_per_ray"))
    mesh_resolution: IntProperty(name="Mesh Resolution", **config_range("mesh_resolution"),
                                 description="Marching-cubes grid size per side" + preset_note("mesh_resolution"))
    mesh_faces: IntProperty(name="Mesh Faces", **config_range("mesh_faces"), soft_max=200_000,
                            description=f"Decimate to at most this many faces (0: every face; else {CONFIG.MIN_MESH_FACES} or more)")
    texture_size: IntProperty(name="Texture Size", **config_range("texture_size"),
                              description="Side of the baked albedo texture in pixels: a power of two from 256 to 8192")
    import_size: FloatProperty(name="Size", default=0.0, min=0.0, soft_max=100.0, subtype="DISTANCE", unit="LENGTH",
                               description="Scale the imported mesh so its longest side is this long (0: as generated, about 1.2 m)")
    import_at_cursor: BoolProperty(name="Keep 3D Cursor", default=False,
                                   description="Put the imported mesh exactly on the 3D cursor, even inside other objects "
                                               "(off: beside the objects at the cursor)")
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
    init_mesh_path: StringProperty(subtype="FILE_PATH")  # the selected object, as exported for the current run
    source_object: StringProperty()  # its name: the result lands in its place
    variations_json: StringProperty()  # the last variations run's variations (seed, label, psnr, mesh) as JSON
    variations_summary: StringProperty()

    def changed(self, name: str) -> bool:
        """Whether the artist moved setting `name` away from its default (GenerationConfig's)."""
        return getattr(self, name) != self.bl_rna.properties[name].default

    def to_config(self, preferences=None) -> dict:
        """The GenerationConfig dict for this panel: the prompt, the settings the artist changed (the
        backend's device preset decides the rest), the preferences' device, model and output, and
        Extra Config over all of them. For a remote backend a targets file goes as its contents."""
        values = {"prompt": self.prompt}
        values.update({name: getattr(self, name) for name in CONFIG_FIELDS if name != "prompt" and self.changed(name)})
        if self.start_from_selected and self.init_mesh_path:  # the operator exported the selected object (selection.py)
            values.update(init_mesh=self.init_mesh_path, strength=self.strength)
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
        if preferences is not None and preferences.backend == "remote":
            values = remote.targets_as_data(values, bpy.path.abspath)
        return values

    def check(self, preferences=None) -> dict:
        """to_config(), validated by the backend's own rules; ConfigError names the field."""
        values = self.to_config(preferences)
        backend_link.config.GenerationConfig.from_dict(values).validate()
        return values

    def load_config(self, values: dict) -> None:
        """Set the panel from a config dict (a history entry's, as to_config() made it): a setting the
        dict lacks goes back to its default, as it was when that run was sent; fields the panel does
        not show are ignored."""
        for name in CONFIG_FIELDS:
            if name in values:
                setattr(self, name, values[name])
            elif name != "prompt":
                self.property_unset(name)
        if "strength" in values:
            self.strength = values["strength"]
        schedule_curve.update(self)


classes = (DreamTimeRun, DreamTimeProperties)


def register_pointer() -> None:
    bpy.types.Scene.dreamtime = PointerProperty(type=DreamTimeProperties)


def unregister_pointer() -> None:
    del bpy.types.Scene.dreamtime
