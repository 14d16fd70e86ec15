"""The analytic prior: the exact score of a mixture of rendered targets (docs/ARCHITECTURE.md §5).

At camera c the data distribution is sum_k pi_k delta(x0_k(c)), images scaled to [-1, 1]. For
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps the ideal denoiser is exact:

    r_k(x_t) = softmax_k(log pi_k - |x_t - sqrt(abar_t) x0_k|^2 / (2 (1 - abar_t)))
    eps*(x_t) = (x_t - sqrt(abar_t) sum_k r_k x0_k) / sqrt(1 - abar_t)

and SDS uses it as a diffusion model would be used: grad = w(t) (eps_hat - eps), w(t) = 1 - abar_t,
with classifier-free guidance against the whole library as the unconditional set. At large t
the posterior mean is the targets' mean (coarse); at small t the nearest target (fine).
"""

from __future__ import annotations

import torch

from . import View, classifier_free_guidance, sds_latent_target_loss, zero_non_finite
from .target_volumes import TargetSet


def posterior_mean(
    x_t: torch.Tensor, x0: torch.Tensor, log_weights: torch.Tensor, alpha_bar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """E[x0 | x_t] (B, D) and the responsibilities r (B, K), for x_t (B, D), targets x0 (K, B, D)."""
    a = alpha_bar[:, None]  # (B, 1)
    sq_dist = ((x_t[None] - a.sqrt()[None] * x0) ** 2).sum(-1)  # (K, B)
    logits = log_weights[:, None] - sq_dist / (2 * (1 - a.T))  # (K, B)
    r = torch.softmax(logits, dim=0)  # (K, B)
    return (r[..., None] * x0).sum(0), r.T


def exact_eps(x_t: torch.Tensor, x0: torch.Tensor, log_weights: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """eps*(x_t) (B, D): the noise an ideal denoiser predicts for the mixture of targets."""
    mean, _ = posterior_mean(x_t, x0, log_weights, alpha_bar)
    a = alpha_bar[:, None]
    return (x_t - a.sqrt() * mean) / (1 - a).sqrt()


class AnalyticGuidance:
    def __init__(self, targets: TargetSet, alphas_cumprod: torch.Tensor, guidance_scale: float = 1.0,
                 unconditional: TargetSet | None = None):
        if guidance_scale != 1.0 and unconditional is None:
            raise ValueError("classifier-free guidance (scale != 1) needs an unconditional target set")
        self.targets, self.unconditional = targets, unconditional
        self.alphas_cumprod = alphas_cumprod  # (T,)
        self.guidance_scale = guidance_scale
        self.non_finite: tuple[torch.Tensor, int] | None = None  # of the last losses() call (guidance/__init__.py)

    def _images(self, targets: TargetSet, view: View, backgrounds: torch.Tensor | None) -> torch.Tensor:
        """Target images (K, B, J*D) in [-1, 1]: over the view's background, or over each of the
        J backgrounds (J, B, 3) side by side."""
        if backgrounds is None:
            images = targets.render(view.cameras, view.resolution, view.n_samples, view.settings, view.radius)  # (K, B, H, W, 3)
            return (images * 2 - 1).flatten(2)
        rgb, opacity = targets.render_layers(view.cameras, view.resolution, view.n_samples, view.settings, view.radius)
        return torch.cat([((rgb + (1 - opacity) * b[:, None, None, :]) * 2 - 1).flatten(2) for b in backgrounds], dim=-1)

    def eps_hat(self, x_t: torch.Tensor, alpha_bar: torch.Tensor, view: View, backgrounds: torch.Tensor | None = None) -> torch.Tensor:
        """Guided noise prediction (B, D) at x_t (B, D) (D: J pictures side by side, see `losses`)."""
        eps_cond = exact_eps(x_t, self._images(self.targets, view, backgrounds), self.targets.log_weights, alpha_bar)
        if self.guidance_scale == 1.0:
            return eps_cond
        eps_uncond = exact_eps(x_t, self._images(self.unconditional, view, backgrounds), self.unconditional.log_weights, alpha_bar)
        return classifier_free_guidance(eps_uncond, eps_cond, self.guidance_scale)

    def losses(self, rgb: torch.Tensor, t: torch.Tensor, view: View) -> dict[str, torch.Tensor]:
        """SDS loss whose gradient w.r.t. the render (B, H, W, 3) is w(t) (eps_hat - eps).

        With the render's opacity (view.opacity) the render is judged over its background b and
        over the complementary 1 - b at once, as one picture of twice the size (each with its own
        noise), and the gradient is the mean of the two (the module docstring says why)."""
        backgrounds = None
        pictures = [rgb]
        if view.opacity is not None and view.settings.background is not None:
            b = view.settings.background  # (B, 3)
            backgrounds = torch.stack([b, 1 - b])  # (2, B, 3)
            pictures.append(rgb + (1 - view.opacity) * (1 - 2 * b)[:, None, None, :])  # the same field over 1 - b
        x = torch.cat([(p * 2 - 1).flatten(1) for p in pictures], dim=1)  # (B, J*D)
        alpha_bar = self.alphas_cumprod[t]  # (B,)
        noise = torch.randn(x.shape, generator=view.generator, device=view.generator.device).to(x.device)
        with torch.no_grad():
            x_t = alpha_bar[:, None].sqrt() * x + (1 - alpha_bar[:, None]).sqrt() * noise
            grad = (1 - alpha_bar[:, None]) * (self.eps_hat(x_t, alpha_bar, view, backgrounds) - noise) / len(pictures)
            grad, count = zero_non_finite(grad)
        self.non_finite = (count, grad.numel())
        return {"sds": sds_latent_target_loss(x, grad)}
