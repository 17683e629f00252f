"""Checkers: measured data in, a verdict out. Each is shown to fail on violating data in tests/."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from theory.rates import SlopeFit, spearman


@dataclass(frozen=True)
class Verdict:
    claim: str
    measured: str
    expected: str
    bound: str
    passed: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _fit_text(fit: SlopeFit) -> str:
    return f"slope {fit.slope:.3f} [{fit.lo:.3f}, {fit.hi:.3f}] on t in [{fit.t_min:.0f}, {fit.t_max:.0f}]"


def slope_in_range(claim: str, fit: SlopeFit, lo: float, hi: float) -> Verdict:
    """Pass when the fitted slope (point estimate) lies in [lo, hi]."""
    return Verdict(claim, _fit_text(fit), f"slope in [{lo}, {hi}]", "-", lo <= fit.slope <= hi)


def under_bound(claim: str, t, measured, bound) -> Verdict:
    """Pass when measured <= bound at every checkpoint; reports the tightest ratio."""
    measured, bound = np.asarray(measured, np.float64), np.asarray(bound, np.float64)
    ratio = measured / bound
    worst = int(np.argmax(ratio))
    return Verdict(claim, f"max gap/bound = {ratio[worst]:.3g} at t = {np.asarray(t)[worst]:.0f} "
                          f"(min {ratio.min():.3g})",
                   "gap <= bound at every checkpoint", "nu / (t + gamma0)",
                   bool(np.all(np.isfinite(bound)) and np.all(measured <= bound)))


def increasing(claim: str, x, y, what: str) -> Verdict:
    """Pass when y strictly increases with x (sorted by x)."""
    order = np.argsort(x)
    y = np.asarray(y, np.float64)[order]
    values = ", ".join(f"{v:.3g}" for v in y)
    return Verdict(claim, f"{what}: {values}", f"{what} strictly increasing", "-",
                   bool(np.all(np.diff(y) > 0)))


def faster_than(claim: str, fit: SlopeFit, slope_max: float) -> Verdict:
    """Pass when the tail is steeper than slope_max (e.g. a linear rate is not O(1/T))."""
    return Verdict(claim, _fit_text(fit), f"slope < {slope_max} (faster than 1/T)", "-",
                   fit.slope < slope_max)


def monotone_trend(claim: str, x, y, what: str, min_rho: float = 0.9) -> Verdict:
    """Pass when Spearman's rho between x and y is at least min_rho."""
    rho = spearman(x, y)
    return Verdict(claim, f"Spearman rho({what}) = {rho:.3f}", f"rho >= {min_rho}", "-",
                   rho >= min_rho)


def all_within(claim: str, measured, bound, what: str) -> Verdict:
    """Pass when every measured value is <= its bound (with a float32 allowance of 1e-5)."""
    measured, bound = np.asarray(measured, np.float64), np.asarray(bound, np.float64)
    slack = bound - measured
    positive = bound > 0
    ratio = np.max(measured[positive] / bound[positive]) if positive.any() else float("nan")
    return Verdict(claim, f"{what}: min slack {slack.min():.3g} over {slack.size} cases "
                          f"(max measured/bound {ratio:.3g} where the bound is > 0)",
                   "measured <= bound everywhere", what, bool(np.all(slack >= -1e-5)))


def loglog_slope_in_range(claim: str, x, y, lo: float, hi: float, what: str) -> Verdict:
    """Pass when the least-squares slope of log y against log x lies in [lo, hi] (a
    deterministic curve: y must be positive)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = bool(np.all(y > 0))
    slope = float(np.polyfit(np.log(x), np.log(y), 1)[0]) if ok else float("nan")
    return Verdict(claim, f"slope {slope:.3f} of log {what} on [{x.min():g}, {x.max():g}]",
                   f"slope in [{lo}, {hi}]", "-", ok and lo <= slope <= hi)


def at_most(claim: str, value, tolerance: float, what: str) -> Verdict:
    """Pass when the largest of `value` is at most `tolerance`."""
    worst = float(np.max(np.asarray(value, np.float64)))
    return Verdict(claim, f"{what} = {worst:.3g}", f"<= {tolerance:g}", f"{tolerance:g}",
                   bool(np.isfinite(worst) and worst <= tolerance))


def at_least(claim: str, value, threshold: float, what: str) -> Verdict:
    """Pass when the smallest of `value` is at least `threshold` (a negative control: an
    effect that must be visible)."""
    least = float(np.min(np.asarray(value, np.float64)))
    return Verdict(claim, f"{what} = {least:.3g}", f">= {threshold:g}", f"{threshold:g}",
                   bool(np.isfinite(least) and least >= threshold))
