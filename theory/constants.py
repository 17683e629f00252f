"""Estimators of the constants in the bounds, for a tabular instance.

Exact where a formula exists (reward span, Mei's L, J*, delta0, Gamma, the reward deviations
of R3, the distribution-mismatch coefficient); measured otherwise, always at stated points:

    L          max over clients and points of the Hessian's spectral norm (autodiff, exact at
               each point); Mei's analytic L is reported beside it.
    mu (PL)    min over points of ||grad J||^2 / (2 (J* - J)) (exact gradients), and at the
               optimum the smallest curvature of -J off the softmax shift directions.
    sigma_k^2  Monte-Carlo variance of client k's batch gradient estimate, max over points.
    G^2        Monte-Carlo E||g_k||^2, max over clients and points.

The points are the iterates a run actually visited (checkpoints of every seed), since the
analysis needs the constants on the region the iterates explore.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.tabular import oracles
from fedsim.tabular.mdp import TabularInstance
from fedsim.tabular.sampling import sampled_gradient
from fedsim.tabular.config import LearnerSpec


def _arrays(instance: TabularInstance):
    return (jnp.asarray(instance.P), jnp.asarray(instance.shaped_reward()), jnp.asarray(instance.p),
            jnp.asarray(instance.rho))


def reward_span(instance: TabularInstance) -> float:
    r = instance.shaped_reward()
    return float(r.max() - r.min())


def measured_smoothness(instance: TabularInstance, reg: oracles.Regularizer, points) -> float:
    """max_{k, theta in points} ||Hessian of J_k at theta||_2."""
    P, r, _, rho = _arrays(instance)
    S, A = instance.theta0.shape

    def hessian(theta, P_k, r_k):
        flat = lambda x: oracles.client_return(x.reshape(S, A), P_k, r_k, rho, instance.gamma, reg)
        return jax.hessian(flat)(theta.reshape(-1))

    # Eigenvalues in numpy: a large batched eigvalsh inside XLA's CPU runtime was seen to hang.
    per_point = jax.jit(jax.vmap(jax.vmap(hessian, (None, 0, 0)), (0, None, None)))
    hessians = np.asarray(per_point(jnp.asarray(points), P, r), np.float64)
    return float(np.max(np.abs(np.linalg.eigvalsh(hessians))))


def pl_ratios(instance: TabularInstance, reg: oracles.Regularizer, points, J_star: float,
              gap_floor: float = 1e-4) -> np.ndarray:
    """||grad J||^2 / (2 (J* - J)) at each point whose gap exceeds gap_floor (float32 resolution)."""
    P, r, p, rho = _arrays(instance)

    def both(theta):
        grad = oracles.global_gradient(theta, P, r, p, rho, instance.gamma, reg)
        return jnp.sum(grad ** 2), oracles.global_return(theta, P, r, p, rho, instance.gamma, reg)

    grad_sq, J = (np.asarray(x, np.float64) for x in jax.jit(jax.vmap(both))(jnp.asarray(points)))
    gap = J_star - J
    keep = gap > gap_floor
    return grad_sq[keep] / (2 * gap[keep])


def optimal_logits(instance: TabularInstance, reg: oracles.Regularizer) -> np.ndarray:
    """Logits of the regularised optimum (shared dynamics): theta* = Q*/tau + log pi_ref."""
    tau = float(reg.tau)
    if tau <= 0:
        raise ValueError("the unregularised optimum is deterministic: its logits are infinite")
    r_bar = np.tensordot(instance.p.astype(np.float64), instance.shaped_reward(), axes=1)
    log_ref = np.broadcast_to(np.asarray(reg.log_ref, np.float64), r_bar.shape)
    V = oracles.optimal_values(instance.P[0], r_bar, instance.gamma, tau, log_ref)
    Q = r_bar + instance.gamma * instance.P[0].astype(np.float64) @ V
    return Q / tau + log_ref


def curvature_at(instance: TabularInstance, reg: oracles.Regularizer, theta) -> float:
    """Smallest eigenvalue of -Hessian J(theta) off the per-state shift directions.

    Adding a constant to theta[s, :] leaves the policy unchanged, so the Hessian is singular
    along those S directions and gradients never point along them; near the optimum
    ||grad J||^2 / (2 gap) tends to this curvature.
    """
    P, r, p, rho = _arrays(instance)
    S, A = instance.theta0.shape
    flat = lambda x: oracles.global_return(x.reshape(S, A), P, r, p, rho, instance.gamma, reg)
    H = -np.asarray(jax.hessian(flat)(jnp.asarray(theta, jnp.float32).reshape(-1)), np.float64)
    shifts = np.kron(np.eye(S), np.ones((1, A))) / np.sqrt(A)       # (S, S*A), orthonormal rows
    basis = np.linalg.svd(np.eye(S * A) - shifts.T @ shifts)[0][:, :S * (A - 1)]
    return float(np.linalg.eigvalsh(basis.T @ H @ basis).min())


def gradient_noise(instance: TabularInstance, learner: LearnerSpec, reg: oracles.Regularizer,
                   points, draws: int = 2000, seed: int = 0) -> tuple[np.ndarray, float]:
    """(sigma_k^2 for each client, G^2): Monte-Carlo over `draws` batch estimates per point."""
    P, r, _, rho = _arrays(instance)
    horizon = learner.horizon_for(instance.gamma)

    def stats(theta, P_k, r_k, key):
        estimate = lambda k: sampled_gradient(theta, P_k, r_k, rho, instance.gamma, reg, k,
                                              batch=learner.batch, horizon=horizon,
                                              estimator=learner.estimator)
        g = jax.vmap(estimate)(jax.random.split(key, draws))
        exact = oracles.client_gradient(theta, P_k, r_k, rho, instance.gamma, reg)
        return jnp.mean(jnp.sum((g - exact) ** 2, (1, 2))), jnp.mean(jnp.sum(g ** 2, (1, 2)))

    points = jnp.asarray(points)
    K = instance.num_clients
    keys = jax.random.split(jax.random.key(seed), len(points) * K).reshape(len(points), K)
    var, second = jax.jit(jax.vmap(jax.vmap(stats, (None, 0, 0, 0)), (0, None, None, 0)))(
        points, P, r, keys)
    return np.asarray(var, np.float64).max(0), float(np.max(second))


def start_gap(instance: TabularInstance, reg: oracles.Regularizer, J_star: float) -> float:
    P, r, p, rho = _arrays(instance)
    return J_star - float(oracles.global_return(jnp.asarray(instance.theta0), P, r, p, rho,
                                                instance.gamma, reg))


def heterogeneity(instance: TabularInstance, reg: oracles.Regularizer) -> float:
    """Gamma = sum_k p_k J_k* - J* >= 0 (Li et al.'s heterogeneity, for maximisation): zero when
    one policy is optimal for every client, larger the more the clients' optima disagree."""
    optimum = oracles.optimal_value(instance, reg)
    return optimum.upper_bound - optimum.J_star


def greedy_optimal_actions(instance: TabularInstance) -> np.ndarray:
    """a*(s) of the averaged shaped MDP (shared dynamics, no regularisation)."""
    r_bar = np.tensordot(instance.p.astype(np.float64), instance.shaped_reward(), axes=1)
    V = oracles.optimal_values(instance.P[0], r_bar, instance.gamma)
    return np.argmax(r_bar + instance.gamma * instance.P[0].astype(np.float64) @ V, axis=1)


def mismatch_coefficient(instance: TabularInstance) -> float:
    """||d_rho^{pi*} / rho||_inf with d the normalised discounted state distribution."""
    a_star = greedy_optimal_actions(instance)
    S = instance.P.shape[1]
    P_star = instance.P[0].astype(np.float64)[np.arange(S), a_star]
    rho = instance.rho.astype(np.float64)
    d = (1 - instance.gamma) * np.linalg.solve((np.eye(S) - instance.gamma * P_star).T, rho)
    return float(np.max(d / rho))


def min_optimal_probability(instance: TabularInstance, points) -> float:
    """c = min over points and states of pi(a*(s)|s), the constant in Mei et al.'s Thm 4."""
    a_star = greedy_optimal_actions(instance)
    pi = np.asarray(jax.nn.softmax(jnp.asarray(points), axis=-1))
    return float(pi[..., np.arange(len(a_star)), a_star].min())


def reward_deviations(instance: TabularInstance) -> dict:
    """Sup-norm reward differences behind R3 (exact, from the arrays).

    global: ||r_bar - R0||_inf, r_bar = sum_k p_k r_k (how far the shaped global objective
    is from the intrinsic one); client: ||r_k - r_bar||_inf for each k.
    """
    r = instance.shaped_reward().astype(np.float64)
    r_bar = np.tensordot(instance.p.astype(np.float64), r, axes=1)
    R0 = instance.R0.astype(np.float64)
    return {"global": float(np.max(np.abs(r_bar - np.tensordot(instance.p, R0, axes=1)))),
            "client": np.max(np.abs(r - r_bar), axis=(1, 2))}
