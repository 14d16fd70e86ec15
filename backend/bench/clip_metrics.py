"""CLIP R-precision, CLIP score and CLIP diversity: quality numbers for guidance without a known answer.

Stable Diffusion has no target to compare a render with, so the bench measures what DreamFusion
(Poole et al. 2022, Sec. 4, "CLIP R-Precision") and the papers after it measure: whether CLIP reads
the render as its own prompt. All three take unit-length CLIP embeddings (numpy arrays); which
images are embedded (the evaluation ring's views) is backend/bench/clip.py's business.

R-precision (R@k)  For each render i with image embedding x_i and its own prompt p(i), rank every
                   prompt of the suite by cosine similarity <x_i, y_q> to the prompts' text
                   embeddings y_q. The render is retrieved when fewer than k *other* prompts are at
                   least as similar as its own (a tie counts against it). R@k is the share of
                   renders retrieved. The suite's prompts are the only candidates, so chance is
                   k / P for P prompts (DreamFusion used 153 COCO captions); with a single prompt
                   R@1 is 1 whatever the render, and means nothing.
CLIP score         100 * max(<x_i, y_p(i)>, 0), averaged over renders: the cosine similarity of a
                   render and its own prompt on torchmetrics' scale (Hessel et al. 2021 weight it
                   by 2.5 instead of 100; the ranking is the same).
diversity          the spread of the final renders of one prompt across seeds: for every view v
                   of the ring and every pair of seeds a < b, the cosine distance
                   1 - <x_{a,v}, x_{b,v}>, averaged over views and pairs. 0: every seed made the
                   same picture (to CLIP); larger: different objects. Comparing the same view
                   keeps the camera out of the number. Needs at least two seeds.
"""

from __future__ import annotations

import numpy as np


def normalize(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
    return embeddings / np.where(norms > 0, norms, 1.0)


def retrieval_ranks(image_embeddings: np.ndarray, text_embeddings: np.ndarray, prompt_index: np.ndarray) -> np.ndarray:
    """Per render: how many other prompts are at least as similar as its own (0: retrieved first).

    image_embeddings (N, D), text_embeddings (P, D), prompt_index (N,) in 0..P-1.
    """
    images, texts = normalize(image_embeddings), normalize(text_embeddings)
    index = np.asarray(prompt_index, dtype=np.int64)
    similarity = images @ texts.T  # (N, P)
    own = similarity[np.arange(len(index)), index]
    others = np.ones_like(similarity, dtype=bool)
    others[np.arange(len(index)), index] = False
    return ((similarity >= own[:, None]) & others).sum(axis=1)


def r_precision(image_embeddings: np.ndarray, text_embeddings: np.ndarray, prompt_index: np.ndarray, k: int = 1) -> float:
    """R@k: the share of renders whose own prompt is among the k most similar (see module doc)."""
    ranks = retrieval_ranks(image_embeddings, text_embeddings, prompt_index)
    return float(np.mean(ranks < k)) if len(ranks) else float("nan")


def clip_score(image_embeddings: np.ndarray, text_embeddings: np.ndarray, prompt_index: np.ndarray) -> float:
    """Mean of 100 * max(cos(render, own prompt), 0) over renders."""
    images, texts = normalize(image_embeddings), normalize(text_embeddings)
    own = np.einsum("nd,nd->n", images, texts[np.asarray(prompt_index, dtype=np.int64)])
    return float(np.mean(100.0 * np.clip(own, 0.0, None))) if len(own) else float("nan")


def diversity(final_embeddings: np.ndarray) -> float | None:
    """Mean pairwise cosine distance across seeds, view by view. final_embeddings (S, V, D).

    None with fewer than two seeds.
    """
    x = normalize(np.asarray(final_embeddings, dtype=np.float64))
    seeds = x.shape[0]
    if seeds < 2:
        return None
    similarity = np.einsum("avd,bvd->vab", x, x)  # (V, S, S)
    upper = np.triu_indices(seeds, k=1)
    return float(np.mean(1.0 - similarity[:, upper[0], upper[1]]))
