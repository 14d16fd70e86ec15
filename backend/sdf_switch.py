"""A voxel-grid field turned from log density into a signed distance mid-run (config `sdf_after`).

Log density carves any topology easily but rises over a few voxels, so its level sets sit outside
the surface the images show; a signed distance s with density sdf_max_density·sigmoid(−s/sdf_beta)
has a sharp surface at s = 0. The switch converts the density's level set at CONVERSION_DENSITY to
a distance (field.convert_to_sdf) and moves it inward by the offset that makes the SDF render as
the density field did.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .field import NeRFField

# The SDF's surface starts at this density's level set, which holds the young field's thin, unseen
# inside (sigma ~ 3-20 there; a hole in it would be a hole that no image closes); the calibration
# then moves it in to where the images put it.
CONVERSION_DENSITY = 2.0
CALIBRATION_VIEWS = 4  # random views that place the SDF's surface where the density field's showed
OFFSETS = np.linspace(-0.04, 0.2, 13)  # inward moves of the SDF surface tried (world units)


@torch.no_grad()
def switch_to_sdf(field: NeRFField, render_views: Callable[[], torch.Tensor], smooth: float) -> float:
    """Convert `field` to an SDF in place; return the inward offset applied (world units).

    An opaque SDF shows its surface ~beta·log(sigma_max·beta) outside s = 0, and the density level
    set lies a few samples outside what the images show; one offset corrects both. It minimizes
    mean((render_views() − before)²) over OFFSETS, refined by the vertex of the parabola through
    the best and its neighbours. `smooth` blurs the grid before conversion (world units).
    """
    reference = render_views()
    field.convert_to_sdf(CONVERSION_DENSITY, smooth)
    errors = []
    for offset in OFFSETS:
        field.offset_sdf(offset)
        errors.append(float((render_views() - reference).square().mean()))
        field.offset_sdf(-offset)
    best = int(np.argmin(errors))
    offset = float(OFFSETS[best])
    if 0 < best < len(OFFSETS) - 1:
        e_minus, e_0, e_plus = errors[best - 1 : best + 2]
        offset += 0.5 * (OFFSETS[1] - OFFSETS[0]) * (e_minus - e_plus) / max(e_minus - 2 * e_0 + e_plus, 1e-12)
    field.offset_sdf(offset)
    return offset
