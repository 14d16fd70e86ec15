"""dreamtime_blender/properties.py: the panel's defaults, choices and ranges are GenerationConfig's, and
to_config() sends only what the artist changed (the backend's device preset decides the rest)."""

from conftest import requires_bpy

pytestmark = requires_bpy

PRESET_DECIDES = ("steps", "resolution", "mesh_resolution", "preview_every", "samples_per_ray")


def scenario_panel_derives_from_the_config():
    import bpy

    from in_blender import install_extension

    addon = install_extension()
    config, properties = addon.backend_link.config, addon.properties
    defaults = config.GenerationConfig()
    props = bpy.context.scene.dreamtime
    mismatches = []
    for name in properties.CONFIG_FIELDS:
        rna = props.bl_rna.properties[name]
        expected = "a red torus" if name == "prompt" else getattr(defaults, name)  # the panel starts from a prompt it can make
        if (rna.default if rna.type != "FLOAT" else round(rna.default, 6)) != expected:
            mismatches.append(f"{name}: default {rna.default!r}, config {expected!r}")
        if rna.type == "ENUM" and [item.identifier for item in rna.enum_items] != list(config.CHOICES[name]):
            mismatches.append(f"{name}: choices {[item.identifier for item in rna.enum_items]}")
        if rna.type in ("INT", "FLOAT"):
            low, high = config.BOUNDS[name]
            low = defaults.guidance_scale if name == "guidance_scale" else low  # -1: the guidance's own scale
            high = min(high, properties.MAX_BLENDER_INT) if rna.type == "INT" else high
            if (round(rna.hard_min, 6), round(rna.hard_max, 6)) != (round(low, 6), round(high, 6)):
                mismatches.append(f"{name}: range {rna.hard_min}..{rna.hard_max}, config {low}..{high}")
    prefs = addon.client.preferences()
    device = prefs.bl_rna.properties["device"]
    if [item.identifier for item in device.enum_items] != list(config.CHOICES["device"]) or device.default != defaults.device:
        mismatches.append("preferences: device")
    if prefs.bl_rna.properties["model"].default != defaults.model:
        mismatches.append("preferences: model")

    fresh = props.to_config()
    fresh_with_prefs = props.check(prefs)
    props.steps, props.m1, props.schedule = 123, 750.0, "uniform"
    changed = props.to_config()
    history = dict(changed)
    props.steps = defaults.steps  # back at the default: not sent again
    back = props.to_config()
    props.steps, props.seed, props.resolution = 9, 5, 32
    props.load_config(history)  # re-use a history entry: what it lacks goes back to the default
    loaded = {name: getattr(props, name) for name in ("steps", "m1", "schedule", "seed", "resolution")}
    return {"mismatches": mismatches, "fresh": fresh, "fresh_with_prefs": sorted(fresh_with_prefs), "changed": changed, "back": back,
            "loaded": loaded, "default_resolution": defaults.resolution}


def test_panel_defaults_choices_and_ranges_are_the_configs_and_only_changes_are_sent(blender):
    result = blender(__file__, "scenario_panel_derives_from_the_config")
    assert result["mismatches"] == []
    assert result["fresh"] == {"prompt": "a red torus"}
    assert not set(PRESET_DECIDES) & set(result["fresh_with_prefs"]) and {"device", "model", "out"} <= set(result["fresh_with_prefs"])
    assert result["changed"] == {"prompt": "a red torus", "steps": 123, "m1": 750.0, "schedule": "uniform"}
    assert result["back"] == {"prompt": "a red torus", "m1": 750.0, "schedule": "uniform"}
    assert result["loaded"] == {"steps": 123, "m1": 750.0, "schedule": "uniform", "seed": 0, "resolution": result["default_resolution"]}
