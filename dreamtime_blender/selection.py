"""Start from the selected object (docs/ARCHITECTURE.md §4.9, §10): export it for the backend's
`init_mesh`, and put the run's result back in its place.

The object is written as OBJ by Blender's own exporter: evaluated (modifiers applied), in world
coordinates, z up (so the backend reads it as it reads its own OBJ), with its colour attribute and
its materials' textures (copied beside the file). The backend frames it into the scene's bounding
sphere and exports the result back in the source's frame (backend/init_mesh.py), so the result
only needs its object at the world origin; the source object is hidden, not deleted.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

import bpy

SOURCE_KEY = "dreamtime_source"  # custom property on the result: the source object's name
OBJ_OPTIONS = {  # only those the running Blender's exporter has are passed (4.2 .. 5.0)
    "export_selected_objects": True, "apply_modifiers": True, "export_eval_mode": "DAG_EVAL_VIEWPORT", "apply_transform": True,
    "export_uv": True, "export_normals": False, "export_colors": True, "export_materials": True, "path_mode": "COPY",
    "forward_axis": "Y", "up_axis": "Z", "export_triangulated_mesh": True, "export_animation": False, "global_scale": 1.0,
}


class SelectionError(RuntimeError):
    pass


def selected_mesh(context) -> bpy.types.Object:
    """The active object if it is a selected mesh (or a curve, text, … that evaluates to one)."""
    obj = context.view_layer.objects.active
    if obj is None or not obj.select_get() or obj.type not in ("MESH", "CURVE", "SURFACE", "META", "FONT"):
        raise SelectionError("Start from Selected Object: select a mesh object (make it active) first")
    evaluated = obj.evaluated_get(context.evaluated_depsgraph_get())
    mesh = evaluated.to_mesh()
    try:
        if len(mesh.polygons) == 0:
            raise SelectionError(f"Start from Selected Object: {obj.name} has no faces")
    finally:
        evaluated.to_mesh_clear()
    return obj


def export_object(context, obj: bpy.types.Object, folder: str | Path) -> Path:
    """Write `obj` (evaluated, world transform) to `<folder>/init_meshes/<name>-<time>/<name>.obj`; returns the path."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", obj.name).strip("-") or "object"
    target = Path(folder) / "init_meshes" / f"{name}-{_dt.datetime.now():%Y%m%d-%H%M%S-%f}" / f"{name}.obj"
    target.parent.mkdir(parents=True, exist_ok=True)
    known = {p.identifier for p in bpy.ops.wm.obj_export.get_rna_type().properties}
    options = {key: value for key, value in OBJ_OPTIONS.items() if key in known}
    view_layer = context.view_layer
    selected, active = [o for o in view_layer.objects if o.select_get()], view_layer.objects.active
    if context.object is not None and context.object.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    try:
        for other in selected:
            other.select_set(False)
        obj.select_set(True)
        view_layer.objects.active = obj
        result = bpy.ops.wm.obj_export(filepath=str(target), **options)
    finally:
        obj.select_set(False)
        for other in selected:
            other.select_set(True)
        view_layer.objects.active = active
    if result != {"FINISHED"} or not target.is_file() or target.stat().st_size == 0:
        raise SelectionError(f"Start from Selected Object: exporting {obj.name} failed ({result})")
    return target


def land_in_place(obj: bpy.types.Object, source_name: str) -> None:
    """The result of a run from `source_name` where the source was: its mesh is already in the source's
    world frame (the backend exported it so), so the object sits at the origin, unrotated, unscaled
    (a placement offset the importer recorded as `dreamtime_source_origin` is undone); the source is hidden."""
    origin = obj.get("dreamtime_source_origin")
    obj.location = tuple(origin) if origin is not None else (0.0, 0.0, 0.0)
    obj.rotation_euler, obj.scale = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    obj[SOURCE_KEY] = source_name
    source = bpy.data.objects.get(source_name)
    if source is not None and source is not obj:
        source.hide_set(True)
