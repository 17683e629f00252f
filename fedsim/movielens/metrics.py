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


def row_average_ranks(values, keep) -> np.ndarray:
    """average_ranks within each row of `values` (C, N) over the entries where `keep`; 0
    elsewhere. One lexsort of all kept entries, no loop over rows."""
    values, keep = np.asarray(values, np.float64), np.asarray(keep, bool)
    rows, cols = np.nonzero(keep)
    order = np.lexsort((values[rows, cols], rows))
    r, v = rows[order], values[rows, cols][order]
    new_group = np.ones(len(r), bool)
    new_group[1:] = (r[1:] != r[:-1]) | (v[1:] != v[:-1])
    group = np.cumsum(new_group) - 1
    first = np.flatnonzero(new_group)                        # each tie group's first position
    size = np.diff(np.append(first, len(r)))
    row_start = np.searchsorted(r, np.arange(values.shape[0]))   # r is sorted
    ranks = np.zeros(values.shape)
    ranks[r, cols[order]] = first[group] + (size[group] - 1) / 2.0 - row_start[r]
    return ranks


def row_spearman(x, y, keep) -> np.ndarray:
    """spearman(x[c], y[c]) over the kept entries of every row c at once (nan where
    undefined: fewer than two entries or a constant side)."""
    keep = np.asarray(keep, bool)
    rx, ry = row_average_ranks(x, keep), row_average_ranks(y, keep)
    n = keep.sum(1)
    mean = lambda a: a.sum(1) / np.maximum(n, 1)
    cx, cy = (rx - mean(rx)[:, None]) * keep, (ry - mean(ry)[:, None]) * keep
    sxx, syy, sxy = (cx * cx).sum(1), (cy * cy).sum(1), (cx * cy).sum(1)
    # Ranks are multiples of 1/2, so a constant side gives exactly zero spread.
    defined = (n >= 2) & (sxx > 0) & (syy > 0)
    return np.where(defined, sxy / np.sqrt(np.where(defined, sxx * syy, 1.0)), np.nan)


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
    rho = row_spearman(scores, labels, keep)
    return {"accuracy": float(correct[keep].mean()), "auc": auc(scores[keep], labels[keep]),
            "client_accuracy": per_client, "client_spearman": rho}
