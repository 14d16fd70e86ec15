"""DreamTime for Blender: text to 3D in the 3D View sidebar (docs/ARCHITECTURE.md §1, §10).

An extension (blender_manifest.toml; no bl_info). It never imports torch: generation runs in a
backend process (client.py) that speaks the JSON-lines protocol of backend/protocol.py.
"""

import atexit

import bpy
from bpy.app.handlers import persistent

from . import client, installer, operators, panels, preferences, preview, properties, schedule_curve

classes = (*properties.classes, preferences.DreamTimePreferences, *operators.classes, *panels.classes)


@persistent
def _before_load(_):
    client.stop_all()  # the run's scene is about to go away


@persistent
def _after_load(_):
    for scene in bpy.data.scenes:
        if scene.dreamtime.running:  # saved mid-run: no backend belongs to it now
            scene.dreamtime.running, scene.dreamtime.status = False, "idle"


def _at_exit():
    client.stop_all(quitting=True)  # Blender is closing mid-run: the backend writes its checkpoint and mesh first


def _draw_curves():
    for scene in bpy.data.scenes:
        schedule_curve.update(scene.dreamtime)
    return None


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    properties.register_pointer()
    preview.register()
    bpy.app.handlers.load_pre.append(_before_load)
    bpy.app.handlers.load_post.append(_after_load)
    bpy.app.timers.register(_draw_curves, first_interval=0.0)  # blend data is writable only after register
    atexit.register(_at_exit)


def unregister():
    atexit.unregister(_at_exit)
    client.stop_all()
    installer.stop()
    for handlers, function in ((bpy.app.handlers.load_pre, _before_load), (bpy.app.handlers.load_post, _after_load)):
        if function in handlers:
            handlers.remove(function)
    if bpy.app.timers.is_registered(_draw_curves):
        bpy.app.timers.unregister(_draw_curves)
    preview.unregister()
    properties.unregister_pointer()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
