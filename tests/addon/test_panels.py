"""dreamtime_blender/panels.py, preferences.py and preview.py's overlay, drawn headless: every draw runs
against a recording layout that accepts only what Blender's UILayout has (its functions, their
parameters, icon names) and only property names their owner has; operators must exist and their
returned properties accept only their own names. The overlay is drawn with stand-in `gpu` modules
that record the shader and batch type (headless Blender has no GPU context to draw with)."""

import ast

from conftest import REPO, requires_bpy

pytestmark = requires_bpy

PORTABLE_BATCH_TYPES = {"POINTS", "LINES", "TRIS", "LINE_STRIP"}  # what OpenGL, Metal and Vulkan all draw (4.2-5.x)
PORTABLE_SHADERS = {"IMAGE", "IMAGE_COLOR", "UNIFORM_COLOR", "FLAT_COLOR", "SMOOTH_COLOR"}  # builtin in 4.0-5.x


# ---------------------------------------------------------------------- scenarios (run in Blender)
class Recorder:
    """A stand-in for bpy.types.UILayout that checks each call against the real one's RNA."""

    def __init__(self, log: list, problems: list):
        import bpy

        object.__setattr__(self, "_log", log)
        object.__setattr__(self, "_problems", problems)
        object.__setattr__(self, "_rna", bpy.types.UILayout.bl_rna)

    def __setattr__(self, name, value):
        if name not in self._rna.properties:
            self._problems.append(f"UILayout has no property {name!r}")

    def __getattr__(self, name):
        if name in self._rna.properties:
            return getattr(self._rna.properties[name], "default", None)
        function = self._rna.functions.get(name)
        if function is None:
            self._problems.append(f"UILayout has no function {name!r}")
            return lambda *args, **kwargs: Recorder(self._log, self._problems)
        inputs = [p.identifier for p in function.parameters if not p.is_output]

        def call(*args, **kwargs):
            named = dict(zip(inputs, args), **kwargs)
            unknown = [key for key in kwargs if key not in inputs]
            if len(args) > len(inputs) or unknown:
                self._problems.append(f"{name}: unknown arguments {unknown or args}")
            icon = named.get("icon")
            if icon is not None and icon not in function.parameters["icon"].enum_items.keys():
                self._problems.append(f"{name}: no icon {icon!r}")
            return self._checked(name, named)

        return call

    def _checked(self, name, named):
        import bpy

        self._log.append((name, {k: v for k, v in named.items() if isinstance(v, (str, int, float))}))
        for data_key, prop_key in (("data", "property"), ("dataptr", "propname"), ("active_dataptr", "active_propname")):
            if data_key in named and prop_key in named:
                owner, prop = named[data_key], named[prop_key]
                if prop not in owner.bl_rna.properties:
                    self._problems.append(f"{name}: {type(owner).__name__} has no property {prop!r}")
        if name == "template_list" and not hasattr(bpy.types, named["listtype_name"]):
            self._problems.append(f"template_list: no UIList {named['listtype_name']!r}")
        if name == "operator":
            module, _, op = named["operator"].partition(".")
            try:
                properties = getattr(getattr(bpy.ops, module), op).get_rna_type().properties
            except (AttributeError, KeyError):
                self._problems.append(f"operator: no operator {named['operator']!r}")
                return OperatorProperties(set(), self._problems, named["operator"])
            return OperatorProperties(set(properties.keys()), self._problems, named["operator"])
        if name == "icon":
            return 1
        returns = [p for p in self._rna.functions[name].parameters if p.is_output]
        return Recorder(self._log, self._problems) if returns else None


class OperatorProperties:
    def __init__(self, names: set, problems: list, operator: str):
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_problems", problems)
        object.__setattr__(self, "_operator", operator)

    def __setattr__(self, name, value):
        if name not in self._names:
            self._problems.append(f"{self._operator}: no property {name!r}")


class Drawn:
    """`self` of a draw: its layout is the recorder; anything else is the real object's."""

    def __init__(self, real, layout):
        self._real, self.layout = real, layout

    def __getattr__(self, name):
        return getattr(self._real, name)


def _draw_everything(addon, log, problems) -> None:
    import bpy

    context = bpy.context
    for cls in addon.panels.classes:
        if issubclass(cls, bpy.types.Panel):
            cls.draw(Drawn(None, Recorder(log, problems)), context)
    props = context.scene.dreamtime
    for index, item in enumerate(props.history):
        addon.panels.DREAMTIME_UL_history.draw_item(None, context, Recorder(log, problems), props, item, 0, props, "history_index", index)
    prefs = addon.client.preferences()
    addon.preferences.DreamTimePreferences.draw(Drawn(prefs, Recorder(log, problems)), context)


def scenario_every_draw_in_every_state():
    import json
    import os

    import bpy

    from in_blender import install_extension

    addon = install_extension()
    props, prefs = bpy.context.scene.dreamtime, addon.client.preferences()
    log, problems, states = [], [], []

    def state(name):
        before = len(log)
        _draw_everything(addon, log, problems)
        states.append([name, len(log) - before])

    state("fresh")
    props.guidance, props.running, props.step, props.steps_total, props.status = "analytic", True, 3, 700, "running on cpu"
    props.error, props.error_hint, props.warning, props.run_dir = "An error.", "A hint.", "A warning.", "/runs/x"
    addon.preview.image(4, 4)
    item = props.history.add()
    item.prompt, item.seed, item.schedule, item.status, item.run_dir, item.mesh_path = "a red torus", 1, "tp", "done", "/r", "/r/mesh.glb"
    props.history_index = 0
    state("running, error, warning, preview, history")
    addon.backend_info.remember(prefs, {"device": "cuda", "features": ["sd"], "presets": {"cuda": {}, "cpu": {"steps": 700}},
                                        "auto_guidance": {"cuda": "sd", "cpu": "analytic"}})
    prefs.doctor_lines, prefs.install_status, prefs.backend_status = "Device cuda\nDoctor: OK", "installed", "ready: ..."
    props.overrides = "{not json"
    state("a CUDA backend known, doctor lines, bad Extra Config")
    props.overrides, props.guidance = "", "sd"
    bpy.context.preferences.system.use_online_access = False
    state("Stable Diffusion with online access off")
    os.environ.pop("DREAMTIME_BACKEND_PYTHON")
    prefs.backend_python = ""
    state("no backend Python")
    props.variations_json = json.dumps([{"seed": 0, "label": "red torus", "psnr": 40.0, "status": "done", "mesh": "/v/s0/mesh.glb",
                                         "run_dir": "/v/s0", "prompt": "a torus", "steps_done": 700},
                                        {"seed": 1, "label": "seed 1", "psnr": None, "status": "failed", "mesh": None, "run_dir": "/v/s1",
                                         "prompt": "a torus", "steps_done": 0}])
    state("variations, one failed")
    prefs.backend = "remote"
    state("remote")
    drawn = [name for name, _ in log]
    props_drawn = sorted({args["property"] for name, args in log if name == "prop" and "property" in args})
    labels = [args.get("text", "") for name, args in log if name == "label"]
    return {"problems": problems, "states": states, "functions": sorted(set(drawn)), "props": props_drawn,
            "labels": json.loads(json.dumps(labels))}


def scenario_overlay_with_stand_in_gpu():
    import sys
    import types

    from in_blender import install_extension

    addon = install_extension()
    drawn = {}

    class Shader:
        def bind(self):
            drawn["bound"] = True

        def uniform_sampler(self, name, texture):
            drawn["sampler"] = name

    class Batch:
        def draw(self, shader):
            drawn["drew"] = True

    def batch_for_shader(shader, kind, content, indices=None):
        drawn.update(kind=kind, attributes=sorted(content), vertices=len(content["pos"]), indices=[list(t) for t in indices or []])
        return Batch()

    gpu = types.ModuleType("gpu")
    gpu.shader = types.SimpleNamespace(from_builtin=lambda name: drawn.update(shader=name) or Shader())
    gpu.state = types.SimpleNamespace(blend_set=lambda mode: drawn.setdefault("blend", []).append(mode))
    gpu.texture = types.SimpleNamespace(from_image=lambda image: "texture")
    extras, batch = types.ModuleType("gpu_extras"), types.ModuleType("gpu_extras.batch")
    batch.batch_for_shader = batch_for_shader
    sys.modules.update({"gpu": gpu, "gpu_extras": extras, "gpu_extras.batch": batch})
    addon.preview.image(8, 4)
    addon.preview._draw()
    return drawn


# ---------------------------------------------------------------------- tests
def test_every_panel_and_the_preferences_draw_only_what_blender_has(blender):
    result = blender(__file__, "scenario_every_draw_in_every_state")
    assert result["problems"] == []
    assert all(count > 10 for _, count in result["states"]), result["states"]
    assert {"prompt", "steps", "m1", "s2", "t_min", "guidance_scale", "backend", "model", "device"} <= set(result["props"])
    assert {"prop", "operator", "label", "progress", "template_list", "template_icon"} <= set(result["functions"])
    labels = result["labels"]
    assert "seed 0  red torus  40.0 dB  (done)" in labels and "seed 1  seed 1  (failed)" in labels  # the Variations rows
    assert "refine_steps" in result["props"]
    assert "Runs on cuda: 5000 steps (its preset)" in labels  # a CUDA backend: its preset, not the CPU's 700
    assert any(label.startswith("Device not known yet") for label in labels)
    assert any(label.startswith("Allow Online Access is off") for label in labels)


def test_the_overlay_uses_a_batch_type_and_shader_every_gpu_backend_has(blender):
    drawn = blender(__file__, "scenario_overlay_with_stand_in_gpu")
    assert drawn["kind"] in PORTABLE_BATCH_TYPES and drawn["shader"] in PORTABLE_SHADERS, drawn
    assert drawn["vertices"] == 4 and sorted(map(sorted, drawn["indices"])) == [[0, 1, 2], [0, 2, 3]]  # the quad, two triangles
    assert drawn["drew"] and drawn["blend"] == ["ALPHA", "NONE"]


def test_no_source_uses_a_deprecated_primitive_or_shader():
    deprecated = {"TRI_FAN", "LINE_LOOP", "2D_IMAGE", "2D_UNIFORM_COLOR", "3D_UNIFORM_COLOR", "2D_FLAT_COLOR", "3D_FLAT_COLOR"}
    for path in sorted((REPO / "dreamtime_blender").glob("*.py")):
        strings = {node.value for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        assert not strings & deprecated, (path.name, strings & deprecated)


def test_every_subprocess_the_add_on_or_the_downloader_starts_opens_no_console_window():
    """Windows: each Popen/run/call gets creationflags (CREATE_NO_WINDOW); checked in the source on any OS."""
    sources = sorted((REPO / "dreamtime_blender").glob("*.py")) + [REPO / "backend" / "guidance" / "hub.py"]
    calls = 0
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "Popen", "run", "call", "check_call", "check_output"):
                if isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess":
                    calls += 1
                    assert "creationflags" in {k.arg for k in node.keywords}, f"{path.name}:{node.lineno}"
    assert calls >= 3  # process.popen_backend, installer's steps, hub.download


def scenario_recorder_catches_mistakes():
    import bpy

    from in_blender import install_extension

    install_extension()
    props = bpy.context.scene.dreamtime
    log, problems = [], []
    layout = Recorder(log, problems)
    layout.prop(props, "no_such_setting")
    layout.label(text="x", icon="NO_SUCH_ICON")
    layout.operator("dreamtime.no_such_operator")
    layout.operator("dreamtime.import_mesh").no_such_property = 1
    layout.row(align=True, no_such_argument=1)
    layout.no_such_function()
    layout.scale_z = 2
    return {"problems": problems}


def test_recorder_reports_each_kind_of_mistake(blender):
    problems = blender(__file__, "scenario_recorder_catches_mistakes")["problems"]
    assert len(problems) == 7, problems
    assert any("no_such_setting" in p for p in problems) and any("NO_SUCH_ICON" in p for p in problems)
