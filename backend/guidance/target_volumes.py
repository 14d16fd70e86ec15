"""Analytic targets voxelized once, rendered with the same volume renderer as the field (docs/ARCHITECTURE.md §5).

Each target's signed distance d(x) becomes a density sigma = sigma_max * sigmoid(-d / beta) on an
R^3 grid, with its outward normal grad d / |grad d| and (for multi-colour targets) its albedo;
`sample` reads them back trilinearly with `grid_sample`. Targets that differ only in one overall
colour share one geometry grid: render it once over black, then tint and composite per target.
"""

from __future__ import annotations

import torch

from ..cameras import Cameras
from ..grid_lookup import grid_lookup
from ..renderer import RenderSettings, normalize, render
from .targets import Target


class TargetVolume:
    """A voxelized target (or a geometry shared by single-colour targets): the renderer's Volume."""

    def __init__(self, target: Target, resolution: int = 128, bound: float = 1.0, sigma_max: float = 300.0, beta: float = 0.015,
                 device="cpu"):
        self.bound = bound
        axis = torch.linspace(-bound, bound, resolution, device=device)
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)  # (X, Y, Z, 3)
        sdf, albedo = target.sdf_and_albedo(grid.reshape(-1, 3))
        sdf = sdf.reshape(resolution, resolution, resolution)  # (X, Y, Z)
        spacing = 2 * bound / (resolution - 1)
        normals = torch.stack(torch.gradient(sdf, spacing=spacing), dim=0)  # (3, X, Y, Z)
        normals = normals / (normals.norm(dim=0, keepdim=True) + 1e-8)
        channels = [sigma_max * torch.sigmoid(-sdf / beta)[None]]
        self.single_color = target.single_color is not None
        if not self.single_color:
            channels.append(albedo.T.reshape(3, resolution, resolution, resolution))
        # grid_sample reads (x, y, z) coordinates as (W, H, D) indices: store as (C, Z, Y, X). Density (and
        # albedo) apart from the normals: every sample reads the first, only the shaded few the second.
        self.grid = torch.cat(channels, dim=0).permute(0, 3, 2, 1).contiguous()[None]  # (1, 1 or 4, Z, Y, X)
        self.normal_grid = normals.permute(0, 3, 2, 1).contiguous()[None]  # (1, 3, Z, Y, X)

    def sample(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values = grid_lookup(self.grid, points / self.bound)  # (N, 1 or 4)
        albedo = torch.ones_like(points) if self.single_color else values[:, 1:4]
        return values[:, 0], albedo

    def normals(self, points: torch.Tensor) -> torch.Tensor:
        return normalize(grid_lookup(self.normal_grid, points / self.bound))


class TargetSet:
    """K targets with mixture weights pi_k, rendered together per camera batch."""

    def __init__(self, targets: list[Target], resolution: int = 128, bound: float = 1.0, device="cpu"):
        if not targets:
            raise ValueError("TargetSet needs at least one target")
        self.targets = targets
        self.names = [t.name for t in targets]
        weights = torch.tensor([t.weight for t in targets], dtype=torch.float32, device=device)
        self.log_weights = torch.log(weights / weights.sum())  # (K,) log pi_k
        self.volumes: dict[tuple, TargetVolume] = {}
        self.geometry_of: list[tuple] = []
        for target in targets:
            key = target.geometry_key()
            if key not in self.volumes:
                self.volumes[key] = TargetVolume(target, resolution, bound, device=device)
            self.geometry_of.append(key)

    def __len__(self) -> int:
        return len(self.targets)

    @torch.no_grad()
    def render(self, cameras: Cameras, resolution: int, n_samples: int, settings: RenderSettings, radius: float = 1.0) -> torch.Tensor:
        """Images (K, B, H, W, 3) of every target at the cameras, shading and background given."""
        rgb, opacity = self.render_layers(cameras, resolution, n_samples, settings, radius)
        return rgb + (1 - opacity) * settings.background[:, None, None, :]

    @torch.no_grad()
    def render_layers(self, cameras: Cameras, resolution: int, n_samples: int, settings: RenderSettings,
                      radius: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Every target over black (K, B, H, W, 3) and its opacity (K, B, H, W, 1): composite over
        any background b as rgb + (1 - opacity) b.

        Rendered at the sample midpoints (no jitter), each shared geometry once, then tinted by the
        target's colour (settings.background is not used).
        """
        images, opacities = [], []
        cache: dict[tuple, dict[str, torch.Tensor]] = {}
        for target, key in zip(self.targets, self.geometry_of):
            if key not in cache:
                black = torch.zeros(len(cameras), 3, device=cameras.c2w.device)
                plain = RenderSettings(settings.shading, settings.light, black, settings.ambient)
                cache[key] = render(self.volumes[key], cameras, resolution, n_samples, plain, radius=radius)
            out = cache[key]
            rgb = out["rgb"]  # (B, H, W, 3) over black, albedo 1 for single-colour targets
            if target.single_color is not None and settings.shading != "textureless":
                rgb = rgb * torch.tensor(target.single_color, device=rgb.device)
            images.append(rgb)
            opacities.append(out["opacity"])
        return torch.stack(images), torch.stack(opacities)
