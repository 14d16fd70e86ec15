"""backend/guidance/analytic.py: the exact score against closed forms and Monte Carlo."""

import math

import torch

from backend.guidance import View, classifier_free_guidance, sds_latent_target_loss
from backend.guidance.analytic import AnalyticGuidance, exact_eps, posterior_mean
from backend.schedule import scaled_linear_alphas_cumprod


def test_single_target_eps_is_the_closed_form():
    torch.manual_seed(0)
    x0 = torch.rand(1, 3, 12) * 2 - 1  # K=1, B=3, D=12
    x_t = torch.randn(3, 12)
    alpha_bar = torch.tensor([0.9, 0.5, 0.01])
    expected = (x_t - alpha_bar[:, None].sqrt() * x0[0]) / (1 - alpha_bar[:, None]).sqrt()
    assert torch.allclose(exact_eps(x_t, x0, torch.zeros(1), alpha_bar), expected, atol=1e-5)


def test_two_target_posterior_mean_matches_monte_carlo():
    generator = torch.Generator().manual_seed(0)
    pi = torch.tensor([0.3, 0.7])
    modes = torch.tensor([-1.0, 1.0])
    alpha_bar = 0.5
    n = 4_000_000
    k = (torch.rand(n, generator=generator) < pi[1]).long()
    x0 = modes[k]
    x_t = math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * torch.randn(n, generator=generator)
    for value in (-0.8, 0.0, 0.3, 1.1):
        near = (x_t - value).abs() < 0.01
        monte_carlo = float(x0[near].mean())
        ours, r = posterior_mean(torch.tensor([[value]]), modes.reshape(2, 1, 1), pi.log(), torch.tensor([alpha_bar]))
        assert abs(float(ours) - monte_carlo) < 0.03, (value, float(ours), monte_carlo)
        assert torch.allclose(r.sum(-1), torch.ones(1))


def test_large_t_pulls_to_the_mean_small_t_to_the_nearest():
    modes = torch.tensor([[[-1.0, -1.0]], [[1.0, 1.0]]])  # K=2, B=1, D=2
    x = torch.tensor([[0.2, 0.2]])  # a render closer to the second mode
    weights = torch.log(torch.tensor([0.5, 0.5]))
    coarse, _ = posterior_mean(x * math.sqrt(0.001), modes, weights, torch.tensor([0.001]))
    fine, _ = posterior_mean(x * math.sqrt(0.999), modes, weights, torch.tensor([0.999]))
    assert coarse.abs().max() < 0.05  # ~ the mean of the modes
    assert torch.allclose(fine, torch.tensor([[1.0, 1.0]]), atol=1e-3)


def test_cfg_formula():
    u, c = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 1.0])
    assert torch.equal(classifier_free_guidance(u, c, 1.0), c)
    assert torch.allclose(classifier_free_guidance(u, c, 7.5), u + 7.5 * (c - u))


def test_latent_target_loss_has_gradient_g():
    z = torch.randn(2, 5, requires_grad=True)
    g = torch.randn(2, 5)
    sds_latent_target_loss(z, g).backward()
    assert torch.allclose(z.grad, g / 2)  # per batch item: summed over D, averaged over B


class OneImage:
    """A TargetSet stand-in: one fixed target image, whatever the view."""

    def __init__(self, image):
        self.image, self.log_weights = image, torch.zeros(1)

    def render(self, cameras, resolution, n_samples, settings, radius=1.0):
        return self.image[None]


def test_sds_gradient_on_the_render_is_w_times_eps_difference():
    alphas = torch.tensor(scaled_linear_alphas_cumprod(), dtype=torch.float32)
    target = torch.rand(1, 4, 4, 3)
    guidance = AnalyticGuidance(OneImage(target), alphas)
    rgb = torch.rand(1, 4, 4, 3, requires_grad=True)
    t = torch.tensor([600])
    view = View(None, None, 4, 8, torch.Generator().manual_seed(5))
    guidance.losses(rgb, t, view)["sds"].backward()
    # K = 1: eps* - eps = sqrt(abar) (x - x0) / sqrt(1 - abar), w = 1 - abar, x = 2 rgb - 1
    a = alphas[600]
    x, x0 = rgb.detach() * 2 - 1, target * 2 - 1
    grad_x = (1 - a) * a.sqrt() * (x - x0) / (1 - a).sqrt()
    assert torch.allclose(rgb.grad, 2 * grad_x, atol=1e-5)
