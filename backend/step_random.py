"""The randomness of one training step, seeded by (seed, step) (docs/ARCHITECTURE.md §4.2, §4.6).

Everything random in step i — cameras, shading mode, light, background, sample jitter, diffusion
noise — comes from generators seeded by seed * SEED_STRIDE + i, so a resumed run repeats the steps
it would have taken and two schedules with one seed see the same cameras and noise.

Two generators, so a GPU step never waits on the host: `host` (a CPU generator) draws the few
numbers the host itself needs — the camera poses (B × 4 numbers, moved to the device in one small
copy) and the shading mode (a Python branch) — and `device` draws the bulk tensors where they are
used (light jitter, background, sample jitter, the VAE's latent sample, the diffusion noise). On
the CPU both are one generator, drawn in the order the steps always drew, so CPU runs stay
reproducible from one release to the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SEED_STRIDE = 1_000_003  # seed * SEED_STRIDE + step: distinct for every (seed, step) of a run


@dataclass(frozen=True)
class StepRandom:
    host: torch.Generator  # CPU: camera poses and the shading mode
    device: torch.Generator  # on the run's device: light, background, jitter, noise (the same object on the CPU)


def step_random(seed: int, step: int, device: torch.device | str = "cpu") -> StepRandom:
    """The generators of training step `step` of a run seeded `seed`, for tensors on `device`."""
    device = torch.device(device)
    host = torch.Generator().manual_seed(seed * SEED_STRIDE + step)
    if device.type == "cpu":
        return StepRandom(host, host)
    return StepRandom(host, torch.Generator(device=device).manual_seed(seed * SEED_STRIDE + step))


def uniform(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """U[0, 1) of `shape`, drawn on the generator's own device."""
    return torch.rand(shape, generator=generator, device=generator.device)


def normal(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """N(0, 1) of `shape`, drawn on the generator's own device."""
    return torch.randn(shape, generator=generator, device=generator.device)
