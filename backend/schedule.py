"""Timestep schedules for score distillation (numpy only, so the add-on can draw them live).

DreamTime (Huang et al., arXiv 2306.12422), Sec. 4: time-prioritized SDS (TP-SDS) makes the
diffusion timestep a non-increasing function of the optimization step i,

    W(t)   = W_d(t) * W_p(t)                               weight over t           (Eq. 7)
    W_d(t) = sqrt((1 - alphas_cumprod[t]) / alphas_cumprod[t])   diffusion term
    W_p(t) = exp(-(t - m1)^2 / (2 s1^2))   for t > m1             prior term
             1                             for m2 <= t <= m1
             exp(-(t - m2)^2 / (2 s2^2))   for t < m2
    p(t)   = W(t) / sum_{t'=t_min}^{t_max} W(t')
    t(i)   = argmin_t | sum_{t'=t}^{t_max} p(t') - i / N |            (Eq. 8)

`uniform` is plain SDS (t ~ U[t_min, t_max] every step); `linear` walks from t_max to t_min.

What part of t(i) a run takes (`start_step`): a run of N steps trains i = i0 .. N-1 of the t(i)
above, laid out for N steps, with the learning rate's decay and every other step-dependent
setting as in a full run. A new run has i0 = 0. One from an init mesh at strength S (SDEdit,
Meng et al. 2022: noise a given shape part-way, then denoise) has i0 = N - max(1, round(S*N)):
S = 1 runs all of t(i) from t_max; S = 0.4 runs the last 40 % of the steps, so it starts at
t(0.6 N), which for TP-SDS at N = 700 is t = 787, and keeps the coarse structure the shape gives.
A refine of a run of n steps to M > n (refine.py) lays t(i) out again for M steps and has
i0 = n: the run's n steps stand for the first n of M, so the refined run has taken M steps in all,
as a straight M-step run does (a refine is `strength` (M - n) / M applied to the finished field).
"""

from __future__ import annotations

import numpy as np

NUM_TRAIN_TIMESTEPS = 1000  # T, as in Stable Diffusion
SCHEDULE_KINDS = ("tp", "uniform", "linear")
# The paper's TP-SDS prior and timestep range, written once: every default below and
# GenerationConfig's (config.py, and through it the add-on's panel) read these.
M1, M2, S1, S2 = 800.0, 500.0, 300.0, 100.0
T_MIN, T_MAX = 20, 980


def scaled_linear_alphas_cumprod(
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
) -> np.ndarray:
    """Stable Diffusion's alphas_cumprod: betas linear in sqrt space (diffusers "scaled_linear")."""
    betas = np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def w_d(alphas_cumprod: np.ndarray) -> np.ndarray:
    """Diffusion term W_d(t) = sqrt((1 - abar_t) / abar_t), for every t in the table."""
    alphas_cumprod = np.asarray(alphas_cumprod, dtype=np.float64)
    return np.sqrt((1.0 - alphas_cumprod) / alphas_cumprod)


def log_w_p(t: np.ndarray, m1: float, m2: float, s1: float, s2: float) -> np.ndarray:
    """log W_p(t): 0 on [m2, m1], Gaussian tails of width s1 above m1 and s2 below m2."""
    t = np.asarray(t, dtype=np.float64)
    upper = -((t - m1) ** 2) / (2.0 * s1**2)
    lower = -((t - m2) ** 2) / (2.0 * s2**2)
    return np.where(t > m1, upper, np.where(t < m2, lower, 0.0))


def w_p(t: np.ndarray, m1: float, m2: float, s1: float, s2: float) -> np.ndarray:
    """Piecewise-Gaussian prior W_p(t): flat on [m2, m1], Gaussian tails of width s1 above, s2 below."""
    return np.exp(log_w_p(t, m1, m2, s1, s2))


def tp_density(
    m1: float = M1,
    m2: float = M2,
    s1: float = S1,
    s2: float = S2,
    t_min: int = T_MIN,
    t_max: int = T_MAX,
    alphas_cumprod: np.ndarray | None = None,
    use_w_d: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """p(t) on t = t_min..t_max: W_d * W_p normalized to sum 1. Returns (t, p).

    Computed in log space, so narrow tails far from [t_min, t_max] still give a valid p.
    `use_w_d=False` drops the diffusion term (a variant some re-implementations use).
    """
    if alphas_cumprod is None:
        alphas_cumprod = scaled_linear_alphas_cumprod()
    t = np.arange(t_min, t_max + 1)
    log_weight = log_w_p(t, m1, m2, s1, s2)
    if use_w_d:
        log_weight = log_weight + np.log(w_d(alphas_cumprod)[t])
    weight = np.exp(log_weight - log_weight.max())
    return t, weight / weight.sum()


def tp_timesteps(
    steps: int,
    m1: float = M1,
    m2: float = M2,
    s1: float = S1,
    s2: float = S2,
    t_min: int = T_MIN,
    t_max: int = T_MAX,
    alphas_cumprod: np.ndarray | None = None,
    use_w_d: bool = True,
) -> np.ndarray:
    """t(i) = argmin_t |sum_{t'>=t} p(t') - i/N| for i = 0..N-1 (Eq. 8); non-increasing in i."""
    t, p = tp_density(m1, m2, s1, s2, t_min, t_max, alphas_cumprod, use_w_d)
    t_desc = t[::-1]  # t_max .. t_min
    tail = np.cumsum(p[::-1])  # tail[j] = sum_{t' >= t_desc[j]} p(t'); increasing, tail[-1] = 1
    targets = np.arange(steps, dtype=np.float64) / steps  # (N,) the i/N
    right = np.clip(np.searchsorted(tail, targets), 0, len(tail) - 1)
    left = np.clip(right - 1, 0, len(tail) - 1)
    # the nearer of the two neighbours; on a tie the larger t (coarse first).
    use_left = np.abs(tail[left] - targets) <= np.abs(tail[right] - targets)
    return t_desc[np.where(use_left, left, right)].astype(np.int64)


def start_step(steps: int, strength: float = 1.0) -> int:
    """i0, the first step a run of `steps` steps at `strength` S in (0, 1] trains: steps - max(1, round(S * steps))."""
    return steps - max(1, min(steps, round(strength * steps)))


def lr_factor(step: int, steps: int, first: int = 0, final_ratio: float = 0.1) -> float:
    """The learning rates' factor at step i of N: final_ratio^((i - i0) / (N - 1 - i0)), 1 at the run's
    first trained step i0, final_ratio at its last (an exponential decay, as DreamFusion-style trainers use).

    i0 is 0 from scratch, start_step(N, S) for a run from a shape and the steps done for a refine: a run
    that starts part-way through t(i) still gets the large steps it needs to move, over less of the
    schedule. (Taking step i's factor of a run from scratch left a strength-0.4 run at 0.25x-0.1x of the
    rate: 25.9 dB against 37.1 for "a blue torus" from a grey torus mesh; README "Beyond one prompt".)"""
    return final_ratio ** (max(step - first, 0) / max(steps - 1 - first, 1))


def uniform_timesteps(steps: int, t_min: int = T_MIN, t_max: int = T_MAX, seed: int = 0) -> np.ndarray:
    """Plain SDS: an independent t ~ U{t_min..t_max} per step."""
    return np.random.default_rng(seed).integers(t_min, t_max + 1, size=steps).astype(np.int64)


def linear_timesteps(steps: int, t_min: int = T_MIN, t_max: int = T_MAX) -> np.ndarray:
    """t decreasing linearly from t_max at step 0 to t_min at the last step."""
    if steps == 1:
        return np.array([t_max], dtype=np.int64)
    return np.round(np.linspace(t_max, t_min, steps)).astype(np.int64)


def timesteps(
    kind: str,
    steps: int,
    m1: float = M1,
    m2: float = M2,
    s1: float = S1,
    s2: float = S2,
    t_min: int = T_MIN,
    t_max: int = T_MAX,
    seed: int = 0,
    alphas_cumprod: np.ndarray | None = None,
    use_w_d: bool = True,
) -> np.ndarray:
    """The whole t(i), i = 0..steps-1, for one schedule kind (`tp`, `uniform` or `linear`)."""
    if kind == "tp":
        return tp_timesteps(steps, m1, m2, s1, s2, t_min, t_max, alphas_cumprod, use_w_d)
    if kind == "uniform":
        return uniform_timesteps(steps, t_min, t_max, seed)
    if kind == "linear":
        return linear_timesteps(steps, t_min, t_max)
    raise ValueError(f"schedule: unknown kind {kind!r}; choose one of {', '.join(SCHEDULE_KINDS)}")
