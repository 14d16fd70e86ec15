"""The panel beyond one prompt (issue 12): Start from Selected Object + Strength (selection.py), Refine in the
History, Variations and their import, and the schedule curve's skipped part; real backend, tiny runs."""

import json
import os

import numpy as np

from conftest import requires_bpy

pytestmark = requires_bpy


def _world_bounds(obj) -> np.ndarray:
    import bpy

    bpy.context.view_layer.update()  # matrix_world follows a location set since the last update (Blender does it before a redraw)
    corners = np.array([obj.matrix_world @ v.co for v in obj.data.vertices])
    return np.stack([corners.min(0), corners.max(0)])


# ---------------------------------------------------------------------- scenarios (run in Blender)
def scenario_start_from_selected_then_refine():
    import bpy

    from in_blender import install_extension, pump_until, tiny_run

    addon = install_extension()
    client, props = addon.client, bpy.context.scene.dreamtime
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(3.0, 0.0, 1.0))
    source = bpy.context.active_object
    source.name = "blockout"
    source.modifiers.new("bevel", "BEVEL").width = 0.1  # exported evaluated: the bevel is in the file
    tiny_run(props, steps=12, prompt="a red cube")
    props.start_from_selected, props.strength = True, 0.5
    assert bpy.ops.dreamtime.generate() == {"FINISHED"}
    exported = props.init_mesh_path
    with open(exported, encoding="utf-8") as handle:
        vertices = np.array([[float(v) for v in line.split()[1:4]] for line in handle if line.startswith("v ")])
    pump_until(client, lambda: not client.busy(), timeout=240)
    assert props.status.startswith("done") and not props.error, (props.status, props.error, props.error_hint)
    result = bpy.data.objects["a red cube"]
    config = json.loads(props.history[0].config_json)
    with open(os.path.join(props.run_dir, "metrics.json"), encoding="utf-8") as handle:
        start_step = json.load(handle)["init_mesh"]["start_step"]
    first = {"exported_bounds": [vertices.min(0).tolist(), vertices.max(0).tolist()], "exported_vertices": len(vertices),
             "result_bounds": _world_bounds(result).tolist(), "source_hidden": source.hide_get(), "strength": config["strength"],
             "start_step": start_step, "result_source": result.get("dreamtime_source")}
    # Refine: below the steps done is refused in the panel; above, a new folder beside the run
    props.refine_steps = 12
    try:  # an operator's ERROR report raises when called from a script
        bpy.ops.dreamtime.refine(history_index=0)
    except RuntimeError:
        pass
    refused = props.error
    props.refine_steps = 16
    assert bpy.ops.dreamtime.refine(history_index=0) == {"FINISHED"}
    pump_until(client, lambda: not client.busy(), timeout=240)
    assert props.status.startswith("done") and not props.error, (props.status, props.error, props.error_hint)
    refined = props.history[1]
    with open(os.path.join(refined.run_dir, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    objects = [o for o in bpy.data.objects if o.name.startswith("a red cube")]
    return {**first, "refused": refused, "refined_dir": refined.run_dir, "first_dir": props.history[0].run_dir,
            "refined_steps": metrics["step"][-4:], "refine": metrics["refine"], "refined_bounds": _world_bounds(objects[-1]).tolist()}


def scenario_variations_and_import():
    import bpy

    from in_blender import install_extension, pump_until, tiny_run

    addon = install_extension()
    client, props = addon.client, bpy.context.scene.dreamtime
    tiny_run(props, steps=6, prompt="a red torus or a blue torus")
    props.variations = 2
    assert bpy.ops.dreamtime.generate() == {"FINISHED"}
    pump_until(client, lambda: not client.busy(), timeout=240)
    assert props.status.startswith("done") and not props.error, (props.status, props.error, props.error_hint)
    rows = addon.variations.rows(props)
    sheet = bpy.data.images[addon.variations.IMAGE_NAME]
    auto_imported = [o.name for o in bpy.data.objects if o.name.startswith("a red torus or a blue torus")]
    assert bpy.ops.dreamtime.import_variation(index=1) == {"FINISHED"}
    imported = [o.name for o in bpy.data.objects if "seed 1" in o.name]
    # the chosen take pushed further: Refine on its row (below its steps refused), and Refine in the History refused
    refused = []
    for index in ({"variation_index": 1}, {"history_index": 0}):
        props.refine_steps = 6 if "variation_index" in index else 8
        try:  # an operator's ERROR report raises when called from a script
            bpy.ops.dreamtime.refine(**index)
        except RuntimeError:
            pass
        refused.append(props.error)
    props.refine_steps, props.error = 8, ""
    assert bpy.ops.dreamtime.refine(variation_index=1) == {"FINISHED"}
    pump_until(client, lambda: not client.busy(), timeout=240)
    assert props.status.startswith("done") and not props.error, (props.status, props.error, props.error_hint)
    refined = props.history[1]
    with open(os.path.join(refined.run_dir, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    with open(os.path.join(refined.run_dir, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    return {"rows": rows, "sheet_size": list(sheet.size), "auto_imported": auto_imported, "summary": props.variations_summary,
            "imported": imported, "history_variations": props.history[0].variations, "refused": refused,
            "refined_dir": refined.run_dir, "refined_steps": metrics["step"], "steps_before": metrics["refine"]["steps_before"],
            "refined_seed": config["seed"],
            "refined_objects": [o.name for o in bpy.data.objects if o.name.startswith("a red torus or a blue torus")]}


def scenario_start_from_nothing_selected():
    import bpy

    from in_blender import install_extension, tiny_run

    addon = install_extension()
    props = bpy.context.scene.dreamtime
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    tiny_run(props)
    props.start_from_selected = True
    try:  # an operator's ERROR report raises when called from a script
        bpy.ops.dreamtime.generate()
    except RuntimeError as exc:
        assert "select a mesh object" in str(exc)
    curve = addon.schedule_curve
    props.steps, props.strength = 700, 0.4
    first = curve.first_column(props)
    image = bpy.data.images[curve.IMAGE_NAME]
    pixels = np.empty(len(image.pixels), np.float32)
    image.pixels.foreach_get(pixels)
    left = pixels.reshape(curve.HEIGHT, curve.WIDTH, 4)[:, : curve.HALF, :3]
    dim = np.all(np.isclose(left, curve.SKIPPED_COLOUR[:3], atol=0.01), axis=-1).any(0)  # (HALF,) columns drawn dim
    bright = np.all(np.isclose(left, curve.T_COLOUR[:3], atol=0.01), axis=-1).any(0)
    return {"error": props.error, "running": addon.client.is_running(), "first": first, "dim_columns": np.flatnonzero(dim).tolist(),
            "bright_from": int(np.flatnonzero(bright).min()),
            "remote_names": [addon.remote.local_name("mesh", p) for p in ("/r/v/s3/mesh.glb", "/r/v/s4/mesh.glb", "/r/run/mesh.glb")]}


# ---------------------------------------------------------------------- tests
def test_start_from_the_selected_object_lands_in_its_place_and_refine_continues_it(blender):
    result = blender("test_beyond_one_prompt.py", "scenario_start_from_selected_then_refine", timeout=600)
    low, high = np.array(result["exported_bounds"])
    assert np.allclose(low, [2.5, -0.5, 0.5], atol=1e-3) and np.allclose(high, [3.5, 0.5, 1.5], atol=1e-3)  # world, z up
    assert result["exported_vertices"] > 8  # the bevel modifier was applied
    assert result["strength"] == 0.5 and result["start_step"] == 6
    assert np.allclose(result["result_bounds"], result["exported_bounds"], atol=0.25)  # 24³ voxels: 0.12 world units each
    assert result["source_hidden"] and result["result_source"] == "blockout"
    assert "must go past the 12 steps" in result["refused"]
    assert result["refined_dir"] == result["first_dir"] + "-refine-16"
    assert result["refined_steps"] == [12, 13, 14, 15] and result["refine"]["steps_before"] == 12
    assert np.allclose(result["refined_bounds"], result["exported_bounds"], atol=0.3)  # a refine lands in place too


def test_variations_show_a_sheet_and_import_the_chosen_one(blender):
    result = blender("test_beyond_one_prompt.py", "scenario_variations_and_import", timeout=600)
    assert [row["seed"] for row in result["rows"]] == [0, 1] and all(row["mesh"] for row in result["rows"])
    assert all(row["label"] in ("red torus", "blue torus") for row in result["rows"])
    assert result["sheet_size"] == [2 * 160, 160 + 30]
    assert result["auto_imported"] == [] and result["imported"] and result["history_variations"] == 2
    assert "distinct targets" in result["summary"]
    assert "must go past the 6 steps" in result["refused"][0] and "Variations panel" in result["refused"][1]
    assert [row["steps_done"] for row in result["rows"]] == [6, 6]
    assert result["refined_dir"] == result["rows"][1]["run_dir"] + "-refine-8"  # beside seed 1's folder, inside the variations run
    assert result["refined_steps"] == list(range(8)) and result["steps_before"] == 6 and result["refined_seed"] == 1
    # the refined take is imported (the variations themselves were not), beside the one imported by hand
    assert sorted(result["refined_objects"]) == ["a red torus or a blue torus", "a red torus or a blue torus (seed 1)"]


def test_nothing_selected_is_a_clear_error_and_the_curve_dims_the_skipped_steps(blender):
    result = blender("test_beyond_one_prompt.py", "scenario_start_from_nothing_selected")
    assert "select a mesh object" in result["error"] and not result["running"]
    assert result["first"] == 77  # start_step(700, 0.4) = 420 of 700 -> column ceil(420 * 128 / 700)
    assert result["dim_columns"] and max(result["dim_columns"]) < result["first"] <= result["bright_from"] + 1
    assert result["remote_names"] == ["s3/mesh.glb", "s4/mesh.glb", "mesh.glb"]  # a remote variations run keeps every mesh
