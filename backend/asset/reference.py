"""What an analytic target looks like as a surface: its albedo, sphere-traced, antialiased.

The trainer's target renders are volume renders of sigma = sigma_max·sigmoid(-d/beta) (target_volumes.py):
right for scoring a field that is rendered the same way, but their silhouettes carry a halo about a
pixel wide outside the surface d = 0, which a mesh rendered as a surface does not have. A mesh is
compared with the surface instead: each ray marches t <- t + d(o + t·r) (sphere tracing; the
targets' distances are exact or lower bounds, so no step passes the surface), the pixel takes the
albedo at the hit or the white background, and `supersample`² rays per pixel are averaged, as
Cycles' one-pixel box filter averages its samples.
"""

from __future__ import annotations

import torch

from ..cameras import Cameras
from ..guidance.targets import Target

HIT = 1e-4  # world units from the surface counts as on it
ITERATIONS = 128
BOUND = 1.0  # the field's cube [-1, 1]^3 lies inside the sphere of radius sqrt(3)


@torch.no_grad()
def surface_albedo(target: Target, cameras: Cameras, resolution: int, supersample: int = 4, chunk: int = 2**18) -> torch.Tensor:
    """Albedo renders (V, R, R, 3) of the target's surface over white, antialiased."""
    origins, dirs = cameras.rays(resolution * supersample)  # (V, rH, rW, 3) each
    flat_o, flat_d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    colour = torch.ones_like(flat_o)
    for start in range(0, len(flat_o), chunk):
        o, d = flat_o[start : start + chunk], flat_d[start : start + chunk]
        t = torch.clamp(-(o * d).sum(-1) - 3.0**0.5 * BOUND, min=0.0)  # (n,) start at the bounding sphere
        hit = torch.zeros(len(o), dtype=torch.bool)
        active = torch.ones(len(o), dtype=torch.bool)
        for _ in range(ITERATIONS):
            index = active.nonzero().squeeze(1)
            if len(index) == 0:
                break
            distance, _ = target.sdf_and_albedo(o[index] + t[index, None] * d[index])
            t[index] += distance
            hit[index[distance < HIT]] = True
            far = (t[index] > (o[index] * d[index]).sum(-1).abs() + 2 * 3.0**0.5 * BOUND)
            active[index[(distance < HIT) | far]] = False
        index = hit.nonzero().squeeze(1)
        if len(index):
            _, albedo = target.sdf_and_albedo(o[index] + t[index, None] * d[index])
            colour[start + index] = albedo.float()
    views, size = len(cameras), resolution * supersample
    image = colour.reshape(views, size, size, 3).permute(0, 3, 1, 2)  # (V, 3, rH, rW)
    return torch.nn.functional.avg_pool2d(image, supersample).permute(0, 2, 3, 1).contiguous()  # (V, R, R, 3)
