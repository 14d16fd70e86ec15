"""Trilinear lookup of a voxel grid at many points, fast on CPU.

`torch.nn.functional.grid_sample` parallelizes its CPU backward (and much of its forward) over the
batch axis only, so one (1, C, D, H, W) grid read at N points runs on one core. Splitting the
points into one batch item per thread over an expanded (not copied) grid uses them all: on 2
cores this measured 3x faster forward and 1.5x faster backward for 262k points on a 96^3 grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def grid_lookup(grid: torch.Tensor, coords: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Values (N, C) of grid (1, C, D, H, W) at coords (N, 3) in [-1, 1], ordered (x, y, z) -> (W, H, D)."""
    n, channels = coords.shape[0], grid.shape[1]
    splits = torch.get_num_threads() if coords.device.type == "cpu" and n >= 4096 else 1
    padded = -n % splits
    if padded:
        coords = torch.cat([coords, coords.new_zeros(padded, 3)])
    batch = grid.expand(splits, -1, -1, -1, -1)
    values = F.grid_sample(batch, coords.reshape(splits, -1, 1, 1, 3), mode="bilinear", padding_mode=padding_mode, align_corners=True)
    values = values.reshape(splits, channels, -1).permute(0, 2, 1).reshape(-1, channels)  # (N + pad, C)
    return values[:n]
