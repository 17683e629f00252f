"""Rate tools: what the convergence curves say, with uncertainty over seeds.

Curves are gaps g[seed, i] at round counts t[i] (log-spaced checkpoints). The rate is read
off the seed-mean curve; its confidence interval comes from resampling seeds (bootstrap).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class SlopeFit(NamedTuple):
    slope: float
    lo: float          # bootstrap percentile interval over seeds
    hi: float
    points: int        # checkpoints on the tail that entered the fit
    t_min: float       # the tail: t_min <= t <= t_max
    t_max: float


def tail_mask(rounds, tail_fraction: float = 0.1) -> np.ndarray:
    """The asymptotic tail: checkpoints with t >= tail_fraction * T (the last decade by default)."""
    rounds = np.asarray(rounds, np.float64)
    return rounds >= tail_fraction * rounds.max()


def loglog_slope(rounds, gaps) -> float:
    """Least-squares slope of log gap against log t (all points must be positive)."""
    x, y = np.log(np.asarray(rounds, np.float64)), np.log(np.asarray(gaps, np.float64))
    return float(np.polyfit(x, y, 1)[0])


def fit_slope(rounds, gaps_by_seed, tail_fraction: float = 0.1, n_boot: int = 2000,
              level: float = 0.95, seed: int = 0) -> SlopeFit:
    """Slope of the seed-mean gap on the tail, with a bootstrap CI over seeds.

    gaps_by_seed: (seeds, checkpoints), or (checkpoints,) for a single deterministic curve
    (then the interval is the point). Raises ValueError when fewer than 3 tail points have a
    positive mean gap (a gap at float resolution carries no rate information).
    """
    rounds = np.asarray(rounds, np.float64)
    gaps = np.atleast_2d(np.asarray(gaps_by_seed, np.float64))
    mask = tail_mask(rounds, tail_fraction) & (gaps.mean(0) > 0)
    if mask.sum() < 3:
        raise ValueError(f"only {int(mask.sum())} tail checkpoints with a positive gap; need 3")
    slope = loglog_slope(rounds[mask], gaps.mean(0)[mask])
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot if len(gaps) > 1 else 0):
        mean = gaps[rng.integers(0, len(gaps), len(gaps))].mean(0)[mask]
        if np.all(mean > 0):
            boots.append(loglog_slope(rounds[mask], mean))
    alpha = (1 - level) / 2
    lo, hi = (np.quantile(boots, [alpha, 1 - alpha]) if boots else (slope, slope))
    return SlopeFit(slope, float(lo), float(hi), int(mask.sum()), float(rounds[mask].min()),
                    float(rounds[mask].max()))


def consecutive_rates(rounds, gaps) -> np.ndarray:
    """Local slopes log(g[i+1]/g[i]) / log(t[i+1]/t[i]) between consecutive checkpoints."""
    t, g = np.log(np.asarray(rounds, np.float64)), np.log(np.asarray(gaps, np.float64))
    return np.diff(g) / np.diff(t)


def t_gap_plateau(rounds, gaps, tail_fraction: float = 0.1) -> tuple[np.ndarray, float]:
    """t * gap on the tail, and its max/min ratio (close to 1 for a clean O(1/t) tail)."""
    rounds, gaps = np.asarray(rounds, np.float64), np.asarray(gaps, np.float64)
    mask = tail_mask(rounds, tail_fraction)
    product = rounds[mask] * gaps[mask]
    return product, float(product.max() / product.min())


def rounds_to_eps(rounds, gaps, eps: float) -> float:
    """First t with gap(t) <= eps, interpolated log-log between checkpoints; inf if never."""
    rounds, gaps = np.asarray(rounds, np.float64), np.asarray(gaps, np.float64)
    below = np.flatnonzero(gaps <= eps)
    if below.size == 0:
        return float("inf")
    i = int(below[0])
    if i == 0:
        return float(rounds[0])
    (t0, t1), (g0, g1) = rounds[i - 1:i + 1], gaps[i - 1:i + 1]
    if g0 <= 0 or g1 <= 0:
        return float(t1)
    frac = (np.log(g0) - np.log(eps)) / (np.log(g0) - np.log(g1))
    return float(np.exp(np.log(t0) + frac * (np.log(t1) - np.log(t0))))


def linear_rate(rounds, gaps, tail_fraction: float = 0.0) -> float:
    """Per-round contraction factor q from a fit log gap = a + t log q (geometric convergence)."""
    rounds, gaps = np.asarray(rounds, np.float64), np.asarray(gaps, np.float64)
    mask = tail_mask(rounds, tail_fraction) & (gaps > 0)
    return float(np.exp(np.polyfit(rounds[mask], np.log(gaps[mask]), 1)[0]))


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(v):
        v = np.asarray(v, np.float64)
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # average ties
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])
