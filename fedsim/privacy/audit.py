"""A lower bound on epsilon from one run (Steinke, Nasr, Jagielski, "Privacy auditing with one
(1) training run", NeurIPS 2023).

n canaries are each in the run independently with probability 1/2. The auditor ranks them by
score, guesses "in" for the k highest and "out" for the k lowest, and abstains on the rest; v
of its r = 2k guesses are right. If the run is (epsilon, delta)-DP, then (their Theorem 3.3)

    P[v or more right] <= P[Binomial(r, e^eps / (1 + e^eps)) >= v] + 2 n delta alpha,
    alpha = max_{1 <= i <= v} P[v - i <= Binomial(r, e^eps / (1 + e^eps)) < v] / i,

so every epsilon at which this p-value is below the significance beta is ruled out: the lower
bound is the largest such epsilon. Trying several k spends the significance: each k is
tested at beta / (number of k), so the bound holds at level beta whichever k wins.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

from fedsim.errors import check_int, check_real, require


def p_value(num_canaries: int, guesses: int, correct: int, epsilon: float,
            delta: float) -> float:
    """P[at least `correct` of `guesses` right] under (epsilon, delta)-DP, bounded above."""
    require(0 <= correct <= guesses <= num_canaries, "correct", correct,
            f"must satisfy 0 <= correct <= guesses ({guesses}) <= canaries ({num_canaries})")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = stats.binom.sf(correct - 1, guesses, q)
    if delta == 0 or correct == 0:
        return min(float(beta), 1.0)
    below = stats.binom.pmf(np.arange(correct - 1, -1, -1), guesses, q)   # v-1, v-2, ..., 0
    alpha = float(np.max(np.cumsum(below) / np.arange(1, correct + 1)))
    return min(float(beta + 2 * num_canaries * delta * alpha), 1.0)


def epsilon_lower_bound(num_canaries: int, guesses: int, correct: int, delta: float,
                        significance: float = 0.05) -> float:
    """The largest epsilon whose p-value is below `significance` (0 if none is)."""
    if p_value(num_canaries, guesses, correct, 0.0, delta) >= significance:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(num_canaries, guesses, correct, hi, delta) < significance:
        lo, hi = hi, 2 * hi
        if hi > 1e3:
            return lo
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if p_value(num_canaries, guesses, correct, mid, delta) < significance \
            else (lo, mid)
    return lo


class AuditResult(NamedTuple):
    epsilon_lower: float   # the bound at level `significance`
    guesses: int           # r = 2k of the winning k
    correct: int           # v
    significance: float


def one_run_audit(scores, included, delta: float, significance: float = 0.05,
                  ks=None) -> AuditResult:
    """The one-run bound from canary scores (n,) and which canaries were in (n,) bool: the
    best k of `ks` (default: n/20, n/10, n/4, n/2 guesses each way), each at level
    significance / len(ks)."""
    scores, included = np.asarray(scores, float), np.asarray(included, bool)
    n = scores.shape[0]
    check_int("canaries", n, 2)
    check_real("significance", significance, 0.0, 1.0, lo_open=True, hi_open=True)
    ks = sorted({max(1, n // d) for d in (20, 10, 4, 2)} if ks is None else set(ks))
    require(all(1 <= k and 2 * k <= n for k in ks), "ks", ks, f"must be in [1, {n // 2}]")
    order = np.argsort(-scores, kind="stable")
    best = AuditResult(0.0, 2 * ks[0], 0, significance)
    for k in ks:
        correct = int(included[order[:k]].sum() + (~included[order[-k:]]).sum())
        bound = epsilon_lower_bound(n, 2 * k, correct, delta, significance / len(ks))
        if bound > best.epsilon_lower or best.correct == 0:
            best = AuditResult(bound, 2 * k, correct, significance)
    return best
