"""Where an imported mesh lands, so the artist sees it (docs/ARCHITECTURE.md §10).

The rule: the mesh's bottom centre goes on the 3D cursor (mesh_import.placement); if its bounding
box there overlaps a visible object's (the default cube around the cursor at the origin), it moves
along +X until it stands beside them, LANDING_GAP apart. Then it is selected, made active and
framed in every 3D View. The panel's Keep 3D Cursor (Advanced) puts it exactly on the cursor
instead; a run started from a selected object lands in that object's place (selection.py), after this.
"""

from __future__ import annotations

import bpy
import numpy as np

LANDING_GAP = 0.2  # metres between the new object and the one it stands beside


def world_box(obj) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) corners of an object's axis-aligned world bounding box."""
    corners = np.array([tuple(obj.matrix_world @ _vector(corner)) for corner in obj.bound_box])
    return corners.min(0), corners.max(0)


def _vector(values):
    from mathutils import Vector

    return Vector(values)


def _overlaps(low, high, other_low, other_high) -> bool:
    return bool(np.all(low < other_high) and np.all(other_low < high))


def beside_others(context, obj, keep_cursor: bool = False) -> None:
    """Move `obj` (just imported at the cursor, unrotated, unscaled) beside the visible objects it
    would stand in, then select, activate and frame it."""
    if not keep_cursor:
        positions = np.empty(len(obj.data.vertices) * 3, np.float32)
        obj.data.vertices.foreach_get("co", positions)
        local = positions.reshape(-1, 3)
        origin = np.array(tuple(obj.location))
        low, high = origin + local.min(0), origin + local.max(0)
        others = [world_box(other) for other in context.view_layer.objects
                  if other is not obj and other.type in ("MESH", "CURVE", "SURFACE", "META", "FONT") and other.visible_get()]
        for _ in range(len(others) + 1):  # each move clears at least one box: at most one move per box
            hit = [box for box in others if _overlaps(low, high, *box)]
            if not hit:
                break
            shift = max(box[1][0] for box in hit) + LANDING_GAP - low[0]
            low, high, origin = low + (shift, 0, 0), high + (shift, 0, 0), origin + (shift, 0, 0)
        obj.location = tuple(float(v) for v in origin)
    select_and_frame(context, obj)


def select_and_frame(context, obj) -> None:
    """`obj` selected and active alone, and framed in every 3D View of the window (none headless)."""
    view_layer = context.view_layer
    for other in view_layer.objects.selected:
        other.select_set(False)
    obj.select_set(True)
    view_layer.objects.active = obj
    screen = getattr(context, "screen", None)
    for area in (screen.areas if screen is not None else ()):
        region = next((r for r in area.regions if r.type == "WINDOW"), None)
        if area.type == "VIEW_3D" and region is not None:
            with context.temp_override(area=area, region=region):
                bpy.ops.view3d.view_selected()
