"""The NeRF that is optimized: encoding -> small MLP -> density and albedo (DESIGN §6).

    sigma(x)  = exp(raw(x)[0] + blob(x))        blob(x) = lambda * (1 - |x| / r_blob)  (Magic3D's bias)
    albedo(x) = sigmoid(raw(x)[1:4])            raw = mlp(encoding(x)), or the encoding itself
                                                when hidden = 0 (a plain voxel grid: fast on CPU)
    n(x)      = -grad sigma / |grad sigma|      by forward differences of step `normal_eps`

The density bias starts the optimization from a soft ball at the centre, as DreamFusion does.
"""

from __future__ import annotations

import torch
from torch import nn

from .encoding import make_encoding
from .renderer import normalize

MAX_LOG_DENSITY = 15.0  # exp() clamped here: opaque enough, never overflows


class BackgroundNetwork(nn.Module):
    """A colour per view direction (DreamFusion's learned background), from a few sinusoids."""

    def __init__(self, n_frequencies: int = 4, hidden: int = 32):
        super().__init__()
        self.frequencies = 2.0 ** torch.arange(n_frequencies)
        self.mlp = nn.Sequential(nn.Linear(3 + 6 * n_frequencies, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        scaled = dirs[..., None] * self.frequencies.to(dirs.device)  # (R, 3, F)
        features = torch.cat([dirs, scaled.sin().flatten(1), scaled.cos().flatten(1)], dim=-1)
        return torch.sigmoid(self.mlp(features))  # (R, 3)


class NeRFField(nn.Module):
    def __init__(
        self,
        encoding: str = "hashgrid",
        implementation: str = "auto",
        hidden: int = 64,
        bound: float = 1.0,
        blob_density: float = 5.0,
        blob_radius: float = 0.5,
        normal_eps: float = 0.02,
        learned_background: bool = False,
        encoding_kwargs: dict | None = None,
    ):
        super().__init__()
        self.bound, self.blob_density, self.blob_radius, self.normal_eps = bound, blob_density, blob_radius, normal_eps
        encoding_kwargs = dict(encoding_kwargs or {})
        if hidden == 0:  # the encoding's own features are raw density and albedo
            encoding_kwargs["n_features"] = 4
        self.encoding = make_encoding(encoding, implementation, **encoding_kwargs)
        if hidden == 0:
            self.mlp = nn.Identity()
        else:
            self.mlp = nn.Sequential(nn.Linear(self.encoding.n_output_dims, hidden), nn.ReLU(), nn.Linear(hidden, 4))
        self.background_net = BackgroundNetwork() if learned_background else None

    def encoding_parameters(self) -> list[nn.Parameter]:
        return list(self.encoding.parameters())

    def network_parameters(self) -> list[nn.Parameter]:
        params = list(self.mlp.parameters())
        if self.background_net is not None:
            params += list(self.background_net.parameters())
        return params

    def _raw(self, points: torch.Tensor) -> torch.Tensor:
        unit = (points / self.bound + 1) / 2  # (N, 3) in [0, 1]
        return self.mlp(self.encoding(unit))  # (N, 4)

    def _blob(self, points: torch.Tensor) -> torch.Tensor:
        return self.blob_density * (1 - points.norm(dim=-1) / self.blob_radius)  # (N,)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """sigma (N,) at world points (N, 3)."""
        return self._activate_density(self._raw(points)[:, 0], points)

    def _activate_density(self, raw_density: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return torch.exp((raw_density + self._blob(points)).clamp(max=MAX_LOG_DENSITY))  # (N,)

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self._raw(points)[:, 1:])  # (N, 3)

    def sample(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density (N,) and albedo (N, 3) at world points (N, 3)."""
        raw = self._raw(points)
        return self._activate_density(raw[:, 0], points), torch.sigmoid(raw[:, 1:])

    def normals(self, points: torch.Tensor) -> torch.Tensor:
        """n = -grad sigma / |grad sigma| (M, 3), by forward differences of step normal_eps."""
        offsets = torch.cat([torch.zeros(1, 3, device=points.device), self.normal_eps * torch.eye(3, device=points.device)])
        shifted = (points[:, None, :] + offsets[None]).reshape(-1, 3)  # (4M, 3)
        sigma = self.density(shifted).reshape(-1, 4)  # (M, 4)
        grad = (sigma[:, 1:] - sigma[:, :1]) / self.normal_eps  # (M, 3)
        return normalize(-grad)

    def total_variation(self) -> torch.Tensor:
        """Mean squared difference of neighbouring voxels (Plenoxels' TV prior); 0 without a voxel grid."""
        grid = getattr(self.encoding, "grid", None)
        if grid is None:
            return torch.zeros((), device=next(self.parameters()).device)
        dz = grid[:, :, 1:] - grid[:, :, :-1]
        dy = grid[:, :, :, 1:] - grid[:, :, :, :-1]
        dx = grid[..., 1:] - grid[..., :-1]
        return (dz.square().mean() + dy.square().mean() + dx.square().mean()) / 3

    def background(self, dirs: torch.Tensor) -> torch.Tensor:
        if self.background_net is None:
            return torch.ones_like(dirs)  # white
        return self.background_net(dirs)
