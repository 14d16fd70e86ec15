"""The live schedule plot: t(i) and p(t) drawn into the "DreamTime Schedule" image.

Computed with the backend's own numpy schedule code (backend/schedule.py), so what the panel
shows is exactly what the trainer will use. Left half: t(i) over the steps i (t_max at the top);
when the run starts from the selected object at strength S < 1, the steps it skips
(schedule.start_step) are drawn dim and only the part that will run is bright.
Right half: p(t) over t = 0..T-1 (TP-SDS; flat for uniform, 1/N spikes for linear). A redraw is a
few numpy operations on a 256x96 image plus one `foreach_set`.
"""

from __future__ import annotations

import numpy as np

from . import backend_link

IMAGE_NAME = "DreamTime Schedule"
WIDTH, HEIGHT = 256, 96
HALF = WIDTH // 2
BACKGROUND = (0.12, 0.12, 0.12, 1.0)
T_COLOUR = (0.95, 0.55, 0.15, 1.0)
P_COLOUR = (0.35, 0.7, 1.0, 1.0)
GRID_COLOUR = (0.25, 0.25, 0.25, 1.0)
SKIPPED_COLOUR = (0.4, 0.3, 0.22, 1.0)  # t(i) of the steps a run from the selected object does not take


def first_column(props) -> int:
    """The first of the HALF t(i) columns the run will take: 0, or where start_step puts a run from the selected object."""
    if not getattr(props, "start_from_selected", False):
        return 0
    steps = max(int(props.steps), 1)
    return int(np.ceil(backend_link.schedule.start_step(steps, float(props.strength)) * HALF / steps))


def curves(props) -> tuple[np.ndarray, np.ndarray]:
    """(t(i) resampled to HALF columns, p(t) resampled to HALF columns), both scaled to 0..1."""
    sched = backend_link.schedule
    steps = max(int(props.steps), 1)
    t_min, t_max = int(props.t_min), max(int(props.t_max), int(props.t_min) + 1)
    t = sched.timesteps(props.schedule, steps, props.m1, props.m2, props.s1, props.s2, t_min, t_max, int(props.seed))
    columns = np.minimum((np.arange(HALF) * steps) // HALF, steps - 1)
    t_of_i = t[columns] / (sched.NUM_TRAIN_TIMESTEPS - 1)
    if props.schedule == "tp":
        ts, p = sched.tp_density(props.m1, props.m2, props.s1, props.s2, t_min, t_max)
    else:
        ts = np.arange(t_min, t_max + 1)
        p = np.bincount(t - t_min, minlength=len(ts)).astype(np.float64)
    density = np.zeros(sched.NUM_TRAIN_TIMESTEPS)
    density[ts] = p
    binned = density[: HALF * (len(density) // HALF)].reshape(HALF, -1).sum(1)
    return t_of_i, binned / max(binned.max(), 1e-12)


def rasterize(t_of_i: np.ndarray, p_of_t: np.ndarray, scatter: bool = False, first: int = 0) -> np.ndarray:
    """(HEIGHT, WIDTH, 4) float32, bottom row first (Blender's order); `scatter`: dots, not a line;
    the t(i) columns before `first` dim (steps the run skips)."""
    image = np.empty((HEIGHT, WIDTH, 4), np.float32)
    image[:] = BACKGROUND
    image[:, HALF - 1 : HALF + 1] = GRID_COLOUR
    rows = np.arange(HEIGHT)[:, None]
    y = np.round(t_of_i * (HEIGHT - 1)).astype(int)  # a line: join each column to the previous one
    previous = np.concatenate([y[:1], y[:-1]])
    low, high = np.minimum(y, previous), np.maximum(y, previous)
    if scatter:
        low, high = y, y
    curve = (rows >= low) & (rows <= high)  # (HEIGHT, HALF)
    runs = np.arange(HALF) >= first
    image[:, :HALF][curve & runs] = T_COLOUR
    image[:, :HALF][curve & ~runs] = SKIPPED_COLOUR
    bars = np.round(p_of_t * (HEIGHT - 1)).astype(int)
    image[:, HALF:][(rows <= bars) & (p_of_t > 0)] = P_COLOUR
    return image


def update(props) -> None:
    """Recompute and redraw the curve image for the panel's current settings."""
    import bpy

    try:
        pixels = rasterize(*curves(props), scatter=props.schedule == "uniform", first=first_column(props))
    except (ValueError, FloatingPointError):  # e.g. t_min >= t_max mid-drag: keep the last curve
        return
    image = bpy.data.images.get(IMAGE_NAME)
    if image is None or tuple(image.size) != (WIDTH, HEIGHT):
        if image is not None:
            bpy.data.images.remove(image)
        image = bpy.data.images.new(IMAGE_NAME, WIDTH, HEIGHT, alpha=True)
    image.pixels.foreach_set(pixels.ravel())
    image.update()
    if image.preview is not None:
        image.preview.reload()
