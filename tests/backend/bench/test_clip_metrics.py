"""backend/bench/clip_metrics.py on hand-made embeddings: R-precision, CLIP score, diversity."""

import numpy as np
import pytest

from backend.bench.clip_metrics import clip_score, diversity, r_precision, retrieval_ranks


def prompts(p=10, d=32, seed=0):
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(d, p)))[0].T  # (P, D) orthonormal


def test_renders_that_match_their_own_prompt_have_r_precision_one():
    texts = prompts()
    rng = np.random.default_rng(1)
    index = np.repeat(np.arange(10), 8)  # 8 views per prompt
    images = texts[index] + 0.05 * rng.normal(size=(80, 32))
    assert r_precision(images, texts, index) == 1.0
    assert clip_score(images, texts, index) > 95


def test_renders_of_shuffled_prompts_score_chance():
    texts = prompts()
    rng = np.random.default_rng(2)
    index = rng.integers(0, 10, size=4000)  # the render's own prompt
    shown = rng.integers(0, 10, size=4000)  # what the render actually shows: unrelated to it
    score = r_precision(texts[shown], texts, index)
    assert abs(score - 0.1) < 0.02  # chance: 1 / P
    assert abs(r_precision(texts[shown], texts, index, k=3) - 0.3) < 0.03
    derangement = (np.arange(10) + 1) % 10  # every render shows another prompt
    assert r_precision(texts[derangement], texts, np.arange(10)) == 0.0


def test_a_tie_counts_against_the_render_and_ranks_count_better_prompts():
    texts = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # prompts 0 and 1 are the same text
    images = np.array([[1.0, 0.1], [0.2, 1.0]])
    assert retrieval_ranks(images, texts, np.array([0, 2])).tolist() == [1, 0]
    assert r_precision(images, texts, np.array([0, 2])) == 0.5


def test_clip_score_is_100_times_the_clipped_cosine():
    texts = np.array([[1.0, 0.0]])
    images = np.array([[0.5, np.sqrt(0.75)], [-1.0, 0.0]])  # cosine 0.5 and -1
    assert clip_score(images, texts, np.array([0, 0])) == pytest.approx((50.0 + 0.0) / 2)
    assert clip_score(images * 7, texts * 3, np.array([0, 0])) == pytest.approx(25.0)  # scale-free


def test_diversity_is_the_mean_pairwise_cosine_distance_view_by_view():
    same = np.tile(prompts(p=4)[None], (3, 1, 1))  # 3 seeds, 4 views, identical
    assert diversity(same) == pytest.approx(0.0, abs=1e-12)
    basis = np.eye(3)[:, None, :].repeat(2, axis=1)  # seed s shows direction e_s in both views
    assert diversity(basis) == pytest.approx(1.0)
    opposite = np.stack([basis[0], -basis[0]])
    assert diversity(opposite) == pytest.approx(2.0)
    assert diversity(same[:1]) is None  # one seed: no spread to measure
