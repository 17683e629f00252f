"""Rate tools and checkers, each shown to pass on data that satisfies it and fail on data that
violates it."""

from __future__ import annotations

import numpy as np
import pytest

from theory import bounds, checks, rates

T = np.unique(np.round(np.logspace(0, 4, 40)))


def _noisy(curve, seeds=16, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    return curve * np.exp(noise * rng.standard_normal((seeds, len(curve))))


def test_slope_fit_recovers_known_rates_with_ci():
    for power in (1.0, 0.5, 2.0):
        fit = rates.fit_slope(T, _noisy(3.0 * T ** -power))
        assert fit.lo <= -power <= fit.hi and abs(fit.slope + power) < 0.02
        assert fit.t_min >= 1000 and fit.t_max == 10_000


def test_slope_checker_passes_1_over_t_and_fails_1_over_sqrt_t():
    good = rates.fit_slope(T, _noisy(1 / T))
    bad = rates.fit_slope(T, _noisy(1 / np.sqrt(T)))
    assert checks.slope_in_range("R1(a)", good, -1.15, -0.85).passed
    assert not checks.slope_in_range("R1(a)", bad, -1.15, -0.85).passed
    fast = rates.fit_slope(T, _noisy(np.exp(-T / 2000)))
    assert checks.faster_than("linear", fast, -1.5).passed
    assert not checks.faster_than("linear", good, -1.5).passed


def test_under_bound_checker():
    gap = 2 / (T + 10)
    assert checks.under_bound("R1(b)", T, gap, 3 / (T + 10)).passed
    assert not checks.under_bound("R1(b)", T, gap, 1.5 / (T + 10)).passed
    assert not checks.under_bound("void", T, gap, np.full_like(T, np.inf)).passed


def test_plateau_consecutive_rates_and_rounds_to_eps():
    products, ratio = rates.t_gap_plateau(T, 5 / T)
    np.testing.assert_allclose(products, 5.0)
    assert ratio == pytest.approx(1.0)
    np.testing.assert_allclose(rates.consecutive_rates(T, T ** -1.0), -1.0)
    assert rates.rounds_to_eps(T, 10 / T, 0.01) == pytest.approx(1000, rel=1e-6)
    assert rates.rounds_to_eps(T, 10 / T, 1e-9) == np.inf
    assert rates.linear_rate(T[:10], 0.9 ** T[:10]) == pytest.approx(0.9)


def test_monotone_and_within_checkers():
    x = np.arange(6.0)
    assert checks.increasing("floor", [0.1, 0.2, 0.4], [1, 2, 3], "floor").passed
    assert not checks.increasing("floor", [0.1, 0.2, 0.4], [1, 3, 2], "floor").passed
    assert checks.monotone_trend("gain", x, x ** 2, "gain").passed
    assert not checks.monotone_trend("gain", x, -x, "gain").passed
    assert checks.all_within("R3", [0.5, 1.0], [1.0, 1.0], "bound").passed
    assert not checks.all_within("R3", [0.5, 1.2], [1.0, 1.0], "bound").passed
    assert rates.spearman([1, 2, 3, 4], [1, 1, 2, 3]) == pytest.approx(0.9486832980505138)


def test_pl_bound_arithmetic_and_conditions():
    c = bounds.PLConstants(L=1.0, mu=0.5, sigma2_bar=0.2, G2=1.0, E=2, beta=4.0, gamma0=8.0,
                           delta0=0.1)
    assert c.valid
    C = 1.0 * 0.2 / 2 + 2 * 1.0 * 0.5 * 1 * 1.0
    assert c.noise_term == pytest.approx(C)
    assert c.nu == pytest.approx(max(16 * C / (4 * 0.5 - 1), 0.8))
    assert c.bound(2.0) == pytest.approx(c.nu / 10)
    weak = bounds.PLConstants(**{**c.__dict__, "mu": 0.2})   # beta mu = 0.8 < 1
    assert not weak.valid and weak.nu == np.inf
    assert bounds.optimum_loss_bound(0.3, 0.5) == pytest.approx(1.2)
    assert bounds.tradeoff_bounds(0.5, 1.0, 2.0, 0.5)["personal_gain"] == pytest.approx(4.0)


def test_heterogeneity_is_zero_for_identical_clients_and_positive_otherwise():
    from fedsim.tabular.mdp import make_instance
    from fedsim.tabular.config import InstanceSpec
    from fedsim.tabular.oracles import Regularizer
    from theory.constants import heterogeneity

    same = make_instance(InstanceSpec(num_clients=3, num_states=4, num_actions=2, lam=0.0))
    assert abs(heterogeneity(same, Regularizer())) < 1e-8
    mixed = make_instance(InstanceSpec(num_clients=3, num_states=4, num_actions=2, lam=2.0))
    assert heterogeneity(mixed, Regularizer()) > 0.01
