"""Operators: generate, cancel, extract now, import a mesh, reconnect, install and test the backend."""

from __future__ import annotations

import json
from pathlib import Path

import bpy
from bpy.props import IntProperty, StringProperty
from bpy.types import Operator

from . import backends, client, installer, mesh_import, selection, variations


class DREAMTIME_OT_generate(Operator):
    """Start a generation with the panel's settings (or a history entry's)"""

    bl_idname = "dreamtime.generate"
    bl_label = "Generate"

    history_index: IntProperty(default=-1, options={"HIDDEN", "SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        return context.scene is not None and not client.is_running()

    def execute(self, context):
        props = context.scene.dreamtime
        if 0 <= self.history_index < len(props.history):
            props.load_config(json.loads(props.history[self.history_index].config_json or "{}"))
        props.init_mesh_path = props.source_object = ""
        if props.start_from_selected:  # the active object, exported for init_mesh (selection.py)
            try:
                prefs = client.preferences()
                if prefs is not None and prefs.backend == "remote":
                    raise selection.SelectionError("Start from Selected Object needs a local backend: a remote one cannot read "
                                                   "this machine's files")
                source = selection.selected_mesh(context)
                props.init_mesh_path = str(selection.export_object(context, source, prefs.runs_dir() if prefs else bpy.app.tempdir))
                props.source_object = source.name
            except (selection.SelectionError, RuntimeError, OSError) as exc:
                props.error, props.error_hint = str(exc), "Select the object to start from, or untick Start from Selected Object."
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
        error = client.start(context.scene)
        if error:
            self.report({"ERROR"}, error)
            return {"CANCELLED"}
        return {"FINISHED"}


class DREAMTIME_OT_refine(Operator):
    """Continue a finished run to "Refine to" steps in all (a new run folder beside it; the run itself is kept):
    a run of the history, or one take of the last variations run"""

    bl_idname = "dreamtime.refine"
    bl_label = "Refine"

    history_index: IntProperty(default=-1, options={"HIDDEN", "SKIP_SAVE"})
    variation_index: IntProperty(default=-1, options={"HIDDEN", "SKIP_SAVE"})  # >= 0: that row of the Variations panel

    @classmethod
    def poll(cls, context):
        return context.scene is not None and not client.is_running()

    def execute(self, context):
        props = context.scene.dreamtime
        takes = variations.rows(props)
        if 0 <= self.variation_index < len(takes):
            take = takes[self.variation_index]
            prompt, run_dir, steps_done, source = take.get("prompt") or props.prompt, take.get("run_dir"), take.get("steps_done", 0), ""
            error = (f"Refine: seed {take['seed']} did not train to the end" if take["status"] not in variations.TRAINED else
                     None if run_dir else f"Refine: seed {take['seed']}'s run folder is not known (a variations run of an older add-on)")
        elif 0 <= self.history_index < len(props.history):
            item = props.history[self.history_index]
            prompt, run_dir, steps_done, source = item.prompt, item.backend_run_dir or item.run_dir, item.steps_done, item.source_object
            error = None if item.variations <= 1 else "Refine: a variations run holds several runs; refine one in the Variations panel"
        else:
            self.report({"ERROR"}, "Refine: choose a run in the history or a variation")
            return {"CANCELLED"}
        if not error and props.refine_steps <= steps_done:
            error = f"steps: a refine must go past the {steps_done} steps the run has done; got {props.refine_steps}"
        if not error:
            props.source_object = source  # a refine of a run from an object lands in its place too; a variation's at the cursor
            error = client.start(context.scene, {"prompt": prompt, "refine_from": run_dir, "steps": props.refine_steps})
        if error:
            props.error = error
            self.report({"ERROR"}, error)
            return {"CANCELLED"}
        return {"FINISHED"}


class DREAMTIME_OT_import_variation(Operator):
    """Import this variation's mesh at the 3D cursor"""

    bl_idname = "dreamtime.import_variation"
    bl_label = "Import Variation"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(default=0, options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context):
        props = context.scene.dreamtime
        takes = variations.rows(props)
        if not 0 <= self.index < len(takes) or not takes[self.index].get("mesh"):
            self.report({"ERROR"}, "This variation has no mesh")
            return {"CANCELLED"}
        chosen = takes[self.index]
        try:
            obj = mesh_import.import_mesh(context, chosen["mesh"], f"{props.prompt} (seed {chosen['seed']})")
        except (RuntimeError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Imported {obj.name}")
        return {"FINISHED"}


class DREAMTIME_OT_cancel(Operator):
    """Stop the run after its current step; it still writes its mesh. Twice: kill the backend"""

    bl_idname = "dreamtime.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return client.is_running()

    def execute(self, context):
        client.cancel()
        return {"FINISHED"}


class DREAMTIME_OT_extract_now(Operator):
    """Export a mesh of the field as it is now, without stopping the run"""

    bl_idname = "dreamtime.extract_now"
    bl_label = "Extract Now"

    @classmethod
    def poll(cls, context):
        if not client.supports("extract"):
            cls.poll_message_set("The backend offers no mid-run extract yet (it writes the mesh when the run ends)")
            return False
        return True

    def execute(self, context):
        client.extract()
        return {"FINISHED"}


class DREAMTIME_OT_reconnect(Operator):
    """Connect to the remote backend again and pick up this scene's last run: progress, preview, and its mesh once done"""

    bl_idname = "dreamtime.reconnect"
    bl_label = "Reconnect"

    @classmethod
    def poll(cls, context):
        return context.scene is not None and client.can_reconnect(context.scene)

    def execute(self, context):
        error = client.reconnect(context.scene)
        if error:
            self.report({"ERROR"}, error)
            return {"CANCELLED"}
        return {"FINISHED"}


class DREAMTIME_OT_import_mesh(Operator):
    """Import a DreamTime mesh (glb, ply or obj) on the 3D cursor, at the panel's Size"""

    bl_idname = "dreamtime.import_mesh"
    bl_label = "Import Mesh"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE"})
    filter_glob: StringProperty(default="*.glb;*.gltf;*.ply;*.obj", options={"HIDDEN"})
    name: StringProperty(name="Name", description="Object name (default: the prompt of the last run)", options={"SKIP_SAVE"})

    def invoke(self, context, event):
        if self.filepath:
            return self.execute(context)
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        path = self.filepath or context.scene.dreamtime.mesh_path
        name = self.name or (context.scene.dreamtime.prompt if path == context.scene.dreamtime.mesh_path else Path(path).stem)
        def done(obj) -> None:
            print(f"DreamTime: imported {obj.name} ({len(obj.data.polygons)} faces)")

        try:  # a GLB is read on a thread and appears within a few timer ticks
            mesh_import.start_import(context, path, name, context.scene.dreamtime.import_size, on_done=done)
        except (RuntimeError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class DREAMTIME_OT_install_backend(Operator):
    """Make a virtual environment in the extension's user folder and install the backend's requirements (torch, diffusers: several GB)"""

    bl_idname = "dreamtime.install_backend"
    bl_label = "Install Backend"

    def execute(self, context):
        prefs = backends.preferences()
        if prefs is None:
            return {"CANCELLED"}

        def status(text: str) -> None:
            prefs.install_status = text

        if not installer.start(installer.commands(prefs.venv_dir()), status):
            self.report({"WARNING"}, "An install is already running")
            return {"CANCELLED"}
        return {"FINISHED"}


class DREAMTIME_OT_test_backend(Operator):
    """Start the backend once and show its ready answer (protocol, device, features)"""

    bl_idname = "dreamtime.test_backend"
    bl_label = "Test Backend"

    def execute(self, context):
        self.report({"INFO"}, client.test_backend())
        return {"FINISHED"}


classes = (
    DREAMTIME_OT_generate, DREAMTIME_OT_refine, DREAMTIME_OT_import_variation, DREAMTIME_OT_cancel, DREAMTIME_OT_extract_now,
    DREAMTIME_OT_reconnect, DREAMTIME_OT_import_mesh, DREAMTIME_OT_install_backend, DREAMTIME_OT_test_backend,
)
