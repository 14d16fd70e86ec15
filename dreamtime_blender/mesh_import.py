"""A generated mesh into the scene (docs/ARCHITECTURE.md §4.8, §10): one Object named after the prompt, with an
image-textured Principled BSDF (or its colour attribute), smooth by angle, placed by `placement`
(and, for the artist's imports, `land`: beside the objects at the cursor, landing.py).

A DreamTime GLB (glb_reader.py's layout) is read on a worker thread and built on the main thread
in short slices (`pump`, driven by a timer, or by client.pump and the tests where timers do not
run), so Blender never waits on an import: the slowest slice of a 20k-face mesh with a 1024²
texture is measured in tests/addon/test_mesh_import.py. Other files go through Blender's own
importers (glTF, PLY, OBJ) in one call, then get the same placement and material.
"""

from __future__ import annotations

import math
import struct
import threading
import time
from pathlib import Path
from typing import Callable

import bpy
import numpy as np

from . import landing
from .glb_reader import GLBLayoutError, GLBMesh, read_glb

IMPORTERS = {
    ".glb": lambda path: bpy.ops.import_scene.gltf(filepath=path),
    ".gltf": lambda path: bpy.ops.import_scene.gltf(filepath=path),
    ".ply": lambda path: bpy.ops.wm.ply_import(filepath=path),
    ".obj": lambda path: bpy.ops.wm.obj_import(filepath=path),
}
MAX_NAME = 63  # Blender's ID name limit
SMOOTH_ANGLE = math.radians(30.0)  # edges sharper than this stay sharp
TIMER_INTERVAL = 0.02


class MeshImportError(RuntimeError):
    pass


def placement(positions: np.ndarray, cursor, size: float = 0.0) -> tuple[np.ndarray, tuple, tuple]:
    """Where an imported mesh goes (the one placement rule): its origin at the bottom centre of its
    bounding box, that origin on the 3D cursor, scaled so its longest side is `size` metres (0: as it
    is). Returns the new local positions (V, 3), the object location and the source's bottom centre."""
    low, high = positions.min(0), positions.max(0)
    bottom_centre = np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]])
    scale = size / float((high - low).max()) if size > 0 and (high - low).max() > 0 else 1.0
    return ((positions - bottom_centre) * scale).astype(np.float32), tuple(cursor), tuple(bottom_centre.tolist())


# ---------------------------------------------------------------------- the asynchronous import
class ImportJob:
    """One GLB import: read on a thread, then built in slices on the main thread."""

    def __init__(self, path: str, name: str, size: float, cursor, on_error: Callable[[str], None] | None, on_done=None):
        self.path, self.name, self.size, self.cursor = path, name, size, tuple(cursor)
        self.on_error, self.on_done = on_error or (lambda message: print("DreamTime:", message)), on_done
        self.data: GLBMesh | None = None
        self.error: Exception | None = None
        self.object_name = ""
        self.slices: list[float] = []  # main-thread seconds of each slice (the tests read them)
        self._steps = [self._build_mesh, self._build_material, self._link_object]
        self._ready = threading.Event()
        threading.Thread(target=self._read, name="DreamTime mesh reader", daemon=True).start()

    def _read(self) -> None:
        try:
            self.data = read_glb(self.path)
            self.data.positions, self.location, self.source_origin = placement(self.data.positions, self.cursor, self.size)
        except (OSError, ValueError, KeyError, IndexError, TypeError, struct.error) as exc:
            self.error = exc
        self._ready.set()

    def step(self) -> bool:
        """Do the next slice if the reader is done; True while there is more to do."""
        if not self._ready.is_set():
            return True
        tick = time.perf_counter()
        try:
            if self.error is not None:  # not our layout: Blender's importer, in one call
                if isinstance(self.error, GLBLayoutError):
                    self._finish(import_mesh(bpy.context, self.path, self.name, self.size))
                else:
                    raise MeshImportError(f"{self.path}: cannot read it ({self.error})")
                return False
            self._steps.pop(0)()
            return bool(self._steps)
        except (RuntimeError, OSError, ReferenceError) as exc:
            self.on_error(str(exc))
            return False
        finally:
            self.slices.append(time.perf_counter() - tick)

    def _build_mesh(self) -> None:
        self.mesh = build_mesh(self.name, self.data)

    def _build_material(self) -> None:
        add_material(self.mesh, self.data)

    def _link_object(self) -> None:
        self._finish(link_object(bpy.context, self.mesh, self.location, self.source_origin))

    def _finish(self, obj) -> None:
        land(bpy.context, obj)
        self.object_name = obj.name
        if self.on_done is not None:
            self.on_done(obj)


_jobs: list[ImportJob] = []


def start_import(context, path: str, name: str, size: float = 0.0, on_error=None, on_done=None) -> ImportJob | None:
    """Import `path` without holding the main thread: a GLB in slices (see pump), other formats at
    once. Returns the job (None when the import already happened); problems go to `on_error`."""
    path = str(Path(bpy.path.abspath(path)))
    if Path(path).suffix.lower() != ".glb":
        obj = import_mesh(context, path, name, size)
        land(context, obj)
        if on_done is not None:
            on_done(obj)
        return None
    if not Path(path).is_file():
        raise MeshImportError(f"{path}: no such file")
    job = ImportJob(path, (name or Path(path).stem)[:MAX_NAME], size, context.scene.cursor.location, on_error, on_done)
    _jobs.append(job)
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=TIMER_INTERVAL)
    return job


def pump() -> None:
    """One slice of each import in flight (the timer's work; callable by hand where timers do not run)."""
    for job in list(_jobs):
        if not job.step():
            _jobs.remove(job)


def busy() -> bool:
    return bool(_jobs)


def _tick() -> float | None:
    pump()
    return TIMER_INTERVAL if _jobs else None


# ---------------------------------------------------------------------- building blocks
def build_mesh(name: str, data: GLBMesh) -> bpy.types.Mesh:
    """A Mesh datablock from arrays, with foreach_set (no Python loop over vertices)."""
    mesh = bpy.data.meshes.new(name)
    faces = data.faces.reshape(-1)
    mesh.vertices.add(len(data.positions))
    mesh.vertices.foreach_set("co", data.positions.reshape(-1))
    mesh.loops.add(len(faces))
    mesh.loops.foreach_set("vertex_index", faces)
    mesh.polygons.add(len(data.faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, len(faces), 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    if data.uv is not None:
        mesh.uv_layers.new(name="UVMap").data.foreach_set("uv", data.uv[faces].reshape(-1))
    if data.colors is not None:
        attribute = mesh.color_attributes.new("Color", "FLOAT_COLOR", "POINT")
        attribute.data.foreach_set("color", data.colors.reshape(-1))
        mesh.color_attributes.active_color = attribute
    _smooth_by_angle(mesh)
    return mesh


def add_material(mesh: bpy.types.Mesh, data: GLBMesh) -> None:
    if data.texture_png is not None:
        _texture_material(mesh, data)
    elif data.colors is not None:
        _colour_material(mesh)


def link_object(context, mesh: bpy.types.Mesh, location, source_origin) -> bpy.types.Object:
    """The object of `mesh` in the active collection at `location`; `dreamtime_source_origin` keeps
    where its origin was in the generation's frame (the asset renders put it back there)."""
    obj = bpy.data.objects.new(mesh.name, mesh)
    (context.collection or context.scene.collection).objects.link(obj)
    obj.location = location
    obj["dreamtime_source_origin"] = source_origin
    return obj


def _smooth_by_angle(mesh: bpy.types.Mesh) -> None:
    mesh.shade_smooth()
    mesh.set_sharp_from_angle(angle=SMOOTH_ANGLE)


def _new_material(name: str):
    material = bpy.data.materials.new(f"DreamTime {name}"[:MAX_NAME])
    if not material.use_nodes:  # Blender < 5: node trees are opt-in
        material.use_nodes = True
    bsdf = next(node for node in material.node_tree.nodes if node.type == "BSDF_PRINCIPLED")
    return material, bsdf


def _set_material(mesh: bpy.types.Mesh, material) -> None:
    previous = [m for m in mesh.materials if m is not None]
    mesh.materials.clear()
    mesh.materials.append(material)
    for old in previous:  # an importer's default material, now unused
        if old.users == 0:
            bpy.data.materials.remove(old)


def _texture_material(mesh: bpy.types.Mesh, data: GLBMesh) -> None:
    """Principled BSDF with the embedded PNG (packed into the .blend, sRGB) as its Base Color."""
    image = bpy.data.images.new(f"{mesh.name} albedo"[:MAX_NAME], *data.texture_size, alpha=False)
    image.pack(data=data.texture_png, data_len=len(data.texture_png))
    image.source = "FILE"
    image.colorspace_settings.name = "sRGB"
    material, bsdf = _new_material(mesh.name)
    texture = material.node_tree.nodes.new("ShaderNodeTexImage")
    texture.image, texture.interpolation = image, "Linear"
    texture.location = (bsdf.location.x - 320, bsdf.location.y)
    material.node_tree.links.new(texture.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = data.roughness
    bsdf.inputs["Metallic"].default_value = data.metallic
    _set_material(mesh, material)


def _colour_material(mesh: bpy.types.Mesh) -> None:
    """A material whose base colour is the mesh's colour attribute (if it has one)."""
    if not mesh.color_attributes:
        return
    attribute = mesh.color_attributes.active_color or mesh.color_attributes[0]
    mesh.color_attributes.active_color = attribute
    material, bsdf = _new_material(mesh.name)
    colour = material.node_tree.nodes.new("ShaderNodeVertexColor")
    colour.layer_name = attribute.name
    colour.location = (bsdf.location.x - 300, bsdf.location.y)
    material.node_tree.links.new(colour.outputs["Color"], bsdf.inputs["Base Color"])
    _set_material(mesh, material)


def land(context, obj) -> None:
    """An artist's import where they see it: beside the objects at the cursor, selected, framed
    (landing.py); exactly on the cursor with the panel's Keep 3D Cursor."""
    props = getattr(context.scene, "dreamtime", None)
    landing.beside_others(context, obj, keep_cursor=bool(getattr(props, "import_at_cursor", False)))


# ---------------------------------------------------------------------- in one call
def import_mesh(context, path: str, name: str, size: float = 0.0) -> bpy.types.Object:
    """Import `path` now and return the new object, named `name`, placed by `placement`. A GLB in
    our layout is built from arrays; anything else through Blender's importers."""
    path = str(Path(bpy.path.abspath(path)))
    suffix = Path(path).suffix.lower()
    if suffix not in IMPORTERS:
        raise MeshImportError(f"{path}: not a mesh this add-on imports ({', '.join(IMPORTERS)})")
    if not Path(path).is_file():
        raise MeshImportError(f"{path}: no such file")
    name = (name or Path(path).stem)[:MAX_NAME]
    if suffix == ".glb":
        try:
            data = read_glb(path)
        except GLBLayoutError:
            data = None
        if data is not None:  # ImportJob's slices, in one go
            data.positions, location, origin = placement(data.positions, context.scene.cursor.location, size)
            mesh = build_mesh(name, data)
            add_material(mesh, data)
            return link_object(context, mesh, location, origin)
    return _import_with_blender(context, path, name, size)


def _import_with_blender(context, path: str, name: str, size: float) -> bpy.types.Object:
    before = set(bpy.data.objects)
    if context.view_layer.objects.active is not None and context.view_layer.objects.active.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    IMPORTERS[Path(path).suffix.lower()](path)
    new = [obj for obj in bpy.data.objects if obj not in before]
    meshes = [obj for obj in new if obj.type == "MESH"]
    if not meshes:
        raise MeshImportError(f"{path}: the file holds no mesh")
    obj = _one_object(context, meshes)
    for extra in new:
        if extra not in meshes and extra.name in bpy.data.objects and not extra.children:
            bpy.data.objects.remove(extra)  # glTF node empties
    obj.parent = None
    obj.name = obj.data.name = name
    mesh = obj.data
    mesh.transform(obj.matrix_world)  # the importer's axis conversion, into the vertices
    obj.matrix_world.identity()
    positions = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", positions)
    local, obj.location, obj["dreamtime_source_origin"] = placement(positions.reshape(-1, 3), context.scene.cursor.location, size)
    mesh.vertices.foreach_set("co", local.reshape(-1))
    mesh.update()
    _smooth_by_angle(mesh)
    if not any(node.type == "TEX_IMAGE" for m in mesh.materials if m and m.node_tree for node in m.node_tree.nodes):
        _colour_material(mesh)
    return obj


def _one_object(context, meshes: list) -> bpy.types.Object:
    if len(meshes) == 1:
        return meshes[0]
    with context.temp_override(active_object=meshes[0], selected_editable_objects=meshes, selected_objects=meshes):
        bpy.ops.object.join()
    return meshes[0]
