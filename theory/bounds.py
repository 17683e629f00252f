"""Bounds R1-R3 evaluated from the constants of a concrete instance (see statements.md).

Every function here is plain arithmetic on constants; `theory.constants` estimates the
constants of a tabular instance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# ----------------------------------------------------------------------------- R1(a)


def mei_smoothness(reward_span: float, gamma: float, tau: float = 0.0, num_actions: int = 2) -> float:
    """L of the softmax return: (8 span + tau (4 + 8 log A)) / (1 - gamma)^3.

    Mei et al. (2020) Lemma 7 (tau = 0) and Lemma 14 (entropy), stated for rewards in [0, 1];
    shifting r leaves the gradient unchanged and scaling r scales L, hence the span.
    """
    return (8 * reward_span + tau * (4 + 8 * np.log(num_actions))) / (1 - gamma) ** 3


def mei_rate_bound(t, *, reward_span: float, gamma: float, num_states: int, c: float,
                   mismatch: float, inv_rho_max: float):
    """Mei et al. (2020) Thm 4, exact softmax PG with eta = (1 - gamma)^3 / (8 span):

        J* - J(theta_t) <= span * 16 S / (c^2 (1 - gamma)^6 t) * ||d^{pi*}_rho / rho||_inf^2
                                                               * ||1 / rho||_inf,

    c = inf_t min_s pi_t(a*(s)|s) > 0. It is the O(1/t) statement, with a constant that is
    loose by orders of magnitude (the sweep reports the ratio).
    """
    t = np.asarray(t, np.float64)
    constant = reward_span * 16 * num_states * mismatch ** 2 * inv_rho_max / (c ** 2 * (1 - gamma) ** 6)
    return constant / t


# ----------------------------------------------------------------------------- R1(b)


@dataclass(frozen=True)
class PLConstants:
    """Constants of the stochastic-gradient bound (statements.md, R1(b)).

    L: smoothness of every J_k; mu: PL constant of J (||grad J||^2 >= 2 mu (J* - J));
    sigma2_bar: sum_k p_k^2 sigma_k^2, sigma_k^2 the variance of client k's batch estimate;
    G2: bound on E||g_k||^2; E local steps; eta_t = beta / (t + gamma0); delta0 = J* - J(theta_0).
    """

    L: float
    mu: float
    sigma2_bar: float
    G2: float
    E: int
    beta: float
    gamma0: float
    delta0: float

    def conditions(self) -> dict[str, bool]:
        """The step-size conditions the bound needs, each by name."""
        return {
            "beta * mu > 1": self.beta * self.mu > 1,
            "eta_0 = beta / gamma0 <= 1 / L": self.beta / self.gamma0 <= 1 / self.L,
            "gamma0 >= E (so eta_t <= 2 eta_{t+E})": self.gamma0 >= self.E,
        }

    @property
    def valid(self) -> bool:
        return all(self.conditions().values())

    @property
    def noise_term(self) -> float:
        """C = L sigma2_bar / 2 + 2 L^2 eta_0 (E - 1)^2 G^2: variance, then client drift."""
        eta0 = self.beta / self.gamma0
        return self.L * self.sigma2_bar / 2 + 2 * self.L ** 2 * eta0 * (self.E - 1) ** 2 * self.G2

    @property
    def nu(self) -> float:
        """nu = max(beta^2 C / (beta mu - 1), gamma0 delta0); inf when beta mu <= 1."""
        if self.beta * self.mu <= 1:
            return float("inf")
        return max(self.beta ** 2 * self.noise_term / (self.beta * self.mu - 1),
                   self.gamma0 * self.delta0)

    def bound(self, local_steps):
        """E[J* - J(theta_t)] <= nu / (t + gamma0), t counting local steps (t = rounds * E)."""
        return self.nu / (np.asarray(local_steps, np.float64) + self.gamma0)


# ----------------------------------------------------------------------------- R3


def value_shift_bound(reward_difference: float, gamma: float) -> float:
    """|J_r(pi) - J_r'(pi)| <= ||r - r'||_inf / (1 - gamma) for every policy pi."""
    return reward_difference / (1 - gamma)


def optimum_loss_bound(reward_difference: float, gamma: float) -> float:
    """J_r(pi_r*) - J_r(pi_r'*) <= 2 ||r - r'||_inf / (1 - gamma): optimising the wrong reward.

    Two applications of the value shift: J_r(pi_r*) <= J_r'(pi_r*) + shift <= J_r'(pi_r'*) + shift
    <= J_r(pi_r'*) + 2 shift.
    """
    return 2 * value_shift_bound(reward_difference, gamma)


def tradeoff_bounds(lam: float, h_max: float, h_deviation: float, gamma: float) -> dict:
    """The R3 bounds with a constant lambda (additive form):

    intrinsic loss of the shaped global optimum   <= 2 lam h_max / (1 - gamma)
    personalisation gain of client k              <= 2 lam ||h_k - h_bar||_inf / (1 - gamma)
    """
    return {"intrinsic_loss": optimum_loss_bound(lam * h_max, gamma),
            "personal_gain": optimum_loss_bound(lam * h_deviation, gamma)}
