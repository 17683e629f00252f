"""Recommendation metrics from scores (recommend if score > 0) and labels, per client and
pooled. Padded entries (mask 0) are ignored."""

from __future__ import annotations

import numpy as np


def average_ranks(v) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank (O(n log n))."""
    v = np.asarray(v, np.float64)
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (starts + (counts - 1) / 2.0)[inverse]


def auc(scores, labels) -> float:
    """P(score of a random positive > score of a random negative), ties counting 1/2
    (Mann-Whitney); nan without both classes."""
    labels = np.asarray(labels) > 0.5
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = average_ranks(scores)
    return float((r[labels].sum() - n_pos * (n_pos - 1) / 2) / (n_pos * n_neg))


def spearman(x, y) -> float:
    """Spearman rank correlation; nan when either side is constant (undefined)."""
    rx, ry = average_ranks(x), average_ranks(y)
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def evaluate_scores(scores, labels, mask) -> dict:
    """Pooled accuracy (every rating counts once: clients weighted by their rating counts),
    pooled AUC, and per-client accuracy and Spearman(score, label) arrays (nan if undefined)."""
    scores, labels, mask = (np.asarray(a) for a in (scores, labels, mask))
    keep = mask > 0
    correct = (scores > 0) == (labels > 0.5)
    counts = keep.sum(1)
    per_client = np.where(counts > 0, (correct & keep).sum(1) / np.maximum(counts, 1), np.nan)
    rho = np.array([spearman(s[k], l[k]) for s, l, k in zip(scores, labels, keep)])
    return {"accuracy": float(correct[keep].mean()), "auc": auc(scores[keep], labels[keep]),
            "client_accuracy": per_client, "client_spearman": rho}
