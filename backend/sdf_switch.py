"""A voxel-grid field turned from log density into a signed distance mid-run (config `sdf_after`).

Log density carves any topology easily but rises over a few voxels, so its level sets sit outside
the surface the images show; a signed distance s with density sdf_max_density·sigmoid(−s/sdf_beta)
has a sharp surface at s = 0. The switch converts the density's level set at CONVERSION_DENSITY to
a distance (field.convert_to_sdf) and moves it inward by the offset that makes the SDF render as
the density field did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .field import NeRFField
from .metrics import psnr

# The SDF's surface starts at this density's level set, which holds the young field's thin, unseen
# inside (sigma ~ 3-20 there; a hole in it would be a hole that no image closes); the calibration
# then moves it in to where the images put it.
CONVERSION_DENSITY = 2.0
CALIBRATION_VIEWS = 4  # random views that place the SDF's surface where the density field's showed
OFFSETS = np.linspace(-0.04, 0.2, 13)  # inward moves of the SDF surface tried (world units)
# dB; at the CPU preset's switch (step 315 of 700) "a red torus" and "a yellow cube" give 24.8 and
# 23.6, and "a torus" (8 colour modes) 25.9 since the analytic prior judges each render over two
# backgrounds (guidance/analytic.py); before that, its translucent haze gave 12.0.
MIN_PSNR = 18.0


@dataclass(frozen=True)
class SdfSwitch:
    offset: float  # inward move of the surface applied (world units)
    psnr: float  # how well the SDF renders the density field's views (dB); the switch needs MIN_PSNR
    done: bool  # False: the field stayed log density (not yet a surface)


@torch.no_grad()
def switch_to_sdf(field: NeRFField, render_views: Callable[[], torch.Tensor], smooth: float, min_psnr: float = MIN_PSNR) -> SdfSwitch:
    """Convert `field` to an SDF in place if it renders like the density field did; else leave it as it was.

    An opaque SDF shows its surface ~beta·log(sigma_max·beta) outside s = 0, and the density level
    set lies a few samples outside what the images show; one offset corrects both. It minimizes
    mean((render_views() − before)²) over OFFSETS, refined by the vertex of the parabola through
    the best and its neighbours. `smooth` blurs the grid before conversion (world units). A field
    that is still a translucent haze (a blend of modes early in a run) has no surface to convert:
    below `min_psnr` between the two renders the log density is restored.
    """
    reference = render_views()
    density = field.encoding.grid[0, 0].clone()
    field.convert_to_sdf(CONVERSION_DENSITY, smooth)

    def error(offset: float) -> float:
        field.offset_sdf(offset)
        value = float((render_views() - reference).square().mean())
        field.offset_sdf(-offset)
        return value

    errors = [error(offset) for offset in OFFSETS]
    best = int(np.argmin(errors))
    offset = float(OFFSETS[best])
    if 0 < best < len(OFFSETS) - 1:
        e_minus, e_0, e_plus = errors[best - 1 : best + 2]
        offset += 0.5 * (OFFSETS[1] - OFFSETS[0]) * (e_minus - e_plus) / max(e_minus - 2 * e_0 + e_plus, 1e-12)
    refined = error(offset)
    if refined > errors[best]:
        offset, refined = float(OFFSETS[best]), errors[best]
    quality = psnr(refined)
    if quality < min_psnr:
        field.encoding.grid[0, 0] = density
        field.sdf_mode = False
        return SdfSwitch(offset, quality, done=False)
    field.offset_sdf(offset)
    return SdfSwitch(offset, quality, done=True)
