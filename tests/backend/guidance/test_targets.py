"""backend/guidance/targets.py and target_volumes.py: the prompt vocabulary, JSON files, SDFs, voxel renders."""

import json
import re

import pytest
import torch

from backend import wording
from backend.cameras import evaluation_ring
from backend.guidance.target_volumes import TargetSet
from backend.guidance.targets import COLORS, SHAPES, TargetError, library, load_targets, read_prompt, targets_from_file, targets_from_prompt
from backend.renderer import RenderSettings


def test_a_colour_and_a_shape_is_one_target():
    (target,) = targets_from_prompt("a red torus")
    assert target.name == "red torus" and target.single_color == COLORS["red"]


def test_a_shape_alone_is_every_colour():
    targets = targets_from_prompt("A Torus!")
    assert [t.name for t in targets] == [f"{c} torus" for c in COLORS]


def test_alternatives_and_synonyms():
    names = [t.name for t in targets_from_prompt("a red donut or a blue box")]
    assert names == ["red torus", "blue cube"]


def test_required_vocabulary():
    assert {"sphere", "cube", "torus", "cone", "cylinder", "capsule"} <= set(SHAPES)
    assert {"red", "orange", "yellow", "green", "blue", "purple", "white", "black"} <= set(COLORS)
    assert len(library()) == len(SHAPES) * len(COLORS)


def test_unknown_words_list_what_is_known():
    with pytest.raises(TargetError) as info:
        targets_from_prompt("a majestic red dragon")
    message = str(info.value)
    assert "'dragon'" in message and "'majestic'" in message
    assert "torus" in message and "purple" in message
    assert "--guidance sd" in wording.cli(message) and "Guidance: Stable Diffusion" in wording.panel(message)


@pytest.mark.parametrize("prompt, names, note", [
    ("a red green torus", ["red torus"], "read red and green torus as a red torus"),
    ("a black and white cube", ["black cube"], "read black and white cube as a black cube"),
    ("a red torus or a blue cube", ["red torus", "blue cube"], None),
    ("a red box, or a blue ball", ["red cube", "blue sphere"], None),
])
def test_alternatives_and_the_colours_of_one_shape(prompt, names, note):
    targets, notes = read_prompt(prompt)
    assert [t.name for t in targets] == names
    assert (notes[0].startswith(note) and "first one named" in notes[0]) if note else notes == []


@pytest.mark.parametrize("prompt, words", [
    ("a torus and a cube", "not a set of objects. Write 'a torus or a cube'"),
    ("a red torus and a blue cube", "a red torus and a blue cube: the analytic (offline demo) prior makes one object per run"),
    ("a torus cube", "several shapes for one object"),
    ("two red spheres", "('two' is a count; 'spheres' is a plural). Write one object, e.g. 'a red sphere'"),
    ("3 tori", "('3' is a count; 'tori' is a plural)"),
    ("blue boxes", "('boxes' is a plural). Write one object, e.g. 'a blue cube'"),
])
def test_sets_several_shapes_counts_and_plurals_are_refused_saying_what_it_reads(prompt, words):
    with pytest.raises(TargetError, match=re.escape(words)):
        read_prompt(prompt)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_sdf_sign_and_surface(shape):
    sdf = SHAPES[shape]
    assert sdf(torch.zeros(1, 3)) < 0 or shape == "torus"
    assert sdf(torch.tensor([[0.95, 0.95, 0.95]])) > 0
    # the shape fits in the renderer's sphere of radius 0.9 with room to spare
    points = torch.rand(20000, 3) * 2 - 1
    inside = points[sdf(points) < 0]
    assert inside.norm(dim=-1).max() < 0.75


def test_torus_and_cone_distances_are_exact_on_known_points():
    torus = SHAPES["torus"]
    assert torus(torch.tensor([[0.45, 0.0, 0.0]])) == pytest.approx(-0.18)
    assert torus(torch.tensor([[0.0, 0.0, 0.0]])) == pytest.approx(0.45 - 0.18)
    cone = SHAPES["cone"]
    assert cone(torch.tensor([[0.0, 0.0, 0.7]])) == pytest.approx(0.2, abs=1e-6)  # above the apex
    assert cone(torch.tensor([[0.0, 0.0, -0.6]])) == pytest.approx(0.1, abs=1e-6)  # below the base
    assert cone(torch.tensor([[0.0, 0.0, -0.45]])) == pytest.approx(-0.05, abs=1e-6)  # just above the base


def test_targets_file(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"targets": [
        {"name": "cone up", "parts": [{"shape": "cone", "color": "red"}]},
        {"name": "cone down", "weight": 2, "parts": [{"shape": "cone", "color": [0, 0, 1], "rotation": [180, 0, 0]}]},
        {"name": "mug", "parts": [{"shape": "cylinder", "color": "white", "scale": [0.8, 0.8, 1]},
                                  {"shape": "torus", "color": "red", "center": [0.45, 0, 0], "rotation": [90, 0, 0], "scale": 0.5}]},
    ]}))
    targets = load_targets("ignored", str(path))
    assert [t.name for t in targets] == ["cone up", "cone down", "mug"]
    up, down = targets[0], targets[1]
    upper_rim = torch.tensor([[0.3, 0.0, 0.3]])  # wide part of the downward cone only
    assert down.sdf_and_albedo(upper_rim)[0] < 0 < up.sdf_and_albedo(upper_rim)[0]
    assert targets[2].single_color is None
    assert torch.allclose(targets[2].sdf_and_albedo(torch.tensor([[0.67, 0.0, 0.0]]))[1], torch.tensor([COLORS["red"]]))


@pytest.mark.parametrize("content, words", [
    ("not json", "not readable JSON"),
    ('{"targets": []}', "at least one"),
    ('{"targets": [{"parts": [{"shape": "pyramid"}]}]}', "shape"),
    ('{"targets": [{"parts": [{"shape": "cube", "color": "teal"}]}]}', "color"),
    ('{"targets": [{"parts": [{"shape": "cube", "scale": [1, 0, 1]}]}]}', "scales positive"),
    ('{"targets": [{"weight": -1, "parts": [{"shape": "cube"}]}]}', "weight"),
    ('{"targets": [{"parts": [{"shape": "cube", "stripes": {"width": 0}}]}]}', r"stripes\.width"),
    ('{"targets": [{"parts": [{"shape": "cube", "stripes": {"width": 0.1, "axis": "w"}}]}]}', r"stripes\.axis"),
    ('{"targets": [{"parts": [{"shape": "cube", "stripes": {"width": 0.1, "color": "teal"}}]}]}', r"stripes\.color"),
    ('{"targets": [{"parts": [{"shape": "cube", "stripes": "white"}]}]}', "stripes"),
])
def test_bad_targets_files(tmp_path, content, words):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(TargetError, match=words):
        targets_from_file(path)


def test_targets_as_data_read_as_the_file_would_be(tmp_path):
    data = {"targets": [{"name": "cone up", "parts": [{"shape": "cone", "color": "red"}]}, {"parts": [{"shape": "cube"}]}]}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    from_file, from_data, from_list = targets_from_file(path), load_targets("ignored", data), load_targets("ignored", data["targets"])
    assert [t.name for t in from_data] == [t.name for t in from_list] == [t.name for t in from_file] == ["cone up", "target 1"]
    assert from_data[0].parts == from_file[0].parts
    with pytest.raises(TargetError, match=r"targets\[0\].parts\[0\].shape"):
        load_targets("ignored", [{"parts": [{"shape": "pyramid"}]}])


def test_stripes_alternate_along_the_parts_own_axis_and_render_in_two_colours():
    data = {"parts": [{"shape": "cylinder", "color": "red", "rotation": [90, 0, 0],
                       "stripes": {"color": "white", "width": 0.15, "axis": "z"}}]}
    (target,) = load_targets("ignored", [data])
    assert target.single_color is None  # stored with its own albedo grid
    # rotated 90 degrees about x, the part's z runs along world -y: bands [0, 0.15) red, [0.15, 0.3) white, [-0.15, 0) white
    points = torch.tensor([[0.0, -0.05, 0.4], [0.0, -0.2, 0.4], [0.0, 0.05, 0.4]])
    _, albedo = target.sdf_and_albedo(points)
    assert torch.allclose(albedo, torch.tensor([COLORS["red"], COLORS["white"], COLORS["white"]]))
    (plain,) = load_targets("ignored", [{"parts": [{"shape": "cylinder", "color": "red", "rotation": [90, 0, 0]}]}])
    assert torch.allclose(target.sdf_and_albedo(points)[0], plain.sdf_and_albedo(points)[0])  # stripes are colour only
    (upright,) = load_targets("ignored", [{"parts": [{**data["parts"][0], "rotation": [0, 0, 0]}]}])
    ring = evaluation_ring(1)  # looks at the side, where the bands are
    rgb, opacity = TargetSet([upright], resolution=64).render_layers(ring, 48, 64, RenderSettings("albedo", background=torch.ones(1, 3)))
    shown = rgb[0, 0][opacity[0, 0, ..., 0] > 0.99]  # inside the silhouette
    near = lambda colour: ((shown - torch.tensor(colour)).abs().max(-1).values < 0.05).float().mean()  # noqa: E731
    assert near(COLORS["red"]) > 0.2 and near(COLORS["white"]) > 0.2


def test_missing_targets_file():
    with pytest.raises(TargetError, match="does not exist"):
        targets_from_file("/nonexistent/targets.json")


def test_colour_variants_share_one_voxel_grid_and_render_in_their_colours():
    targets = TargetSet(targets_from_prompt("a sphere"), resolution=64)
    assert len(targets) == len(COLORS) and len(targets.volumes) == 1
    ring = evaluation_ring(2)
    settings = RenderSettings("albedo", background=torch.ones(2, 3))
    images = targets.render(ring, 32, 64, settings, radius=0.9)  # (K, V, H, W, 3)
    assert images.shape == (len(COLORS), 2, 32, 32, 3)
    for k, colour in enumerate(COLORS.values()):
        assert torch.allclose(images[k, 0, 16, 16], torch.tensor(colour), atol=0.02)
        assert torch.allclose(images[k, 0, 0, 0], torch.ones(3))  # white background in the corner


def test_layers_composite_to_the_render_over_any_background():
    targets = TargetSet(targets_from_prompt("a red cube or a blue sphere"), resolution=48)
    ring = evaluation_ring(2)
    background = torch.tensor([[0.2, 0.7, 0.1], [0.9, 0.9, 0.3]])
    settings = RenderSettings("albedo", background=background)
    rgb, opacity = targets.render_layers(ring, 16, 32, settings, radius=0.9)  # (K, V, H, W, 3), (K, V, H, W, 1)
    assert rgb.shape == (2, 2, 16, 16, 3) and opacity.shape == (2, 2, 16, 16, 1)
    assert torch.allclose(rgb + (1 - opacity) * background[:, None, None, :], targets.render(ring, 16, 32, settings, radius=0.9))
    assert float(opacity[:, :, 8, 8].min()) > 0.99 and float(opacity[:, :, 0, 0].max()) < 0.01
