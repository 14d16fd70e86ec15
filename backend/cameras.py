"""Cameras looking at the origin: random training views and a fixed evaluation ring (docs/ARCHITECTURE.md §4.2).

World frame as in Blender: z up, the front view looks along +y from -y. Azimuth 0° is the
front, 90° the right side (+x), 180° the back; elevation is positive above the horizon.
Camera frames follow OpenGL: the camera looks along its -z axis, +y is up in the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Cameras:
    c2w: torch.Tensor  # (B, 4, 4) camera-to-world
    fov_y: torch.Tensor  # (B,) vertical field of view, radians
    elevation: torch.Tensor  # (B,) degrees
    azimuth: torch.Tensor  # (B,) degrees in [-180, 180)
    distance: torch.Tensor  # (B,)

    def __len__(self) -> int:
        return self.c2w.shape[0]

    @property
    def position(self) -> torch.Tensor:
        return self.c2w[:, :3, 3]  # (B, 3)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Cameras":
        names = ("c2w", "fov_y", "elevation", "azimuth", "distance")
        return Cameras(*(getattr(self, name).to(device, non_blocking=non_blocking) for name in names))

    def __getitem__(self, index) -> "Cameras":
        index = slice(index, index + 1) if isinstance(index, int) else index
        return Cameras(self.c2w[index], self.fov_y[index], self.elevation[index], self.azimuth[index], self.distance[index])

    def rays(self, height: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray origins and unit directions through pixel centres: two (B, H, W, 3) tensors."""
        width = width or height
        device = self.c2w.device
        tan_half = torch.tan(self.fov_y / 2)[:, None, None]  # (B, 1, 1)
        aspect = width / height
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 - 1  # (H,)
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 - 1  # (W,)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W)
        dirs_cam = torch.stack(
            [
                grid_x[None] * tan_half * aspect,
                -grid_y[None] * tan_half,
                -torch.ones_like(grid_x)[None].expand(len(self), -1, -1),
            ],
            dim=-1,
        )  # (B, H, W, 3)
        dirs = torch.einsum("bij,bhwj->bhwi", self.c2w[:, :3, :3], dirs_cam)
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        origins = self.position[:, None, None, :].expand_as(dirs)
        return origins, dirs


def spherical_to_position(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """Camera centres (B, 3) on spheres around the origin; azimuth 0 is the front (-y)."""
    el, az = torch.deg2rad(elevation_deg), torch.deg2rad(azimuth_deg)
    return torch.stack(
        [distance * torch.cos(el) * torch.sin(az), -distance * torch.cos(el) * torch.cos(az), distance * torch.sin(el)],
        dim=-1,
    )


def look_at_origin(position: torch.Tensor) -> torch.Tensor:
    """Camera-to-world matrices (B, 4, 4) for cameras at `position` (B, 3) looking at the origin."""
    forward = -position / position.norm(dim=-1, keepdim=True)  # (B, 3)
    world_up = torch.tensor([0.0, 0.0, 1.0], device=position.device).expand_as(forward)
    right = torch.linalg.cross(forward, world_up)
    # Straight up or down: any horizontal right vector will do.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, torch.tensor([1.0, 0.0, 0.0], device=position.device), right)
    right = right / right.norm(dim=-1, keepdim=True)
    up = torch.linalg.cross(right, forward)
    c2w = torch.eye(4, device=position.device).repeat(len(position), 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, up, -forward, position
    return c2w


def make_cameras(elevation: torch.Tensor, azimuth: torch.Tensor, distance: torch.Tensor, fov_y_deg: torch.Tensor) -> Cameras:
    azimuth = (azimuth + 180) % 360 - 180
    c2w = look_at_origin(spherical_to_position(elevation, azimuth, distance))
    return Cameras(c2w, torch.deg2rad(fov_y_deg), elevation, azimuth, distance)


@dataclass
class CameraRanges:
    elevation: tuple[float, float] = (-10.0, 80.0)  # degrees; mostly above: overhead views show holes
    azimuth: tuple[float, float] = (-180.0, 180.0)  # degrees; all around
    distance: tuple[float, float] = (2.2, 2.7)  # the object fits in a sphere of radius ~0.7
    fov_y: tuple[float, float] = (40.0, 50.0)  # degrees


def random_cameras(batch: int, generator: torch.Generator, ranges: CameraRanges = CameraRanges()) -> Cameras:
    """B training cameras, uniform in each range (elevation uniform in angle, as DreamFusion)."""

    def uniform(low_high: tuple[float, float]) -> torch.Tensor:
        low, high = low_high
        return low + (high - low) * torch.rand(batch, generator=generator)

    return make_cameras(uniform(ranges.elevation), uniform(ranges.azimuth), uniform(ranges.distance), uniform(ranges.fov_y))


def evaluation_ring(n_views: int = 8, elevation: float = 25.0, distance: float = 2.4, fov_y: float = 45.0) -> Cameras:
    """The fixed ring of evaluation cameras: n views evenly spaced in azimuth, starting at the front."""
    azimuth = torch.arange(n_views, dtype=torch.float32) * (360.0 / n_views)
    full = lambda value: torch.full((n_views,), float(value))  # noqa: E731
    return make_cameras(full(elevation), azimuth, full(distance), full(fov_y))


def light_directions(cameras: Cameras, generator: torch.Generator, spread: float = 0.5) -> torch.Tensor:
    """Unit directions (B, 3) towards a point light placed near the camera, jittered as DreamFusion does
    (the jitter drawn on the generator's device)."""
    toward_camera = cameras.position / cameras.position.norm(dim=-1, keepdim=True)
    jitter = spread * torch.randn(toward_camera.shape, generator=generator, device=generator.device).to(toward_camera.device)
    light = toward_camera + jitter
    return light / light.norm(dim=-1, keepdim=True)


def fixed_light(cameras: Cameras) -> torch.Tensor:
    """The evaluation light (B, 3): from the camera, raised 45° towards world up."""
    toward_camera = cameras.position / cameras.position.norm(dim=-1, keepdim=True)
    light = toward_camera + torch.tensor([0.0, 0.0, 1.0], device=toward_camera.device)
    return light / light.norm(dim=-1, keepdim=True)

