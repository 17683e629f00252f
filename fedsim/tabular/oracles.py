"""Exact oracles for tabular softmax policies: returns, policy gradients, optimal values.

Policy pi_theta(a|s) = softmax(theta[s])_a. With the regularised reward

    r_tau(s, a) = r(s, a) - tau * (log pi(a|s) - log pi_ref(a|s))

(tau = 0: plain; log pi_ref = 0: entropy regularisation; else KL to pi_ref), the return
J(theta) = rho^T V with V = (I - gamma P_pi)^{-1} r_tau,pi, and the exact gradient is

    dJ/dtheta[s, a] = d(s) pi(a|s) (Q_tau(s, a) - V(s)),
    d^T = rho^T (I - gamma P_pi)^{-1},  Q_tau = r_tau + gamma P V

(Sutton et al. 2000; Mei et al. 2020, Lemma 1 and its entropy form Lemma 10: the term
from differentiating r_tau vanishes because sum_a pi grad log pi = 0). J is the
unnormalised discounted return, so |J| <= max|r_tau| / (1 - gamma).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedsim.tabular.linalg import solve_diagonally_dominant, values_and_visits
from fedsim.tabular.mdp import TabularInstance


class Regularizer(NamedTuple):
    """tau >= 0 and log pi_ref (S, A); log_ref = 0 gives entropy regularisation."""

    tau: float | jax.Array = 0.0
    log_ref: float | jax.Array = 0.0


def _over_actions(op, x):
    """op folded over the last axis's static slices: elementwise operations that XLA fuses. On
    its CPU backend (jax 0.10.2) a reduction over a short last axis (A = 5) goes to a library
    fusion (YNNPACK) that took 0.1-0.3 ms per step of 1000 clients, over a tenth of W1's step."""
    return functools.reduce(op, [x[..., a] for a in range(x.shape[-1])])


def _softmax_parts(theta):
    z = theta - jax.lax.stop_gradient(_over_actions(jnp.maximum, theta))[..., None]
    e = jnp.exp(z)
    total = _over_actions(jnp.add, e)[..., None]
    return e / total, z - jnp.log(total)


def policy(theta):
    """pi_theta = softmax(theta) over the actions (the last axis), as jax.nn.softmax computes
    it, in elementwise operations (_over_actions)."""
    return _softmax_parts(theta)[0]


def log_policy(theta):
    """log pi_theta, as jax.nn.log_softmax computes it, in elementwise operations."""
    return _softmax_parts(theta)[1]


def _policy_system(theta, P, gamma):
    """pi and M = I - gamma P_pi, the matrix of the policy's Bellman equation V = M^{-1} r_pi.
    P_pi = sum_a pi[:, a] P[:, a, :] as A multiply-adds of static slices, one elementwise
    fusion: under vmap the einsum's batched (S x A) . (A x S) products were 10-15% slower per
    exact gradient (2-core CPU, S = 20, A = 5, K = 100 and 1000, and in a vmapped grid)."""
    pi = policy(theta)
    P_pi = sum(pi[:, a, None] * P[:, a, :] for a in range(P.shape[1]))
    return pi, jnp.eye(P.shape[0], dtype=P.dtype) - gamma * P_pi


def discounted_visits(theta, P, rho, gamma):
    """pi and d^T = rho^T (I - gamma P_pi)^{-1} (it sums to 1 / (1 - gamma)): one solve, half
    the work of the inverse (fedsim.tabular.linalg). J = d . sum_a pi r for any reward r."""
    pi, M = _policy_system(theta, P, gamma)
    return pi, _visits(M, rho)


def visits_of_policies(thetas, P, rho, gamma):
    """pi and d of policies thetas (K, p, S, A), those of row k in client k's MDP P[k]
    (K, S, A, S): discounted_visits for all K p of them, in one batched solve (faster than
    vmapping it: fedsim.tabular.linalg)."""
    pi, M = jax.vmap(jax.vmap(_policy_system, (0, None, None)), (0, 0, None))(thetas, P, gamma)
    return pi, _visits(M, rho)


def _visits(M, rho):
    """d^T = rho^T M^{-1} for a batch of systems M (..., S, S), in one batched solve."""
    return solve_diagonally_dominant(jnp.swapaxes(M, -1, -2), jnp.broadcast_to(rho, M.shape[:-1]))


def visits_of_global_and_own(theta, own, P, rho, gamma):
    """pi (S, A) and d (K, S) of the global policy theta in each client's MDP P[k]
    (K, S, A, S), and pi (K, S, A) and d (K, S) of each client's own policy own[k] in its MDP:
    K + 1 systems in one batched solve when every client has the same P (the default
    instances), else 2 K. The test is on the data (lax.cond), so the answer is right for any
    P; under a vmap over data it becomes a select and both are computed."""
    K = P.shape[0]

    def shared():
        # every system from P[0]: reading one client's P, not K copies of it, halved the
        # evaluation of 8 checkpoints at K = 100 (4.9 to 2.1 ms, 2-core CPU)
        pi, M = jax.vmap(_policy_system, (0, None, None))(
            jnp.concatenate([theta[None], own]), P[0], gamma)
        d = _visits(M, rho)
        return pi[0], jnp.broadcast_to(d[0], (K,) + d.shape[1:]), pi[1:], d[1:]

    def per_client():
        pi, d = visits_of_policies(jnp.stack([jnp.broadcast_to(theta, own.shape), own], 1),
                                   P, rho, gamma)
        return pi[0, 0], d[:, 0], pi[:, 1], d[:, 1]

    rows = P.reshape(K, -1)   # compared as rows: 2.5x faster than as (K, S, A, S) (2-core CPU)
    return jax.lax.cond(jnp.all(rows == rows[:1]), shared, per_client)


def regularised_reward(theta, r, reg: Regularizer):
    """r - tau (log pi - log pi_ref)."""
    return r - reg.tau * (log_policy(theta) - reg.log_ref)


def client_return(theta, P, r, rho, gamma, reg: Regularizer = Regularizer()):
    """J(theta) for one client: P (S, A, S), r (S, A), rho (S,)."""
    pi, d = discounted_visits(theta, P, rho, gamma)
    return d @ jnp.sum(pi * regularised_reward(theta, r, reg), axis=-1)


def client_gradient(theta, P, r, rho, gamma, reg: Regularizer = Regularizer()):
    """The exact policy gradient dJ/dtheta (S, A), from one matrix inverse: it needs both
    V = M^{-1} r_pi and d^T = rho^T M^{-1} (fedsim.tabular.linalg.values_and_visits). Q's
    contraction is an einsum (dot_general): with the clients vmapped inside a vmapped grid, a
    product-then-sum over a middle axis ran 40x slower on XLA's CPU backend than at one vmap
    level, and dot_general did not; as static slices over the next state it was no faster
    (0.75-1.06x at K = 100 and 1000). P_pi, in _policy_system, sums A static slices: no
    reduction."""
    pi, M = _policy_system(theta, P, gamma)
    r_tau = regularised_reward(theta, r, reg)
    V, d = values_and_visits(M, _over_actions(jnp.add, pi * r_tau), rho)
    Q = r_tau + gamma * jnp.einsum("sat,t->sa", P, V)
    return d[:, None] * pi * (Q - V[:, None])


def occupancy(theta, P, rho, gamma):
    """The normalised discounted state occupancy d(s) = (1 - gamma) rho^T (I - gamma P_pi)^{-1}."""
    return (1 - gamma) * discounted_visits(theta, P, rho, gamma)[1]


def policy_kl(theta, log_ref, P, rho, gamma):
    """sum_s d(s) KL(pi_theta(.|s) || pi_ref(.|s)), d the policy's normalised occupancy: the
    KL penalty's weight in the return is tau / (1 - gamma) times this."""
    log_pi = jax.nn.log_softmax(theta, axis=-1)
    per_state = jnp.sum(jnp.exp(log_pi) * (log_pi - log_ref), axis=-1)
    return occupancy(theta, P, rho, gamma) @ per_state


def returns(theta, P, r, rho, gamma, reg: Regularizer = Regularizer()):
    """J_k(theta) for every client (theta shared): P (K, S, A, S), r (K, S, A) -> (K,)."""
    return jax.vmap(client_return, (None, 0, 0, None, None, None))(theta, P, r, rho, gamma, reg)


def global_return(theta, P, r, p, rho, gamma, reg: Regularizer = Regularizer()):
    """J(theta) = sum_k p_k J_k(theta)."""
    return p @ returns(theta, P, r, rho, gamma, reg)


def global_gradient(theta, P, r, p, rho, gamma, reg: Regularizer = Regularizer()):
    """grad J(theta) = sum_k p_k grad J_k(theta)."""
    grads = jax.vmap(client_gradient, (None, 0, 0, None, None, None))(theta, P, r, rho, gamma, reg)
    return jnp.tensordot(p, grads, axes=1)


# ----------------------------------------------------------------------------- optimal values


def optimal_values(P, r, gamma, tau: float = 0.0, log_ref=None, tol: float = 1e-12,
                   max_iter: int = 100_000) -> np.ndarray:
    """V* of one MDP in float64, to within tol: (soft) value iteration where it can get there,
    else (soft) policy iteration.

    tau = 0: V(s) = max_a Q(s, a); tau > 0: V(s) = tau log sum_a pi_ref(a|s) exp(Q(s, a)/tau),
    the optimum of the KL/entropy-regularised return. Value iteration stops when the sup-norm
    change is below tol * (1 - gamma), so |V - V*| <= tol (contraction bound). For gamma
    close to 1 that needs more than max_iter sweeps, or a change below float64's resolution
    of V ~ span / (1 - gamma); then policy iteration is used, which is exact in finitely
    many steps for tau = 0 (Howard 1960) and, for tau > 0, stops when the Bellman residual
    bounds the error by tol, or stops shrinking (float64's resolution).
    """
    P, r = np.asarray(P, np.float64), np.asarray(r, np.float64)
    log_ref = np.zeros_like(r) if log_ref is None else np.asarray(log_ref, np.float64)
    if needs_policy_iteration(r, gamma, tau, tol, max_iter):
        return _policy_iteration(P, r, gamma, tau, log_ref, tol)
    V = np.zeros(P.shape[0])
    for _ in range(max_iter):
        V_new = _backup(P, r, gamma, tau, log_ref, V)
        done = np.max(np.abs(V_new - V)) < tol * (1 - gamma)
        V = V_new
        if done:
            return V
    raise RuntimeError(f"value iteration did not reach tol={tol} in {max_iter} iterations")


def needs_policy_iteration(r, gamma, tau: float = 0.0, tol: float = 1e-12,
                           max_iter: int = 100_000) -> bool:
    """Whether value iteration cannot certify tol: too many sweeps, or a stopping change
    below float64's resolution of V."""
    r = np.asarray(r, np.float64)
    span = max(float(np.ptp(r)), float(np.abs(r).max()), 1e-300) + tau * np.log(r.shape[-1])
    resolution = 16 * np.finfo(np.float64).eps * span / (1 - gamma)
    sweeps = np.log(tol * (1 - gamma) ** 2 / span) / np.log(gamma) if gamma > 0 else 1
    return bool(sweeps > max_iter or tol * (1 - gamma) <= resolution)


def bellman_residual(P, r, gamma, tau, log_ref, V) -> float:
    """max_s |(T V)(s) - V(s)|: |V - V*| <= this / (1 - gamma)."""
    log_ref = np.zeros_like(r) if log_ref is None else log_ref
    return float(np.max(np.abs(_backup(np.asarray(P, np.float64), np.asarray(r, np.float64),
                                        gamma, tau, log_ref, V) - V)))


def _backup(P, r, gamma, tau, log_ref, V, policy: bool = False):
    """The (soft) Bellman optimality backup of V; with policy, also its greedy (soft) policy."""
    Q = r + gamma * P @ V
    if tau == 0:
        return (Q.max(axis=1), Q.argmax(axis=1)) if policy else Q.max(axis=1)
    z = Q / tau + log_ref
    zmax = z.max(axis=1, keepdims=True)
    V_new = tau * (zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1)))
    if not policy:
        return V_new
    pi = np.exp(z - zmax)
    return V_new, pi / pi.sum(axis=1, keepdims=True)


def _policy_iteration(P, r, gamma, tau, log_ref, tol, max_iter: int = 10_000):
    S, A = r.shape
    pi, last_residual = np.full((S, A), 1.0 / A), np.inf
    for _ in range(max_iter):
        if tau == 0 and pi.ndim == 1:
            P_pi, r_pi = P[np.arange(S), pi], r[np.arange(S), pi]
        else:
            P_pi = np.einsum("sa,sat->st", pi, P)
            bonus = -tau * (pi * (np.log(np.maximum(pi, 1e-300)) - log_ref)).sum(axis=1)
            r_pi = (pi * r).sum(axis=1) + bonus
        V = np.linalg.solve(np.eye(S) - gamma * P_pi, r_pi)
        V_next, pi_next = _backup(P, r, gamma, tau, log_ref, V, policy=True)
        if tau == 0:
            if pi.ndim == 1 and np.array_equal(pi_next, pi):
                return V   # greedy in its own value: optimal
        else:
            residual = np.max(np.abs(V_next - V))   # |V - V*| <= residual / (1 - gamma)
            if residual <= tol * (1 - gamma) or residual >= last_residual:
                return V_next
            last_residual = residual
        pi = pi_next
    raise RuntimeError(f"policy iteration did not converge in {max_iter} iterations")


class OptimalValue(NamedTuple):
    J_star: float
    tolerance: float     # |J_star - true optimum| <= tolerance (see method)
    upper_bound: float   # sum_k p_k J_k*: no single policy can do better
    method: str


def optimal_value(instance: TabularInstance, reg: Regularizer = Regularizer(),
                  certify_steps: int = 20_000) -> OptimalValue:
    """J* = max_theta sum_k p_k J_k(theta) for the shaped (and regularised) objective.

    Shared dynamics: the objective is the return of one MDP with reward sum_k p_k r_k, so
    value iteration gives J* to 1e-10. Per-client dynamics: no such reduction exists (the
    problem is non-concave in general), so J* is estimated by a long exact-gradient run
    (`certify_steps` Adam steps on the exact objective); the estimate is achieved by a policy,
    hence a certified lower bound, and `tolerance` = J(T) - J(T/2), the remaining gap
    implied by an O(1/T) tail. `upper_bound` = sum_k p_k J_k* bounds it from above.
    """
    r = instance.shaped_reward().astype(np.float64)
    tau = float(reg.tau)
    log_ref = None if tau == 0 else np.broadcast_to(np.asarray(reg.log_ref, np.float64), r.shape[1:])
    per_client = [instance.rho @ optimal_values(instance.P[k], r[k], instance.gamma, tau, log_ref)
                  for k in range(instance.num_clients)]
    upper = float(instance.p.astype(np.float64) @ np.asarray(per_client))
    if instance.shared_dynamics:
        r_bar = np.tensordot(instance.p.astype(np.float64), r, axes=1)
        V = optimal_values(instance.P[0], r_bar, instance.gamma, tau, log_ref)
        residual = bellman_residual(instance.P[0], r_bar, instance.gamma, tau, log_ref, V)
        method = ("policy iteration" if needs_policy_iteration(r_bar, instance.gamma, tau)
                  else "value iteration")
        return OptimalValue(float(instance.rho @ V), max(1e-10, residual / (1 - instance.gamma)),
                            upper, f"{method} (shared dynamics)")
    J_half, J_end = _long_exact_run(instance, reg, certify_steps)
    return OptimalValue(J_end, max(J_end - J_half, 0.0), upper,
                        f"exact-gradient Adam run of {certify_steps} steps (per-client dynamics)")


def _long_exact_run(instance: TabularInstance, reg: Regularizer, steps: int):
    P, p, rho = jnp.asarray(instance.P), jnp.asarray(instance.p), jnp.asarray(instance.rho)
    r = jnp.asarray(instance.shaped_reward())
    objective = lambda th: global_return(th, P, r, p, rho, instance.gamma, reg)
    opt = optax.adam(optax.cosine_decay_schedule(0.1, steps, alpha=1e-3))

    def step(carry, _):
        theta, state = carry
        updates, state = opt.update(-global_gradient(theta, P, r, p, rho, instance.gamma, reg),
                                    state)
        theta = optax.apply_updates(theta, updates)
        return (theta, state), objective(theta)

    theta0 = jnp.asarray(instance.theta0)
    _, curve = jax.jit(lambda th: jax.lax.scan(step, (th, opt.init(th)), None, length=steps))(theta0)
    curve = np.maximum.accumulate(np.asarray(curve, np.float64))
    return float(curve[steps // 2 - 1]), float(curve[-1])
