"""A generated mesh into the scene (docs/ARCHITECTURE.md §4.8, §10): glb, ply or obj -> one Object named after the
prompt, at the 3D cursor, with a material that shows its colour attribute.

Blender's own importers do the reading (glTF for .glb/.gltf, the built-in PLY and OBJ readers),
so a mesh from the CLI imports the same way as one from the panel.
"""

from __future__ import annotations

from pathlib import Path

import bpy

IMPORTERS = {
    ".glb": lambda path: bpy.ops.import_scene.gltf(filepath=path),
    ".gltf": lambda path: bpy.ops.import_scene.gltf(filepath=path),
    ".ply": lambda path: bpy.ops.wm.ply_import(filepath=path),
    ".obj": lambda path: bpy.ops.wm.obj_import(filepath=path),
}
MAX_NAME = 63  # Blender's ID name limit


class MeshImportError(RuntimeError):
    pass


def import_mesh(context, path: str, name: str) -> bpy.types.Object:
    """Import `path` and return the new object, named `name`, at the 3D cursor."""
    path = str(Path(bpy.path.abspath(path)))
    importer = IMPORTERS.get(Path(path).suffix.lower())
    if importer is None:
        raise MeshImportError(f"{path}: not a mesh this add-on imports ({', '.join(IMPORTERS)})")
    if not Path(path).is_file():
        raise MeshImportError(f"{path}: no such file")
    before = set(bpy.data.objects)
    if context.view_layer.objects.active is not None and context.view_layer.objects.active.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    importer(path)
    new = [obj for obj in bpy.data.objects if obj not in before]
    meshes = [obj for obj in new if obj.type == "MESH"]
    if not meshes:
        raise MeshImportError(f"{path}: the file holds no mesh")
    obj = _one_object(context, meshes)
    for extra in new:
        if extra not in meshes and extra.name in bpy.data.objects and not extra.children:
            bpy.data.objects.remove(extra)  # glTF node empties
    obj.parent = None
    obj.name = obj.data.name = (name or Path(path).stem)[:MAX_NAME]
    obj.location = context.scene.cursor.location
    _colour_material(obj)
    return obj


def _one_object(context, meshes: list) -> bpy.types.Object:
    if len(meshes) == 1:
        return meshes[0]
    with context.temp_override(active_object=meshes[0], selected_editable_objects=meshes, selected_objects=meshes):
        bpy.ops.object.join()
    return meshes[0]


def _colour_material(obj: bpy.types.Object) -> None:
    """A material whose base colour is the mesh's colour attribute (if it has one)."""
    mesh = obj.data
    if not mesh.color_attributes:
        return
    attribute = mesh.color_attributes.active_color or mesh.color_attributes[0]
    mesh.color_attributes.active_color = attribute
    material = bpy.data.materials.new(f"DreamTime {obj.name}"[:MAX_NAME])
    if not material.use_nodes:  # Blender < 5: node trees are opt-in
        material.use_nodes = True
    nodes = material.node_tree.nodes
    bsdf = next(node for node in nodes if node.type == "BSDF_PRINCIPLED")
    colour = nodes.new("ShaderNodeVertexColor")
    colour.layer_name = attribute.name
    colour.location = (bsdf.location.x - 300, bsdf.location.y)
    material.node_tree.links.new(colour.outputs["Color"], bsdf.inputs["Base Color"])
    previous = [m for m in mesh.materials if m is not None]
    mesh.materials.clear()
    mesh.materials.append(material)
    for old in previous:  # the importer's default material, now unused
        if old.users == 0:
            bpy.data.materials.remove(old)
