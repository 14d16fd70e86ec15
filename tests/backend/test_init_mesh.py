"""backend/init_mesh.py: mesh files into the field's initial density and albedo; runs that start from them."""

import json

import numpy as np
import pytest
import torch
import trimesh

from backend.config import ConfigError, GenerationConfig
from backend.field import NeRFField
from backend.guidance.targets import sdf_torus
from backend.init_mesh import INIT_FILL, fit_frame, initialize_field, load_init_mesh, read_init_mesh, to_source_frame, voxelize
from backend.mesh import export_mesh
from backend.run_setup import preflight
from backend.trainer import Trainer

from test_trainer import tiny_config


def analytic_torus(colour=None, offset=(0, 0, 0), scale=1.0) -> trimesh.Trimesh:
    """The analytic prior's torus (targets.sdf_torus: radii 0.45, 0.18) as a mesh, moved and scaled."""
    torus = trimesh.creation.torus(major_radius=0.45, minor_radius=0.18, major_sections=64, minor_sections=32)
    if colour is not None:
        torus.visual.vertex_colors = np.tile([*colour, 255], (len(torus.vertices), 1)).astype(np.uint8)
    torus.apply_scale(scale)
    torus.apply_translation(offset)
    return torus


def grid_points(resolution: int) -> torch.Tensor:
    axis = torch.linspace(-1, 1, resolution)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([x, y, z], -1)  # (R, R, R, 3) in the voxel grid's [k, j, i] order


def test_a_mesh_anywhere_lands_on_the_field_grid_as_its_signed_distance(tmp_path):
    """A torus twice the size, far off the origin: framed into the bounding sphere, it is the analytic
    torus there (INIT_FILL puts its outer radius 0.63 at 0.63), to a fraction of a voxel."""
    path = tmp_path / "torus.ply"
    analytic_torus((20, 60, 220), offset=(3, 1, -2), scale=2.0).export(path)
    shape = read_init_mesh(str(path), 0.9, 48)
    assert shape.frame["center"] == pytest.approx([3, 1, -2], abs=1e-6) and shape.frame["scale"] == pytest.approx(0.5, rel=1e-3)
    true = sdf_torus(grid_points(48).reshape(-1, 3)).reshape(48, 48, 48).numpy()
    near = np.abs(true) < 0.08
    assert np.abs(shape.sdf - true)[near].max() < 0.01  # exact distances in the band (the mesh is a 64x32 polygon torus)
    assert ((shape.sdf < 0) == (true < 0)).mean() > 0.995
    assert shape.colours == "vertex" and np.allclose(shape.albedo[true < 0].mean(0), np.array([20, 60, 220]) / 255, atol=0.02)


def test_an_open_mesh_still_gives_a_solid():
    """A torus with a third of its faces cut away: where it still has its surface the winding number
    fills it as the closed one (same frame), and only the cut end is lost."""
    closed = analytic_torus()
    cut = closed.copy()
    cut.update_faces(cut.triangles_center[:, 0] < 0.25)
    cut.remove_unreferenced_vertices()
    assert not cut.is_watertight
    frame = fit_frame(np.asarray(closed.vertices), 0.9)
    inside_cut, inside_closed = (voxelize(mesh, frame, 48).sdf < 0 for mesh in (cut, closed))
    kept = grid_points(48).numpy()[..., 0] < 0.1
    assert (inside_cut == inside_closed)[kept].mean() > 0.99
    assert 0.6 < inside_cut.sum() / inside_closed.sum() < 1.0


def test_glb_is_read_y_up_and_export_goes_back_to_the_source_frame(tmp_path):
    """The backend's own GLB (y-up, linear colours) reads back as the z-up mesh with its sRGB colours;
    to_source_frame inverts the frame."""
    torus = analytic_torus((200, 30, 30), offset=(0, 0, 0.5))
    export_mesh(torus, tmp_path, ("glb",))
    loaded = load_init_mesh(str(tmp_path / "mesh.glb"))
    assert loaded.bounds == pytest.approx(torus.bounds, abs=1e-5)
    shape = read_init_mesh(str(tmp_path / "mesh.glb"), 0.9, 32)
    assert shape.albedo[shape.sdf < 0].mean(0) == pytest.approx(np.array([200, 30, 30]) / 255, abs=0.02)
    frame = fit_frame(np.asarray(torus.vertices), 0.9)
    field_frame = torus.copy()
    field_frame.vertices = (field_frame.vertices - frame["center"]) * frame["scale"]
    assert np.linalg.norm(field_frame.vertices, axis=1).max() == pytest.approx(INIT_FILL * 0.9)
    assert to_source_frame(field_frame, frame).vertices == pytest.approx(torus.vertices, abs=1e-6)


def test_a_textured_mesh_gives_its_texture_colours(tmp_path):
    from PIL import Image

    box = trimesh.creation.box((0.8, 0.8, 0.8))
    uv = np.where(box.vertices[:, :1] > 0, [[0.75, 0.5]], [[0.25, 0.5]])  # +x half: right of the image, -x half: left
    image = Image.new("RGB", (8, 8), (250, 10, 10))
    image.paste((10, 250, 10), (4, 0, 8, 8))
    box.visual = trimesh.visual.TextureVisuals(uv=uv, image=image)
    path = tmp_path / "box.glb"
    box.export(path)
    shape = read_init_mesh(str(path), 0.9, 32)
    assert shape.colours == "texture"
    albedo = shape.albedo[shape.sdf < 0]  # (M, 3)
    points = grid_points(32).numpy()[shape.sdf < 0]
    assert albedo[points[:, 0] > 0.2].mean(0)[1] > 0.8 and albedo[points[:, 0] < -0.2].mean(0)[0] > 0.8


@pytest.mark.parametrize("content, message", [
    (None, "no mesh file"), (b"", "is empty"), (b"solid nonsense\n\x00\x01", "not a readable mesh|holds no triangles"),
])
def test_bad_init_files_name_the_field(tmp_path, content, message):
    path = tmp_path / "shape.ply"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as error:
        preflight(tiny_config(init_mesh=str(path)))
    assert error.value.field == "init_mesh"


def test_a_text_file_is_not_a_mesh_and_strength_needs_a_mesh(tmp_path):
    (tmp_path / "notes.txt").write_text("a torus")
    with pytest.raises(ConfigError, match="not a mesh file") as error:
        preflight(tiny_config(init_mesh=str(tmp_path / "notes.txt")))
    assert error.value.field == "init_mesh"
    for strength in (0, -0.5, 1.5, float("nan")):
        with pytest.raises(ConfigError) as error:
            tiny_config(init_mesh="x.ply", strength=strength).validate()
        assert error.value.field == "strength" and "(0, 1]" in str(error.value)
    with pytest.raises(ConfigError, match="needs an init_mesh") as error:
        tiny_config(strength=0.5).validate()
    assert error.value.fields == ("strength", "init_mesh")


def test_a_run_from_a_mesh_starts_part_way_and_exports_in_the_source_frame(tmp_path):
    """strength 0.5 of 12 steps: steps 6..11 only, the field an SDF from the start (past sdf_after), the
    mesh back at the source's place and size."""
    source = analytic_torus((20, 60, 220), offset=(2, 0, 1), scale=1.5)
    source.export(tmp_path / "torus.ply")
    events = []
    config = tiny_config(prompt="a blue torus", init_mesh=str(tmp_path / "torus.ply"), strength=0.5, sdf_after=0.3, preview_every=0,
                         mesh_resolution=48, export=("glb", "ply"))
    trainer = Trainer(config, tmp_path / "run", on_event=events.append)
    outputs = trainer.run()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert trainer.lr_decay(6) == 1 and trainer.lr_decay(11) == pytest.approx(config.lr_final_ratio)  # the rate decays over 6..11
    assert metrics["step"] == list(range(6, 12)) and metrics["init_mesh"]["start_step"] == 6 and metrics["init_mesh"]["as"] == "sdf"
    assert set(metrics["init_mesh"]["seconds"]) == {"voxelize", "field"} and metrics["init_mesh"]["seconds"]["voxelize"] > 0
    assert [e["step"] for e in events if e["type"] == "progress"] == list(range(7, 13))
    assert outputs["mesh_frame"] == "source"
    mesh = trimesh.load(tmp_path / "run" / "mesh.ply")
    assert mesh.bounds == pytest.approx(source.bounds, abs=0.08)  # 24³ grid: a voxel is 0.13 of the source's units
    assert metrics["quality"]["psnr"] > 25  # it starts as the target's own shape (measured 30.9 dB at 16 px)


def test_a_hash_grid_field_is_fitted_to_the_mesh(tmp_path):
    analytic_torus((220, 40, 40)).export(tmp_path / "torus.ply")
    field = NeRFField("hashgrid", "torch", 16, encoding_kwargs=dict(n_levels=4, log2_hashmap_size=12, base_resolution=8))
    info = initialize_field(field, str(tmp_path / "torus.ply"), 0.9, as_sdf=False, fit_steps=60, fit_points=4096)
    assert info["as"].startswith("fitted")
    inside = torch.tensor([[0.45, 0.0, 0.0], [0.0, -0.45, 0.0]])
    outside = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.6], [0.9, 0.0, 0.0]])
    with torch.no_grad():
        assert field.density(inside).min() > 5 * field.density(outside).max()
        assert field.albedo(inside)[:, 0].min() > 0.6


def test_config_round_trip_keeps_the_new_fields():
    config = GenerationConfig(prompt="a red cube", init_mesh="/tmp/x.obj", strength=0.4, variations=3).validate()
    again = GenerationConfig.from_dict(json.loads(config.to_json()))
    assert (again.init_mesh, again.strength, again.variations, again.refine_from) == ("/tmp/x.obj", 0.4, 3, "")
