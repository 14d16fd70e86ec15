"""Reading a DreamTime GLB (backend/asset/glb.py's layout) off the main thread: json, struct, numpy.

One scene node with one mesh of one triangle primitive: POSITION, NORMAL, TEXCOORD_0, COLOR_0,
indices, a metallic-roughness material with an embedded PNG base colour texture. The same reader
takes any GLB of that shape (trimesh writes them too). Anything else (several meshes, sparse or
Draco data, external buffers) raises GLBLayoutError and mesh_import.py hands the file to Blender's
own glTF importer instead. Positions come back in Blender's z-up frame, UVs with v up (Blender's).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

GLB_MAGIC, CHUNK_JSON, CHUNK_BIN = 0x46546C67, 0x4E4F534A, 0x004E4942
COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
TRIANGLES = 4


class GLBLayoutError(ValueError):
    """Not a GLB this reader handles."""


@dataclass
class GLBMesh:
    positions: np.ndarray  # (V, 3) float32, z up
    faces: np.ndarray  # (F, 3) int32
    uv: np.ndarray | None  # (V, 2) float32, v up (Blender's convention)
    colors: np.ndarray | None  # (V, 4) float32 linear RGBA
    texture_png: bytes | None
    texture_size: tuple[int, int]  # (width, height) of the PNG, from its header
    roughness: float = 0.8
    metallic: float = 0.0


def read_glb(path: str) -> GLBMesh:
    with open(path, "rb") as handle:
        data = handle.read()
    if len(data) < 20 or struct.unpack_from("<I", data)[0] != GLB_MAGIC:
        raise GLBLayoutError("not a binary glTF file")
    document, binary = _chunks(data)
    if document.get("extensionsRequired") or len(document.get("meshes", [])) != 1:
        raise GLBLayoutError("needs extensions or holds other than one mesh")
    primitives = document["meshes"][0].get("primitives", [])
    if len(primitives) != 1 or primitives[0].get("mode", TRIANGLES) != TRIANGLES:
        raise GLBLayoutError("holds other than one triangle primitive")
    primitive, attributes = primitives[0], primitives[0]["attributes"]
    read = lambda index: _accessor(document, binary, index)  # noqa: E731
    matrix = _node_matrix(document)  # glTF frame, before the axis change below
    positions = read(attributes["POSITION"]).astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    positions = np.stack([positions[:, 0], -positions[:, 2], positions[:, 1]], axis=1)  # glTF y up -> Blender z up
    faces = (read(primitive["indices"]) if "indices" in primitive else np.arange(len(positions))).reshape(-1, 3)
    uv = read(attributes["TEXCOORD_0"]).astype(np.float32) if "TEXCOORD_0" in attributes else None
    if uv is not None:
        uv[:, 1] = 1.0 - uv[:, 1]  # glTF's v runs down the image, Blender's up
    colors = _colors(read(attributes["COLOR_0"]), document["accessors"][attributes["COLOR_0"]]) if "COLOR_0" in attributes else None
    mesh = GLBMesh(positions.astype(np.float32), faces.astype(np.int32), uv, colors, None, (0, 0))
    material = document.get("materials", [{}])[primitive["material"]] if "material" in primitive else {}
    pbr = material.get("pbrMetallicRoughness", {})
    mesh.roughness, mesh.metallic = float(pbr.get("roughnessFactor", 1.0)), float(pbr.get("metallicFactor", 1.0))
    if "baseColorTexture" in pbr and uv is not None:
        image = document["images"][document["textures"][pbr["baseColorTexture"]["index"]]["source"]]
        if image.get("mimeType") != "image/png" or "bufferView" not in image:
            raise GLBLayoutError("the base colour texture is not an embedded PNG")
        mesh.texture_png = _view(document, binary, image["bufferView"])
        if mesh.texture_png[12:16] != b"IHDR":
            raise GLBLayoutError("the base colour texture is not a PNG")
        mesh.texture_size = struct.unpack(">II", mesh.texture_png[16:24])
    if len(faces) == 0 or faces.max() >= len(positions) or not np.isfinite(positions).all():
        raise GLBLayoutError("indices or positions out of range")
    return mesh


def _chunks(data: bytes) -> tuple[dict, bytes]:
    json_length, kind = struct.unpack_from("<II", data, 12)
    if kind != CHUNK_JSON:
        raise GLBLayoutError("the first chunk is not JSON")
    document = json.loads(data[20 : 20 + json_length])
    binary = b""
    if len(data) >= 28 + json_length:
        binary_length, kind = struct.unpack_from("<II", data, 20 + json_length)
        if kind == CHUNK_BIN:
            binary = data[28 + json_length : 28 + json_length + binary_length]
    if any("uri" in buffer for buffer in document.get("buffers", [])):
        raise GLBLayoutError("refers to external buffers")
    return document, binary


def _view(document: dict, binary: bytes, index: int) -> bytes:
    view = document["bufferViews"][index]
    start = view.get("byteOffset", 0)
    return binary[start : start + view["byteLength"]]


def _accessor(document: dict, binary: bytes, index: int) -> np.ndarray:
    accessor = document["accessors"][index]
    if "sparse" in accessor or "bufferView" not in accessor:
        raise GLBLayoutError("sparse or empty accessors")
    dtype, width, count = np.dtype(COMPONENTS[accessor["componentType"]]), WIDTH[accessor["type"]], accessor["count"]
    view = document["bufferViews"][accessor["bufferView"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    stride = view.get("byteStride", 0) or dtype.itemsize * width
    if start + stride * (count - 1) + dtype.itemsize * width > len(binary):
        raise GLBLayoutError("an accessor runs past the binary chunk")
    rows = np.ndarray((count, width), dtype, buffer=binary, offset=start, strides=(stride, dtype.itemsize))
    return rows.copy() if width > 1 else rows[:, 0].copy()


def _colors(values: np.ndarray, accessor: dict) -> np.ndarray:
    """(V, 4) float linear RGBA from COLOR_0 (float, or normalized unsigned bytes / shorts)."""
    if values.dtype != np.float32:
        values = values.astype(np.float32) / float(np.iinfo(values.dtype).max)
    if values.shape[1] == 3:
        values = np.concatenate([values, np.ones((len(values), 1), np.float32)], axis=1)
    return values


def _node_matrix(document: dict) -> np.ndarray:
    """The world matrix (4, 4) of the one node that uses the mesh: its local matrix times its parents'."""
    nodes = document.get("nodes", [])
    users = [index for index, node in enumerate(nodes) if "mesh" in node]
    if len(users) != 1:
        raise GLBLayoutError("the mesh is used by other than one node")
    parent = {child: index for index, node in enumerate(nodes) for child in node.get("children", [])}
    matrix, index, seen = np.eye(4), users[0], set()
    while index is not None and index not in seen:
        seen.add(index)
        matrix = _local_matrix(nodes[index]) @ matrix
        index = parent.get(index)
    return matrix


def _local_matrix(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.array(node["matrix"], np.float64).reshape(4, 4).T  # glTF stores column-major
    x, y, z, w = node.get("rotation", (0.0, 0.0, 0.0, 1.0))
    rotation = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation * np.array(node.get("scale", (1.0, 1.0, 1.0)))[None, :]
    matrix[:3, 3] = node.get("translation", (0.0, 0.0, 0.0))
    return matrix
