"""The NeRF that is optimized: encoding -> small MLP -> density and albedo (DESIGN §6).

    sigma(x)  = softplus(raw(x) + blob(x))      blob(x) = lambda * (1 - |x| / r_blob)  (Magic3D's bias)
    albedo(x) = sigmoid(mlp(x)[1:4])
    n(x)      = -grad sigma / |grad sigma|      by forward differences of step `normal_eps`

The density bias starts the optimization from a soft ball at the centre, as DreamFusion does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .encoding import make_encoding
from .renderer import normalize


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
        blob_density: float = 10.0,
        blob_radius: float = 0.5,
        normal_eps: float = 0.02,
        learned_background: bool = False,
        encoding_kwargs: dict | None = None,
    ):
        super().__init__()
        self.bound, self.blob_density, self.blob_radius, self.normal_eps = bound, blob_density, blob_radius, normal_eps
        self.encoding = make_encoding(encoding, implementation, **(encoding_kwargs or {}))
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
        return F.softplus(self._raw(points)[:, 0] + self._blob(points))

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self._raw(points)[:, 1:])  # (N, 3)

    def sample(self, points: torch.Tensor, need_normals: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Density (N,), albedo (N, 3) and, for shaded renders, normals (N, 3)."""
        raw = self._raw(points)
        sigma = F.softplus(raw[:, 0] + self._blob(points))
        albedo = torch.sigmoid(raw[:, 1:])
        normals = None
        if need_normals:
            offsets = self.normal_eps * torch.eye(3, device=points.device)  # (3, 3)
            shifted = (points[:, None, :] + offsets[None]).reshape(-1, 3)  # (3N, 3)
            grad = (self.density(shifted).reshape(-1, 3) - sigma[:, None]) / self.normal_eps  # (N, 3)
            normals = normalize(-grad)
        return sigma, albedo, normals

    def background(self, dirs: torch.Tensor) -> torch.Tensor:
        if self.background_net is None:
            return torch.ones_like(dirs)  # white
        return self.background_net(dirs)
