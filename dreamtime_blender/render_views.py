"""Headless Blender renders of imported meshes from given cameras (the bpy module, in a subprocess).

`python -c "from dreamtime_blender import render_views; render_views.main('job.json')"`, run by
backend/asset/evaluate.py (which must never import bpy itself) and scripts/mesh_picture.py. Each
mesh is imported with mesh_import.import_mesh, as the panel imports it, then put back where the
generation had it (`dreamtime_source_origin`), so the backend's cameras see it in their frame.

Passes (Cycles, CPU, transparent film, EXR float, linear):
  albedo        the material's Base Color input through an Emission shader: what feeds the
                Principled BSDF (the image texture and its UVs, as imported), without lighting;
                box filter one pixel wide, antialiased
  albedo_point  the same, one sample at each pixel centre
  position      world position p of the surface at each pixel centre, stored as p / 2 + 1/2
  beauty        the imported material as it is, under a sun and a grey sky (PNG): a picture
Job: {"meshes": [{"path", "name"}], "cameras": [c2w as 16 numbers, row-major], "fov_y": radians,
"resolution": R, "samples": S, "passes": [...], "out": folder, "threads": N (0: all)}; writes <out>/<name>.npz with one
(V, R, R, 4) float32 array per pass (top row first), and <out>/<name>_beauty_<v>.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import bpy
import numpy as np


def _setup_scene(resolution: int, threads: int = 0) -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    if threads:
        scene.render.threads_mode, scene.render.threads = "FIXED", threads
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.use_denoising = False
    scene.cycles.use_adaptive_sampling = False
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    world = bpy.data.worlds.new("DreamTime render")
    scene.world = world
    return scene


def _emission_of(material, source: str) -> None:
    """Rewire `material` so its surface is an Emission of what fed Base Color (source 'albedo') or
    of the world position ('position')."""
    tree = material.node_tree
    output = next(node for node in tree.nodes if node.type == "OUTPUT_MATERIAL")
    bsdf = next(node for node in tree.nodes if node.type == "BSDF_PRINCIPLED")
    emission = tree.nodes.new("ShaderNodeEmission")
    emission.inputs["Strength"].default_value = 1.0
    if source == "position":  # encoded as p / 2 + 1/2: emission colours in [0, 1] for the field's cube [-1, 1]^3
        encode = tree.nodes.new("ShaderNodeVectorMath")
        encode.operation = "MULTIPLY_ADD"
        encode.inputs[1].default_value, encode.inputs[2].default_value = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        tree.links.new(tree.nodes.new("ShaderNodeNewGeometry").outputs["Position"], encode.inputs[0])
        tree.links.new(encode.outputs["Vector"], emission.inputs["Color"])
    else:
        base = bsdf.inputs["Base Color"]
        if base.links:
            tree.links.new(base.links[0].from_socket, emission.inputs["Color"])
        else:
            emission.inputs["Color"].default_value = base.default_value
    tree.links.new(emission.outputs["Emission"], output.inputs["Surface"])


def _cameras(scene, job: dict) -> list:
    cameras = []
    for index, matrix in enumerate(job["cameras"]):
        data = bpy.data.cameras.new(f"view {index}")
        data.sensor_fit, data.angle_y = "VERTICAL", job["fov_y"]
        data.clip_start, data.clip_end = 0.01, 100.0
        camera = bpy.data.objects.new(f"view {index}", data)
        scene.collection.objects.link(camera)
        from mathutils import Matrix

        camera.matrix_world = Matrix(np.array(matrix, float).reshape(4, 4).tolist())  # OpenGL camera = Blender's: -z forward, +y up
        cameras.append(camera)
    return cameras


def _render_exr(scene, camera, path: Path) -> np.ndarray:
    """(R, R, 4) float32 linear RGBA, top row first."""
    scene.camera = camera
    scene.render.image_settings.file_format = "OPEN_EXR"
    scene.render.image_settings.color_depth = "32"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    pixels = np.empty(len(image.pixels), np.float32)
    image.pixels.foreach_get(pixels)
    width, height = image.size
    bpy.data.images.remove(image)
    return pixels.reshape(height, width, 4)[::-1].copy()


def _pass_settings(scene, name: str, samples: int) -> None:
    point = name in ("albedo_point", "position")
    scene.cycles.samples = 1 if point else samples
    scene.cycles.pixel_filter_type = "BOX"
    scene.cycles.filter_width = 0.01 if point else 1.0


def render_mesh(job: dict, mesh: dict) -> dict[str, np.ndarray]:
    from . import mesh_import

    scene = _setup_scene(job["resolution"], job.get("threads", 0))
    obj = mesh_import.import_mesh(bpy.context, mesh["path"], mesh["name"])
    obj.location = tuple(obj["dreamtime_source_origin"])  # back where the generation had it
    cameras = _cameras(scene, job)
    out, arrays = Path(job["out"]), {}
    materials = [slot.material for slot in obj.material_slots if slot.material is not None]
    for name in job["passes"]:
        if name == "beauty":
            _beauty(scene, obj, cameras, job, out / f"{mesh['name']}_beauty")
            continue
        copies = [material.copy() for material in materials]
        for copy in copies:
            _emission_of(copy, "position" if name == "position" else "albedo")
        for slot, copy in zip(obj.material_slots, copies):
            slot.material = copy
        _pass_settings(scene, name, job["samples"])
        arrays[name] = np.stack([_render_exr(scene, camera, out / f"{mesh['name']}_{name}_{i}.exr") for i, camera in enumerate(cameras)])
        for slot, original in zip(obj.material_slots, materials):
            slot.material = original
    return arrays


def _beauty(scene, obj, cameras, job: dict, stem: Path) -> None:
    """The imported material as it is, lit by a sun from the upper left and a grey sky; PNG."""
    scene.world.use_nodes = True
    background = next(node for node in scene.world.node_tree.nodes if node.type == "BACKGROUND")
    background.inputs["Color"].default_value, background.inputs["Strength"].default_value = (0.6, 0.6, 0.65, 1.0), 1.0
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy, sun.rotation_euler = 3.0, (0.7, 0.0, -0.6)
    scene.collection.objects.link(sun)
    scene.cycles.samples, scene.cycles.pixel_filter_type, scene.cycles.filter_width = job["samples"], "BLACKMAN_HARRIS", 1.5
    scene.render.film_transparent = False
    scene.render.image_settings.file_format, scene.render.image_settings.color_mode = "PNG", "RGB"
    scene.render.image_settings.color_depth = "8"
    for index, camera in enumerate(cameras):
        scene.camera, scene.render.filepath = camera, f"{stem}_{index}.png"
        bpy.ops.render.render(write_still=True)
    scene.render.film_transparent = True
    bpy.data.objects.remove(sun)


def main(job_path: str) -> None:
    if not bpy.app.background:  # it starts from factory settings: never inside a user's session
        raise RuntimeError("render_views runs only in a background Blender (the bpy module in a subprocess)")
    job = json.loads(Path(job_path).read_text())
    for mesh in job["meshes"]:
        arrays = render_mesh(job, mesh)
        if arrays:
            np.savez(Path(job["out"]) / f"{mesh['name']}.npz", **arrays)
    print("rendered", len(job["meshes"]), "meshes", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
