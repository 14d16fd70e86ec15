"""dreamtime_blender/schedule_curve.py: the live t(i) / p(t) image, and its redraw cost."""

import numpy as np

from conftest import requires_bpy

pytestmark = requires_bpy


def scenario_curve():
    import statistics
    import time

    import bpy

    from in_blender import install_extension

    addon = install_extension()
    curve, schedule = addon.schedule_curve, addon.backend_link.schedule
    props = bpy.context.scene.dreamtime
    props.steps = 5000
    t_of_i, p_of_t = curve.curves(props)
    expected = schedule.timesteps("tp", 5000, 800, 500, 300, 100, 20, 980)  # the trainer's own schedule
    assert np.allclose(t_of_i * 999, expected[(np.arange(curve.HALF) * 5000) // curve.HALF])
    assert np.all(np.diff(t_of_i) <= 0) and p_of_t.max() == 1.0
    image = bpy.data.images[curve.IMAGE_NAME]
    before = np.empty(len(image.pixels), np.float32)
    image.pixels.foreach_get(before)
    costs = []
    for m1 in range(600, 1000, 10):  # an artist dragging the m1 slider
        tick = time.perf_counter()
        props.m1 = m1  # the update callback recomputes and redraws
        costs.append(time.perf_counter() - tick)
    after = np.empty(len(image.pixels), np.float32)
    image.pixels.foreach_get(after)
    props.schedule = "uniform"
    props.t_min, props.t_max = 900, 800  # invalid mid-drag: the last curve stays, no exception
    return {"median_s": statistics.median(costs), "max_s": max(costs), "changed": bool((before != after).any())}


def test_curve_redraw_costs_under_5_ms_and_follows_the_slider(blender):
    result = blender(__file__, "scenario_curve")
    print(f"schedule curve redraw: median {result['median_s'] * 1e3:.2f} ms, max {result['max_s'] * 1e3:.2f} ms")
    assert result["changed"] and result["median_s"] <= 0.005
