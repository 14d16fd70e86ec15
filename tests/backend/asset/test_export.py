"""backend/asset/export.py and glb.py: the files an artist gets, and the Khronos glTF validator."""

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from backend.asset import make_asset
from backend.asset.export import export_asset

REPO = Path(__file__).resolve().parents[3]
VALIDATOR = REPO / ".tools" / "node" / "node_modules" / "gltf-validator"  # .ci/run installs it with npm
VALIDATE_JS = """
const validator = require(process.argv[1]); const fs = require('fs');
validator.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2])))
  .then(r => console.log(JSON.stringify(r.issues))).catch(e => { console.error(String(e)); process.exit(3); });
"""


def by_height(points: np.ndarray) -> np.ndarray:
    return np.stack([0.5 + points[:, 2], np.full(len(points), 0.3), 0.5 - points[:, 2]], axis=1).clip(0, 1)


@pytest.fixture(scope="module")
def asset():
    return make_asset(trimesh.creation.icosphere(subdivisions=4, radius=0.5), by_height, faces=2000, texture_size=256)


def read_glb(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<III", data)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    json_length, _ = struct.unpack_from("<II", data, 12)
    document = json.loads(data[20 : 20 + json_length])
    binary_length, _ = struct.unpack_from("<II", data, 20 + json_length)
    return document, data[28 + json_length : 28 + json_length + binary_length]


def test_glb_has_a_base_colour_texture_normals_and_a_matte_material(asset, tmp_path):
    paths = export_asset(asset, tmp_path, ("glb",))
    document, binary = read_glb(paths["glb"])
    primitive = document["meshes"][0]["primitives"][0]
    assert set(primitive["attributes"]) == {"POSITION", "NORMAL", "TEXCOORD_0"}  # no COLOR_0 unless asked
    pbr = document["materials"][0]["pbrMetallicRoughness"]
    assert pbr["baseColorTexture"]["index"] == 0 and pbr["metallicFactor"] == 0.0 and 0.5 <= pbr["roughnessFactor"] <= 1.0
    view = document["bufferViews"][document["images"][0]["bufferView"]]
    png = binary[view["byteOffset"] : view["byteOffset"] + view["byteLength"]]
    assert png.startswith(b"\x89PNG") and png == paths["texture"].read_bytes()
    position = document["accessors"][primitive["attributes"]["POSITION"]]
    assert position["count"] == len(asset.uv_mesh.vertices)
    assert np.isclose(position["max"][1], asset.uv_mesh.vertices[:, 2].max(), atol=1e-6)  # glTF y is the field's z (up)


def test_vertex_colours_only_on_request_and_when_there_is_no_texture(asset, tmp_path):
    asked = read_glb(export_asset(asset, tmp_path / "asked", ("glb",), vertex_colors=True)["glb"])[0]
    assert "COLOR_0" in asked["meshes"][0]["primitives"][0]["attributes"]
    untextured = make_asset(trimesh.creation.icosphere(subdivisions=2), by_height, faces=0, texture_size=256)
    untextured.texture = untextured.uv_mesh = None  # as after a failed atlas
    paths = export_asset(untextured, tmp_path / "plain", ("glb", "obj"))
    attributes = read_glb(paths["glb"])[0]["meshes"][0]["primitives"][0]["attributes"]
    assert "COLOR_0" in attributes and "TEXCOORD_0" not in attributes and "texture" not in paths


def test_obj_comes_with_its_mtl_and_png_and_ply_keeps_vertex_colours(asset, tmp_path):
    paths = export_asset(asset, tmp_path, ("obj", "ply"))
    mtl = (tmp_path / "mesh.mtl").read_text()
    assert "map_Kd mesh_albedo.png" in mtl and "mtllib mesh.mtl" in paths["obj"].read_text()
    assert Image.open(paths["texture"]).size == (256, 256)
    loaded = trimesh.load(paths["obj"], force="mesh")
    assert len(loaded.faces) == len(asset.mesh.faces)
    ply = trimesh.load(paths["ply"], force="mesh")
    colours = np.asarray(ply.visual.vertex_colors)[:, :3].astype(float)
    top, bottom = colours[ply.vertices[:, 2] > 0.4].mean(0), colours[ply.vertices[:, 2] < -0.4].mean(0)
    assert top[0] > bottom[0] + 100 and bottom[2] > top[2] + 100  # red on top, blue below, as by_height paints


def test_no_temporary_files_are_left(asset, tmp_path):
    export_asset(asset, tmp_path, ("glb", "ply", "obj"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.glb", "mesh.mtl", "mesh.obj", "mesh.ply", "mesh_albedo.png"]


@pytest.mark.skipif(shutil.which("node") is None or not VALIDATOR.is_dir(),
                    reason="node or the npm package gltf-validator (.tools/node) is missing")
def test_the_khronos_gltf_validator_finds_no_errors(asset, tmp_path):
    for name, vertex_colors in (("textured", False), ("with_colours", True)):
        path = export_asset(asset, tmp_path / name, ("glb",), vertex_colors=vertex_colors)["glb"]
        result = subprocess.run(["node", "-e", VALIDATE_JS, str(VALIDATOR), str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        issues = json.loads(result.stdout)
        assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
