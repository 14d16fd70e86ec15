"""backend/schedule.py against an independent, loop-by-loop reading of DreamTime Eq. 7-8."""

import math

import numpy as np
import pytest

from backend import schedule


def reference_alphas_cumprod():
    product, table = 1.0, []
    for i in range(1000):
        beta = (math.sqrt(0.00085) + (math.sqrt(0.012) - math.sqrt(0.00085)) * i / 999) ** 2
        product *= 1 - beta
        table.append(product)
    return table


def reference_tp(steps, m1=800, m2=500, s1=300, s2=100, t_min=20, t_max=980):
    abar = reference_alphas_cumprod()
    weight = {}
    for t in range(t_min, t_max + 1):
        if t > m1:
            prior = math.exp(-((t - m1) ** 2) / (2 * s1 * s1))
        elif t < m2:
            prior = math.exp(-((t - m2) ** 2) / (2 * s2 * s2))
        else:
            prior = 1.0
        weight[t] = math.sqrt((1 - abar[t]) / abar[t]) * prior
    total = sum(weight.values())
    out = []
    for i in range(steps):
        best_t, best_gap, tail = None, None, 0.0
        for t in range(t_max, t_min - 1, -1):  # from the top, so ties keep the larger t
            tail += weight[t] / total
            gap = abs(tail - i / steps)
            if best_gap is None or gap < best_gap:
                best_t, best_gap = t, gap
        out.append(best_t)
    return out


def test_alphas_cumprod_matches_stable_diffusion_table():
    ours = schedule.scaled_linear_alphas_cumprod()
    np.testing.assert_allclose(ours, reference_alphas_cumprod(), rtol=1e-12)
    assert ours[0] == pytest.approx(0.99915)
    assert ours[-1] == pytest.approx(0.0046601, rel=1e-4)


def test_alphas_cumprod_matches_diffusers():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    np.testing.assert_allclose(schedule.scaled_linear_alphas_cumprod(), sched.alphas_cumprod.double().numpy(), rtol=1e-5)


@pytest.mark.parametrize("steps", [1, 7, 100, 503])
def test_tp_matches_independent_computation(steps):
    assert schedule.tp_timesteps(steps).tolist() == reference_tp(steps)


def test_tp_with_other_parameters_matches_independent_computation():
    kwargs = dict(m1=700, m2=300, s1=150, s2=50, t_min=50, t_max=950)
    assert schedule.tp_timesteps(64, **kwargs).tolist() == reference_tp(64, **kwargs)


@pytest.mark.parametrize("kind", ["tp", "linear"])
def test_deterministic_schedules_are_non_increasing_and_in_range(kind):
    t = schedule.timesteps(kind, 1000, t_min=20, t_max=980)
    assert len(t) == 1000
    assert np.all(np.diff(t) <= 0)
    assert t.min() >= 20 and t.max() <= 980
    assert t[0] == 980


def test_tp_spends_most_steps_in_the_flat_region():
    t = schedule.tp_timesteps(1000)
    assert np.mean((t >= 500) & (t <= 800)) > 0.3


def test_p_sums_to_one_and_w_p_is_flat_between_m2_and_m1():
    t, p = schedule.tp_density()
    assert p.sum() == pytest.approx(1.0)
    assert np.all(p > 0)
    np.testing.assert_allclose(schedule.w_p(np.arange(500, 801), 800, 500, 300, 100), 1.0)
    assert schedule.w_p(np.array([1100.0]), 800, 500, 300, 100)[0] == pytest.approx(math.exp(-0.5))
    assert schedule.w_p(np.array([400.0]), 800, 500, 300, 100)[0] == pytest.approx(math.exp(-0.5))


def test_without_w_d_the_schedule_spends_longer_at_small_t():
    with_wd, without_wd = schedule.tp_timesteps(500), schedule.tp_timesteps(500, use_w_d=False)
    assert without_wd.mean() < with_wd.mean()


def test_uniform_is_seeded_and_covers_the_range():
    a, b = schedule.uniform_timesteps(5000, seed=3), schedule.uniform_timesteps(5000, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, schedule.uniform_timesteps(5000, seed=4))
    assert a.min() == 20 and a.max() == 980
    assert abs(a.mean() - 500) < 15


def test_linear_endpoints_and_single_step():
    t = schedule.linear_timesteps(11, t_min=100, t_max=200)
    assert t.tolist() == list(range(200, 99, -10))
    assert schedule.linear_timesteps(1).tolist() == [980]
    assert schedule.tp_timesteps(1).tolist() == [980]


def test_narrow_range_and_extreme_sliders_stay_in_range():
    t = schedule.tp_timesteps(50, m1=1000, m2=0, s1=1, s2=1, t_min=400, t_max=401)
    assert set(t.tolist()) <= {400, 401}
    # W_p underflows to 0 everywhere in [t_min, t_max]: log space still finds its mass at t_min.
    _, p = schedule.tp_density(m1=10, m2=5, s1=1e-3, s2=1e-3)
    assert np.all(np.isfinite(p)) and p[0] == pytest.approx(1.0)
    assert schedule.tp_timesteps(50, m1=10, m2=5, s1=1e-3, s2=1e-3)[-1] == 20


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="tp, uniform, linear"):
        schedule.timesteps("cosine", 10)


def test_lr_factor_decays_from_the_runs_first_trained_step():
    assert schedule.lr_factor(0, 100) == 1 and schedule.lr_factor(99, 100) == pytest.approx(0.1)
    assert schedule.lr_factor(49.5, 100) == pytest.approx(0.1**0.5)
    # a run from a shape at strength 0.4 of 100 steps trains 60..99: the full rate at 60, not 0.1^(60/99)
    first = schedule.start_step(100, 0.4)
    assert first == 60 and schedule.lr_factor(60, 100, first) == 1 and schedule.lr_factor(99, 100, first) == pytest.approx(0.1)
    factors = [schedule.lr_factor(i, 100, first, 0.01) for i in range(60, 100)]
    assert all(a > b for a, b in zip(factors, factors[1:]))
