"""The "DreamTime" tab of the 3D View sidebar: main panel, schedule, advanced, history."""

from __future__ import annotations

import os

import bpy
from bpy.types import Panel, UIList

from . import backend_info, backend_python, backends, preview, schedule_curve, variations

OFFLINE_NOTE = (
    "Allow Online Access is off (Preferences > System > Network): a hub model that is not downloaded yet cannot be fetched."
)
ANALYTIC_NOTE = (
    "Analytic prior: the offline demo prior. It knows only primitive shapes (sphere, cube, torus, cone, "
    "cylinder, capsule) and colours; use Stable Diffusion for free text."
)


def _wrapped(layout, text: str, icon: str = "NONE", width: int = 40) -> None:
    import textwrap

    column = layout.column(align=True)
    for index, line in enumerate(textwrap.wrap(text, width) or [""]):
        column.label(text=line, icon=icon if index == 0 else "BLANK1")


def _image_icon(layout, name: str, scale: float) -> None:
    image = bpy.data.images.get(name)
    if image is not None:
        layout.template_icon(icon_value=layout.icon(image), scale=scale)


class _DreamTimePanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "DreamTime"


class DREAMTIME_PT_main(_DreamTimePanel, Panel):
    bl_label = "DreamTime"

    def draw(self, context):
        layout, props = self.layout, context.scene.dreamtime
        prefs = backends.preferences()
        layout.use_property_split = True
        layout.prop(props, "prompt")
        layout.prop(props, "negative_prompt")
        layout.prop(props, "seed")
        layout.prop(props, "steps")
        layout.prop(props, "variations")
        layout.prop(props, "start_from_selected")
        row = layout.row()
        row.enabled = props.start_from_selected
        row.prop(props, "strength", slider=True)
        layout.prop(props, "guidance")
        try:
            values = props.to_config(prefs)
        except ValueError:  # Extra Config is not JSON: Generate says so
            values = {}
        info = backend_info.known(prefs)
        guidance = backend_info.resolved_guidance(values, info)  # chosen, or what auto picks on the backend's device
        if guidance == "analytic":
            _wrapped(layout, ANALYTIC_NOTE, "INFO")
        local = prefs is None or prefs.backend == "local"
        if guidance == "sd" and local and not backends.online_access() and not os.path.isdir(bpy.path.abspath(values.get("model", ""))):
            _wrapped(layout, OFFLINE_NOTE, "INFO")
        layout.prop(props, "resolution")
        layout.label(text=backend_info.run_line(values, info), icon="PREFERENCES")
        remote = prefs is not None and prefs.backend == "remote"
        if not remote and backends.backend_python_path()[0] is None:
            _wrapped(layout.box(), backend_python.HOW_TO_INSTALL, "ERROR")
        row = layout.row(align=True)
        row.scale_y = 1.4
        row.operator("dreamtime.generate", icon="PLAY")  # greyed while running (its poll)
        row.operator("dreamtime.cancel", icon="CANCEL")
        row = layout.row(align=True)
        row.operator("dreamtime.extract_now", icon="MESH_DATA")
        row.operator("dreamtime.import_mesh", icon="IMPORT")
        if remote:
            layout.operator("dreamtime.reconnect", icon="LINKED")
        if props.running or props.step:
            factor = props.step / max(props.steps_total, 1)
            text = f"{props.step}/{props.steps_total}  t={props.t}  loss={props.loss:.4g}  ETA {props.eta:.0f} s"
            layout.progress(factor=factor, type="BAR", text=text)
        layout.label(text=f"Status: {props.status}")
        if props.error:
            box = layout.box()
            _wrapped(box, props.error, "ERROR")
            if props.error_hint:
                _wrapped(box, props.error_hint, "QUESTION")
        if props.warning:
            _wrapped(layout, props.warning, "INFO")
        _image_icon(layout, preview.IMAGE_NAME, 8.0)
        if props.run_dir:
            layout.label(text=f"Run folder: {props.run_dir}", icon="FILE_FOLDER")


class DREAMTIME_PT_schedule(_DreamTimePanel, Panel):
    bl_label = "Schedule"
    bl_parent_id = "DREAMTIME_PT_main"

    def draw(self, context):
        layout, props = self.layout, context.scene.dreamtime
        layout.prop(props, "schedule")
        column = layout.column(align=True)
        for name in ("m1", "m2", "s1", "s2"):
            column.prop(props, name, slider=True)
        row = layout.row(align=True)
        row.prop(props, "t_min")
        row.prop(props, "t_max")
        _image_icon(layout, schedule_curve.IMAGE_NAME, 6.0)
        layout.label(text="left: t(i) over the steps   right: p(t)")
        if props.start_from_selected and props.strength < 1:
            layout.label(text=f"from the selected object: the bright last {props.strength:.0%} of t(i) runs")


class DREAMTIME_PT_advanced(_DreamTimePanel, Panel):
    bl_label = "Advanced"
    bl_parent_id = "DREAMTIME_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout, props = self.layout, context.scene.dreamtime
        layout.use_property_split = True
        for name in ("guidance_scale", "preview_every", "samples_per_ray", "mesh_resolution", "mesh_faces", "texture_size", "import_size",
                     "import_at_cursor", "overrides", "auto_import", "show_overlay"):
            layout.prop(props, name)


class DREAMTIME_UL_history(UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0):
        layout.label(text=f"{item.prompt}  seed {item.seed}  {item.schedule}  ({item.status})", icon="MESH_MONKEY")


class DREAMTIME_PT_history(_DreamTimePanel, Panel):
    bl_label = "History"
    bl_parent_id = "DREAMTIME_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout, props = self.layout, context.scene.dreamtime
        layout.template_list("DREAMTIME_UL_history", "", props, "history", props, "history_index", rows=3)
        if 0 <= props.history_index < len(props.history):
            item = props.history[props.history_index]
            row = layout.row(align=True)
            op = row.operator("dreamtime.import_mesh", text="Re-import", icon="IMPORT")
            op.filepath, op.name = item.mesh_path, item.prompt
            row.operator("dreamtime.generate", text="Re-run", icon="FILE_REFRESH").history_index = props.history_index
            row = layout.row(align=True)
            row.prop(props, "refine_steps")
            row.operator("dreamtime.refine", text="Refine", icon="MODIFIER").history_index = props.history_index
            layout.label(text=item.run_dir, icon="FILE_FOLDER")


class DREAMTIME_PT_variations(_DreamTimePanel, Panel):
    bl_label = "Variations"
    bl_parent_id = "DREAMTIME_PT_main"

    @classmethod
    def poll(cls, context):
        return bool(context.scene.dreamtime.variations_json)

    def draw(self, context):
        layout, props = self.layout, context.scene.dreamtime
        _image_icon(layout, variations.IMAGE_NAME, 8.0)
        if props.variations_summary:
            _wrapped(layout, props.variations_summary, "INFO")
        for index, row_data in enumerate(variations.rows(props)):
            row = layout.row(align=True)
            psnr = f"  {row_data['psnr']:.1f} dB" if row_data.get("psnr") is not None else ""
            row.label(text=f"seed {row_data['seed']}  {row_data['label']}{psnr}  ({row_data['status'].replace('_', ' ')})")
            button = row.row()
            button.enabled = bool(row_data.get("mesh"))
            button.operator("dreamtime.import_variation", text="Import", icon="IMPORT").index = index
            button = row.row()
            button.enabled = row_data["status"] in variations.TRAINED and bool(row_data.get("run_dir"))
            button.operator("dreamtime.refine", text="Refine", icon="MODIFIER").variation_index = index
        layout.prop(props, "refine_steps")  # what a take's Refine trains to


classes = (DREAMTIME_PT_main, DREAMTIME_PT_schedule, DREAMTIME_PT_advanced, DREAMTIME_UL_history, DREAMTIME_PT_history,
           DREAMTIME_PT_variations)
