"""The NeRF that is optimized: encoding -> small MLP -> density and albedo (docs/ARCHITECTURE.md §4.3).

    sigma(x)  = exp(raw(x)[0] + blob(x))        blob(x) = lambda * (1 - |x| / r_blob)  (Magic3D's bias)
    albedo(x) = sigmoid(raw(x)[1:4])            raw = mlp(encoding(x)), or the encoding itself
                                                when hidden = 0 (a plain voxel grid: fast on CPU)
    n(x)      = -grad sigma / |grad sigma|      by forward differences of step `normal_eps`

The density bias starts the optimization from a soft ball at the centre, as DreamFusion does.

SDF mode (a plain voxel grid only, switched on by `convert_to_sdf`): the density channel holds a
signed distance s (negative inside) and

    sigma(x)  = sigma_max * sigmoid(-s(x) / beta)      s(x) = raw(x)[0] / SDF_GRID_SCALE
    n(x)      = grad s / |grad s|

a logistic density of the distance (as in NeuS, Wang et al. 2021, Eq. 2-3), so the surface is the
level set s = 0, an edge of width ~beta, opaque within one sample inside. A log density cannot say
where its surface is: images cannot tell a ramp over a few samples from a step, and any density
threshold lands a few samples outside in places and leaves holes in others.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from .encoding import hashgrid_state_for, make_encoding
from .grid_priors import eikonal, total_variation
from .renderer import normalize

MAX_LOG_DENSITY = 15.0  # exp() clamped here: opaque enough, never overflows
SDF_GRID_SCALE = 10.0  # grid units per world unit of s: the grid's one Adam lr moves s 10x slower than albedo
EIKONAL_BAND = 0.1  # world units: the eikonal prior acts on voxels this close to the SDF's surface


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
        sdf_beta: float = 0.015,
        sdf_max_density: float = 300.0,
        hashgrid_dtype: str = "fp32",
    ):
        super().__init__()
        self.bound, self.blob_density, self.blob_radius, self.normal_eps = bound, blob_density, blob_radius, normal_eps
        self.sdf_beta, self.sdf_max_density = sdf_beta, sdf_max_density
        self.sdf_mode = False  # density channel holds log density (False) or a signed distance (True)
        encoding_kwargs = dict(encoding_kwargs or {})
        if hidden == 0:  # the encoding's own features are raw density and albedo
            encoding_kwargs["n_features"] = 4
        self.encoding = make_encoding(encoding, implementation, hashgrid_dtype, **encoding_kwargs)
        if hidden == 0:
            self.mlp = nn.Identity()
        else:
            self.mlp = nn.Sequential(nn.Linear(self.encoding.n_output_dims, hidden), nn.ReLU(), nn.Linear(hidden, 4))
        self.background_net = BackgroundNetwork() if learned_background else None

    def matching_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A saved state_dict of a field, in this field's layout: a hash grid trained with tcnn loads into
        the torch grid and back (encoding.hashgrid_state_for); any other state passes through."""
        return hashgrid_state_for(self.encoding, state, prefix="encoding.")

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

    def _raw_density(self, points: torch.Tensor) -> torch.Tensor:
        """_raw(points)[:, 0] (N,); a plain voxel grid reads only its density channel."""
        if self.is_voxel_grid():
            return self.encoding.first_feature((points / self.bound + 1) / 2)
        return self._raw(points)[:, 0]

    def blob(self, points: torch.Tensor) -> torch.Tensor:
        """The centre's log-density bias (N,) at world points (N, 3), added to raw log density."""
        return self.blob_density * (1 - points.norm(dim=-1) / self.blob_radius)  # (N,)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """sigma (N,) at world points (N, 3)."""
        return self._activate_density(self._raw_density(points), points)

    def _activate_density(self, raw_density: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        if self.sdf_mode:
            return self.sdf_max_density * torch.sigmoid(-raw_density / (SDF_GRID_SCALE * self.sdf_beta))  # (N,)
        return torch.exp((raw_density + self.blob(points)).clamp(max=MAX_LOG_DENSITY))  # (N,)

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """Signed distance s (N,) at world points (N, 3), negative inside (SDF mode only)."""
        if not self.sdf_mode:
            raise RuntimeError("the field holds log density, not a signed distance; call convert_to_sdf first")
        return self._raw_density(points) / SDF_GRID_SCALE

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self._raw(points)[:, 1:])  # (N, 3)

    def sample(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density (N,) and albedo (N, 3) at world points (N, 3)."""
        raw = self._raw(points)
        return self._activate_density(raw[:, 0], points), torch.sigmoid(raw[:, 1:])

    def normals(self, points: torch.Tensor) -> torch.Tensor:
        """n = -grad sigma / |grad sigma| (grad s / |grad s| in SDF mode) (M, 3), by forward differences of step normal_eps."""
        offsets = torch.cat([torch.zeros(1, 3, device=points.device), self.normal_eps * torch.eye(3, device=points.device)])
        shifted = (points[:, None, :] + offsets[None]).reshape(-1, 3)  # (4M, 3)
        outward = self.sdf(shifted) if self.sdf_mode else -self.density(shifted)  # (4M,) grows outward
        outward = outward.reshape(-1, 4)  # (M, 4)
        return normalize((outward[:, 1:] - outward[:, :1]) / self.normal_eps)  # (M, 3)

    def surface(self, density_threshold: float) -> tuple:
        """What marching cubes contours: (a function of points (N, 3) that is high inside, its level).
        The density at `density_threshold`; in SDF mode -s at 0, the SDF's own surface."""
        if self.sdf_mode:
            return (lambda points: -self.sdf(points)), 0.0
        return self.density, density_threshold

    def total_variation(self) -> torch.Tensor:
        """Mean squared difference of neighbouring voxels (Plenoxels' TV prior, grid_priors.py); 0 without a voxel grid."""
        grid = getattr(self.encoding, "grid", None)
        if grid is None:
            return torch.zeros((), device=next(self.parameters()).device)
        # in SDF mode only the albedo: a distance has |grad s| = 1, not 0, and the eikonal term smooths it instead
        return total_variation(grid, first_channel=1 if self.sdf_mode else 0)

    # ------------------------------------------------------------------ SDF mode (plain voxel grid)
    def is_voxel_grid(self) -> bool:
        """Whether the encoding is a plain voxel grid of density and albedo (no MLP): SDF mode needs it."""
        return isinstance(self.mlp, nn.Identity) and getattr(self.encoding, "grid", None) is not None

    def eikonal(self) -> torch.Tensor:
        """(|grad s| - 1)^2 by forward differences (Gropp et al. 2020, Eq. 2), summed over the voxels
        within EIKONAL_BAND of the surface and divided by all voxels: keeps s a distance there, so
        neighbouring voxels move the surface together. Deeper voxels get no gradient and keep the
        distances they were converted with: everywhere, the unseen inside drifts (forward differences
        also allow |grad s| = 1 zigzags) until it hollows the object out."""
        grid = self.encoding.grid
        return eikonal(grid, SDF_GRID_SCALE, spacing=2 * self.bound / (grid.shape[-1] - 1), band=EIKONAL_BAND)

    @torch.no_grad()
    def convert_to_sdf(self, threshold: float, smooth: float = 0.0) -> None:
        """Switch to SDF mode: the density channel becomes the signed distance to {sigma >= threshold}.

        As the mesh would see it: log density blurred by a Gaussian of width `smooth` (world units),
        enclosed cavities filled. Distances are Euclidean distance transforms of that inside/outside
        mask, half a voxel in from each side, so s is 0 midway between an inside and an outside voxel.
        An empty mask (nothing that dense yet) gives the blob's sphere of radius blob_radius.
        """
        if not self.is_voxel_grid():
            raise ValueError("SDF mode needs a plain voxel grid field (encoding 'dense', mlp_hidden 0)")
        grid = self.encoding.grid  # (1, 4, R, R, R); grid[0, :, k, j, i] sits at vertex (i, j, k)
        resolution = grid.shape[-1]
        axis = torch.linspace(-self.bound, self.bound, resolution, device=grid.device)
        z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
        points = torch.stack([x, y, z], dim=-1)  # (R, R, R, 3)
        log_sigma = (grid[0, 0] + self.blob(points.reshape(-1, 3)).reshape(points.shape[:3])).cpu().numpy()
        spacing = 2 * self.bound / (resolution - 1)
        if smooth > 0:
            log_sigma = ndimage.gaussian_filter(log_sigma, sigma=smooth / spacing)
        inside = ndimage.binary_fill_holes(log_sigma >= math.log(threshold))
        if inside.any() and not inside.all():
            outside_distance = ndimage.distance_transform_edt(~inside) - 0.5  # (R, R, R) voxels, > 0 outside
            inside_distance = ndimage.distance_transform_edt(inside) - 0.5  # > 0 inside
            distance = torch.as_tensor(np.where(inside, -inside_distance, outside_distance) * spacing, dtype=grid.dtype)
        else:
            distance = points.norm(dim=-1).cpu() - self.blob_radius
        grid[0, 0] = distance.to(grid.device) * SDF_GRID_SCALE
        self.sdf_mode = True

    @torch.no_grad()
    def offset_sdf(self, distance: float) -> None:
        """Move the whole SDF surface `distance` inward (s += distance)."""
        self.encoding.grid[0, 0] += distance * SDF_GRID_SCALE

    def background(self, dirs: torch.Tensor) -> torch.Tensor:
        if self.background_net is None:
            return torch.ones_like(dirs)  # white
        return self.background_net(dirs)


def field_for(cfg) -> NeRFField:
    """The field a GenerationConfig asks for: its encoding (auto: the hash grid), MLP, background and SDF settings."""
    encoding = cfg.encoding if cfg.encoding != "auto" else "hashgrid"
    return NeRFField(
        encoding,
        cfg.hashgrid_implementation,
        cfg.mlp_hidden,
        blob_density=cfg.blob_density,
        learned_background=cfg.background == "learned",
        encoding_kwargs={"resolution": cfg.dense_resolution} if encoding == "dense" else {},
        sdf_beta=cfg.sdf_beta,
        sdf_max_density=cfg.sdf_max_density,
        hashgrid_dtype=cfg.hashgrid_dtype,
    )
