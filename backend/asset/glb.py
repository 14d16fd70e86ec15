"""A binary glTF 2.0 writer for one textured triangle mesh (the glTF 2.0 specification, §4.4 GLB).

Layout (what dreamtime_blender/glb_reader.py reads back): one scene, one node, one mesh with one
triangle primitive: POSITION and NORMAL (float VEC3), TEXCOORD_0 (float VEC2) when there is a
texture, COLOR_0 (float VEC3, linear) when vertex colours are given, uint32 indices; one
metallic-roughness material whose baseColorTexture is the embedded PNG (sRGB, as glTF defines
base colour textures), sampled with mipmaps and clamped at the edge. Positions and normals are
given z-up (Blender's frame) and stored y-up (glTF's): (x, y, z) -> (x, z, -y).
"""

from __future__ import annotations

import json
import struct

import numpy as np

GLB_MAGIC, CHUNK_JSON, CHUNK_BIN = 0x46546C67, 0x4E4F534A, 0x004E4942
FLOAT, UNSIGNED_INT = 5126, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
LINEAR, LINEAR_MIPMAP_LINEAR, CLAMP_TO_EDGE = 9729, 9987, 33071
ROUGHNESS, METALLIC = 0.8, 0.0  # a matte, non-metallic surface: what an albedo-only bake can honestly claim


def z_up_to_y_up(points: np.ndarray) -> np.ndarray:
    return np.stack([points[:, 0], points[:, 2], -points[:, 1]], axis=1)


def glb_bytes(
    positions: np.ndarray,
    normals: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray | None = None,
    texture_png: bytes | None = None,
    colors_linear: np.ndarray | None = None,
    name: str = "DreamTime",
) -> bytes:
    """The GLB file of a mesh: positions (V, 3), unit normals (V, 3), faces (F, 3), uv (V, 2) in
    glTF's convention with `texture_png`, colours (V, 3) linear RGB in [0, 1] or None."""
    binary = bytearray()
    views, accessors = [], []

    def add(data: np.ndarray, kind: str, component: int, target: int | None, bounds: bool = False) -> int:
        while len(binary) % 4:
            binary.append(0)
        raw = np.ascontiguousarray(data).tobytes()
        view = {"buffer": 0, "byteOffset": len(binary), "byteLength": len(raw)}
        if target is not None:
            view["target"] = target
        views.append(view)
        binary.extend(raw)
        accessor = {"bufferView": len(views) - 1, "componentType": component, "count": int(len(data)), "type": kind}
        if bounds:
            accessor["min"], accessor["max"] = data.min(0).tolist(), data.max(0).tolist()
        accessors.append(accessor)
        return len(accessors) - 1

    normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    attributes = {
        "POSITION": add(z_up_to_y_up(positions).astype(np.float32), "VEC3", FLOAT, ARRAY_BUFFER, bounds=True),
        "NORMAL": add(z_up_to_y_up(normals).astype(np.float32), "VEC3", FLOAT, ARRAY_BUFFER),
    }
    material: dict = {"name": name, "pbrMetallicRoughness": {"metallicFactor": METALLIC, "roughnessFactor": ROUGHNESS}}
    document: dict = {"asset": {"version": "2.0", "generator": "DreamTime"}, "scene": 0, "scenes": [{"nodes": [0]}],
                      "nodes": [{"mesh": 0, "name": name}]}
    if texture_png is not None:
        attributes["TEXCOORD_0"] = add(uv.astype(np.float32), "VEC2", FLOAT, ARRAY_BUFFER)
        while len(binary) % 4:
            binary.append(0)
        views.append({"buffer": 0, "byteOffset": len(binary), "byteLength": len(texture_png)})
        binary.extend(texture_png)
        document["images"] = [{"bufferView": len(views) - 1, "mimeType": "image/png", "name": f"{name} albedo"}]
        document["samplers"] = [{"magFilter": LINEAR, "minFilter": LINEAR_MIPMAP_LINEAR, "wrapS": CLAMP_TO_EDGE, "wrapT": CLAMP_TO_EDGE}]
        document["textures"] = [{"sampler": 0, "source": 0}]
        material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0, "texCoord": 0}
    if colors_linear is not None:
        attributes["COLOR_0"] = add(np.clip(colors_linear, 0, 1).astype(np.float32), "VEC3", FLOAT, ARRAY_BUFFER)
    indices = add(np.asarray(faces, np.uint32).reshape(-1), "SCALAR", UNSIGNED_INT, ELEMENT_ARRAY_BUFFER)
    document["meshes"] = [{"name": name, "primitives": [{"attributes": attributes, "indices": indices, "material": 0, "mode": 4}]}]
    document["materials"] = [material]
    while len(binary) % 4:
        binary.append(0)
    document.update(accessors=accessors, bufferViews=views, buffers=[{"byteLength": len(binary)}])
    text = json.dumps(document, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    return b"".join([struct.pack("<III", GLB_MAGIC, 2, total), struct.pack("<II", len(text), CHUNK_JSON), text,
                     struct.pack("<II", len(binary), CHUNK_BIN), bytes(binary)])
