"""Guidance: what turns a render into a score-distillation gradient (docs/ARCHITECTURE.md §4.5).

Every guidance has `alphas_cumprod` (T,) — the table that the SDS weight and the TP-SDS schedule's
W_d both read — and `losses(rgb, t, view) -> {name: loss}`; the trainer weighs the named losses.
After `losses`, `non_finite` is (how many values of its gradient were NaN or inf before they were
set to 0, as a 0-d tensor on the device; how many values there were): the trainer reports them.
One file per kind: `analytic.py` (exact score, no network) and `stable_diffusion.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cameras import Cameras
from ..renderer import RenderSettings


@dataclass
class View:
    """What a guidance may need to know about the render it judges."""

    cameras: Cameras  # the B cameras of the batch
    settings: RenderSettings  # shading, light and background used for the render
    resolution: int  # render size in pixels
    n_samples: int  # samples per ray
    generator: torch.Generator  # the diffusion noise of this step, on the device the noise is used on
    radius: float = 1.0  # rays were sampled inside this sphere
    opacity: torch.Tensor | None = None  # (B, H, W, 1) the render's opacity (with its gradient), when the guidance may use it


def sds_latent_target_loss(latents: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """0.5 * ||z - sg(z - g)||^2 summed, per batch item: its gradient with respect to z is exactly g."""
    target = (latents - grad).detach()
    return 0.5 * ((latents - target) ** 2).sum() / latents.shape[0]


def classifier_free_guidance(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """eps_hat = eps_u + s * (eps_c - eps_u)   (Ho & Salimans 2022, Eq. 6)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def zero_non_finite(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """grad with NaN and +-inf set to 0, and how many there were: a 0-d tensor on grad's device, counted
    before nan_to_num hides them (fp16 overflow in a guidance would otherwise go unseen), read later."""
    count = grad.numel() - torch.isfinite(grad).sum()
    return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0), count
