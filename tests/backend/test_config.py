"""backend/config.py: every validation path names its field; JSON round trip."""

import dataclasses
import json

import pytest

from backend import schedule
from backend.config import BOUNDS, CHOICES, CPU_PRESET, ConfigError, GenerationConfig, preset_for


def valid(**changes):
    return GenerationConfig(prompt="a red torus").replace(**changes)


def test_defaults_are_valid_and_paper_like():
    cfg = valid().validate()
    assert (cfg.m1, cfg.m2, cfg.s1, cfg.s2, cfg.t_min, cfg.t_max) == (800, 500, 300, 100, 20, 980)
    assert cfg.schedule == "tp"


@pytest.mark.parametrize(
    "changes, field, words",
    [
        ({"prompt": ""}, "prompt", "empty"),
        ({"prompt": "   \t"}, "prompt", "empty"),
        ({"prompt": "x" * 20_001}, "prompt", "at most 20000"),
        ({"prompt": "a\x00b"}, "prompt", "NUL"),
        ({"m1": 400, "m2": 600}, "m2", "<= m1"),
        ({"s1": 0}, "s1", "> 0"),
        ({"s2": -5}, "s2", "> 0"),
        ({"t_min": 500, "t_max": 400}, "t_min", "< t_max"),
        ({"t_min": 0}, "t_min", "from 1"),
        ({"t_max": 1000}, "t_max", "to 999"),
        ({"steps": 0}, "steps", "from 1"),
        ({"mesh_faces": 99}, "mesh_faces", "0 (keep every face) or from 100"),
        ({"mesh_faces": -1}, "mesh_faces", "from 100"),
        ({"mesh_faces": 2.5}, "mesh_faces", "from 100"),
        ({"texture_size": 1000}, "texture_size", "power of two from 256 to 8192"),
        ({"texture_size": 128}, "texture_size", "power of two"),
        ({"texture_size": 16384}, "texture_size", "power of two"),
        ({"texture_size": True}, "texture_size", "power of two"),
        ({"vertex_colors": "yes"}, "vertex_colors", "true or false"),
        ({"steps": -3}, "steps", "from 1"),
        ({"steps": 2.5}, "steps", "integer"),
        ({"seed": -1}, "seed", "from 0"),
        ({"seed": 2**32}, "seed", "4294967295"),
        ({"schedule": "cosine"}, "schedule", "tp, uniform, linear"),
        ({"guidance": "dalle"}, "guidance", "analytic"),
        ({"guidance_scale": -2.0}, "guidance_scale", "between 0 and 1000"),
        ({"resolution": 50}, "resolution", "multiple of 8"),
        ({"resolution": 8}, "resolution", "from 16"),
        ({"m1": float("nan")}, "m1", "number"),
        ({"export": ("glb", "fbx")}, "export", "glb, ply, obj"),
        ({"device": "tpu"}, "device", "cpu, cuda"),
        ({"albedo_prob": 0.8, "textureless_prob": 0.5}, "albedo_prob", "at most 1"),
        ({"model": " "}, "model", "hub id"),
        ({"sdf_after": 1.5}, "sdf_after", "from 0 to 1"),
        ({"sdf_after": -0.1}, "sdf_after", "share of the steps"),
        ({"sdf_beta": 0.0}, "sdf_beta", "0.0001 to 0.5"),
        ({"sdf_max_density": 0.5}, "sdf_max_density", "from 1 to 100000"),
        ({"lambda_eikonal": -1.0}, "lambda_eikonal", "from 0"),
        ({"weights": "pickle"}, "weights", "any, safetensors"),
        ({"targets": 3}, "targets", "path"),
        ({"targets": {"shapes": []}}, "targets", '{"targets": [...]}'),
        ({"targets": []}, "targets", "none empty"),
        ({"targets": ["cube"]}, "targets", "target objects"),
        ({"targets": [{"parts": []}] * 65}, "targets", "at most 64"),
        ({"targets": [{"parts": [{}] * 65}]}, "targets", "at most 64"),
    ],
)
def test_bad_values_name_the_field(changes, field, words):
    with pytest.raises(ConfigError) as info:
        valid(**changes).validate()
    assert info.value.field == field
    assert words in str(info.value)
    assert str(info.value).startswith(field + ":")


def test_targets_are_a_path_or_the_object_itself():
    data = {"targets": [{"name": "red cube", "parts": [{"shape": "cube", "color": "red"}]}]}
    for targets in ("t.json", data, data["targets"]):
        cfg = valid(targets=targets).validate()
        assert GenerationConfig.from_dict(json.loads(cfg.to_json())).validate() == cfg  # config.json keeps them


def test_unicode_prompt_is_valid():
    valid(prompt="un tore rouge ✨ 赤いトーラス").validate()


def test_json_round_trip():
    cfg = valid(seed=7, schedule="uniform", export=("glb", "ply")).validate()
    again = GenerationConfig.from_dict(json.loads(cfg.to_json())).validate()
    assert again == cfg


def test_unknown_field_is_an_error():
    with pytest.raises(ConfigError, match="unknown config field") as info:
        GenerationConfig.from_dict({"prompt": "x", "stepz": 3})
    assert info.value.field == "stepz"


def test_export_accepts_comma_string():
    assert GenerationConfig.from_dict({"prompt": "x", "export": "glb, obj"}).export == ("glb", "obj")


def test_cpu_preset_is_valid_and_only_on_cpu():
    assert preset_for("cuda") == {}
    valid(**preset_for("cpu")).validate()
    assert preset_for("cpu") == CPU_PRESET


def test_the_schedule_defaults_are_the_schedule_modules():
    cfg = GenerationConfig()
    prior = (schedule.M1, schedule.M2, schedule.S1, schedule.S2, schedule.T_MIN, schedule.T_MAX)
    assert (cfg.m1, cfg.m2, cfg.s1, cfg.s2, cfg.t_min, cfg.t_max) == prior
    assert CHOICES["schedule"] == schedule.SCHEDULE_KINDS


def test_choices_and_bounds_are_what_validate_enforces():
    fields = {f.name: f for f in dataclasses.fields(GenerationConfig)}
    assert set(CHOICES) <= set(fields) and set(BOUNDS) <= set(fields)
    for name, options in CHOICES.items():
        assert getattr(GenerationConfig(), name) in options, name
        with pytest.raises(ConfigError) as info:
            valid(**{name: "no-such-" + name}).validate()
        assert info.value.field == name and all(option in str(info.value) for option in options)
    for name, (low, high) in BOUNDS.items():
        step = 1 if fields[name].type == "int" else max(abs(high), 1) * 1e-3
        for outside in (low - step if name != "guidance_scale" else low - 2, high + step):
            with pytest.raises(ConfigError) as info:
                valid(**{name: outside}).validate()
            assert info.value.field == name, (name, outside)
def test_face_budget_and_texture_size_edges_are_valid():
    assert valid(mesh_faces=0, texture_size=256).validate().mesh_faces == 0
    assert valid(mesh_faces=100, texture_size=8192).validate().texture_size == 8192
    assert (GenerationConfig().mesh_faces, GenerationConfig().texture_size) == (20000, 1024)
