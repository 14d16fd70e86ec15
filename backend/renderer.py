"""Volume rendering inside the bounding sphere, with DreamFusion's shading modes (docs/ARCHITECTURE.md §4.4).

Anything with `sample(points) -> (sigma (N,), albedo (N, 3))` and `normals(points) -> (M, 3)` can
be rendered: the NeRF field and the analytic targets go through the same code, so they share
cameras, samples, background and light.

    alpha_i = 1 - exp(-sigma_i * delta)          T_i = prod_{j<i} (1 - alpha_j)
    C = sum_i T_i alpha_i c_i + (1 - sum_i T_i alpha_i) * background        (Mildenhall et al. 2020, Eq. 3)

Shading of c_i: `albedo` (c = a), `lambertian` (c = a * (ambient + (1 - ambient) * max(0, n.l))),
`textureless` (lambertian with a = 1), as DreamFusion (Poole et al. 2022, Sec. 3.1).

Normals cost most (four field evaluations each), so they are taken only where a sample is seen:
at the SHADED_SAMPLES_PER_RAY samples of each ray with the largest compositing weight, of those
only the ones above NORMAL_WEIGHT_THRESHOLD; every other sample is shaded as ambient. A fixed
number per ray keeps every tensor's shape fixed, so a GPU step never waits to learn how many
samples are visible (a boolean-mask gather would).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from .cameras import Cameras

SHADINGS = ("albedo", "lambertian", "textureless")


NORMAL_WEIGHT_THRESHOLD = 1e-3  # samples with a smaller compositing weight are shaded as ambient
SHADED_SAMPLES_PER_RAY = 8  # normals at most at this many samples per ray, the most visible ones


class Volume(Protocol):
    def sample(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density (N,) and albedo (N, 3) at points (N, 3)."""

    def normals(self, points: torch.Tensor) -> torch.Tensor:
        """Outward unit normals (M, 3) at points (M, 3)."""


@dataclass
class RenderSettings:
    shading: str = "albedo"  # albedo | lambertian | textureless
    light: torch.Tensor | None = None  # (B, 3) unit direction towards the light (shaded modes)
    background: torch.Tensor | None = None  # (B, 3) colour, or None for the volume's own background
    ambient: float = 0.3  # share of light that does not depend on the normal


def normalize(vectors: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Unit vectors along the last axis (faster on CPU than dividing by .norm())."""
    return vectors * torch.rsqrt((vectors * vectors).sum(-1, keepdim=True) + eps)


def ray_sphere_bounds(origins: torch.Tensor, dirs: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Near/far distances (...,) where unit rays cross the sphere |x| = radius; near == far if they miss."""
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - radius**2
    disc = (b * b - c).clamp(min=0)
    sqrt_disc = disc.sqrt()
    near = (-b - sqrt_disc).clamp(min=0)
    far = (-b + sqrt_disc).clamp(min=0)
    return near, torch.maximum(far, near)


def sample_along_rays(
    origins: torch.Tensor, dirs: torch.Tensor, n_samples: int, radius: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stratified samples (jittered when a generator is given): points (R, S, 3), depths (R, S), step (R, 1)."""
    near, far = ray_sphere_bounds(origins, dirs, radius)  # (R,), (R,)
    delta = ((far - near) / n_samples)[:, None]  # (R, 1)
    offsets = torch.arange(n_samples, device=origins.device, dtype=torch.float32)[None]  # (1, S)
    if generator is None:
        offsets = offsets + 0.5
    else:
        offsets = offsets + torch.rand((len(origins), n_samples), generator=generator, device=generator.device).to(origins.device)
    depths = near[:, None] + offsets * delta  # (R, S)
    points = origins[:, None, :] + depths[..., None] * dirs[:, None, :]  # (R, S, 3)
    return points, depths, delta


def shaded_diffuse(volume: Volume, points: torch.Tensor, weights: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """max(0, n.l) (R, S) at each ray's SHADED_SAMPLES_PER_RAY most visible samples whose weight passes
    NORMAL_WEIGHT_THRESHOLD, 0 elsewhere; for points (R, S, 3), weights (R, S) and the light (R, 3)."""
    k = min(SHADED_SAMPLES_PER_RAY, points.shape[1])
    top_weights, top = weights.topk(k, dim=-1, sorted=False)  # (R, K)
    top_points = points.gather(1, top[..., None].expand(-1, -1, 3))  # (R, K, 3)
    normals = volume.normals(top_points.reshape(-1, 3)).reshape(top_points.shape)  # (R, K, 3)
    lit = (normals * light[:, None, :]).sum(-1).clamp(min=0) * (top_weights > NORMAL_WEIGHT_THRESHOLD)  # (R, K)
    return torch.zeros_like(weights).scatter(1, top, lit)  # (R, S)


def render(
    volume: Volume,
    cameras: Cameras,
    resolution: int,
    n_samples: int,
    settings: RenderSettings,
    generator: torch.Generator | None = None,
    radius: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Render B views. Returns rgb (B, H, W, 3), opacity (B, H, W, 1), depth (B, H, W, 1)."""
    if settings.shading not in SHADINGS:
        raise ValueError(f"shading must be one of {', '.join(SHADINGS)}, got {settings.shading!r}")
    batch, height = len(cameras), resolution
    origins, dirs = cameras.rays(height)  # (B, H, W, 3) each
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)  # (R, 3), R = B*H*W
    points, depths, delta = sample_along_rays(origins, dirs, n_samples, radius, generator)  # (R, S, 3), (R, 1)

    sigma, albedo = volume.sample(points.reshape(-1, 3))
    sigma = sigma.reshape(-1, n_samples)  # (R, S)
    albedo = albedo.reshape(-1, n_samples, 3)  # (R, S, 3)
    alpha = 1 - torch.exp(-sigma * delta)  # (R, S)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-10], dim=-1), dim=-1)[:, :-1]
    weights = alpha * transmittance  # (R, S)
    opacity = weights.sum(-1, keepdim=True)  # (R, 1)
    depth = (weights * depths).sum(-1, keepdim=True)  # (R, 1)

    rays_per_view = height * height
    colour = albedo
    if settings.shading != "albedo":
        # Normals only where a sample is seen: they change colours, never weights, and cost most.
        diffuse = shaded_diffuse(volume, points, weights.detach(), settings.light.repeat_interleave(rays_per_view, dim=0))  # (R, S)
        brightness = (settings.ambient + (1 - settings.ambient) * diffuse)[..., None]  # (R, S, 1)
        colour = brightness.expand_as(albedo) if settings.shading == "textureless" else albedo * brightness
    rgb = (weights[..., None] * colour).sum(1)  # (R, 3)

    if settings.background is not None:
        background = settings.background.repeat_interleave(rays_per_view, dim=0)  # (R, 3)
    else:
        background = volume.background(dirs)  # (R, 3)
    rgb = rgb + (1 - opacity) * background
    shape = (batch, height, height)
    return {"rgb": rgb.reshape(*shape, 3), "opacity": opacity.reshape(*shape, 1), "depth": depth.reshape(*shape, 1)}
