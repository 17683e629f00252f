"""Sampled trajectories and policy-gradient estimators for the infinite discounted horizon.

Discounting is realised as termination: after every step the trajectory survives with
probability gamma, and rewards are summed without discount. Since P(alive at t) = gamma^t
independently of the states visited,

    E[sum_t alive_t r_t] = J,   E[sum_t alive_t grad log pi(a_t|s_t) G_t] = grad J,

with G_t = sum_{t' >= t} alive_t' r_t' (GPOMDP, Baxter & Bartlett 2001) or G_t = G_0
(REINFORCE, Williams 1992): unbiased for the infinite-horizon objective (the random-horizon
estimators of Zhang et al. 2020, "Global convergence of policy gradient methods to (almost)
locally optimal policies"). Arrays need a finite cap H: the only bias is from trajectories
still alive at H, which happens with probability gamma^H; `default_horizon` picks H so that
this is below 1e-7, under float32 resolution.

All randomness is two uniform arrays drawn from the key, so an independent implementation
that draws the same uniforms replays the same trajectories (see fedsim.reference).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fedsim.tabular.oracles import Regularizer



def default_horizon(gamma: float, truncation: float = 1e-7) -> int:
    """The smallest H with gamma^H <= truncation."""
    if gamma == 0.0:
        return 1
    return max(1, math.ceil(math.log(truncation) / math.log(gamma)))


def trajectory_uniforms(key, batch: int, horizon: int):
    """u_start (B,) for s_0 and u (B, H, 3) for (action, next state, survival) at each step."""
    k_start, k_steps = jax.random.split(key)
    return jax.random.uniform(k_start, (batch,)), jax.random.uniform(k_steps, (batch, horizon, 3))


def _count_below(cdf, u):
    return jnp.minimum(jnp.sum(cdf <= u[..., None], axis=-1), cdf.shape[-1] - 1)


def rollout(theta, P, r, rho, gamma, reg: Regularizer, u_start, u):
    """`B` trajectories at once: flat state-action indices s*A + a (H, B), alive (H, B), and
    the regularised rewards (H, B). u_start (B,), u (B, H, 3) from `trajectory_uniforms`.

    Cumulative distributions are formed once per call (the policy is fixed during a
    rollout), so each time step is two row gathers and two comparisons; indices into
    (S*A, ...) tables are flat because a single-index gather is what vectorises well.
    """
    S, A = theta.shape
    cdf_pi = jnp.cumsum(jax.nn.softmax(theta, axis=-1), axis=-1)
    cdf_P = jnp.cumsum(P, axis=-1).reshape(S * A, S)
    r_tau = (r - reg.tau * (jax.nn.log_softmax(theta, axis=-1) - reg.log_ref)).reshape(S * A)

    def step(carry, u_t):
        s, alive = carry
        sa = s * A + _count_below(cdf_pi[s], u_t[:, 0])
        s_next = _count_below(cdf_P[sa], u_t[:, 1])
        return (s_next, alive * (u_t[:, 2] < gamma)), (sa, alive)

    s0 = _count_below(jnp.cumsum(rho), u_start)
    alive0 = jnp.ones(u_start.shape, r.dtype)
    _, (sa, alive) = jax.lax.scan(step, (s0, alive0), jnp.swapaxes(u, 0, 1))
    return sa, alive, r_tau[sa]


def sampled_gradient(theta, P, r, rho, gamma, reg: Regularizer, key, *, batch: int, horizon: int,
                     estimator: str = "gpomdp"):
    """Mean of `batch` unbiased single-trajectory estimates of dJ/dtheta (S, A).

    With grad log pi(a|s) = e_s (e_a - pi(s)) for softmax logits, the sum over visits of
    w_t grad log pi(a_t|s_t) is N - n pi with N[s, a] the summed weights of visits to (s, a)
    and n[s] = sum_a N[s, a]: one scatter-add instead of a one-hot per visit.
    """
    S, A = theta.shape
    u_start, u = trajectory_uniforms(key, batch, horizon)
    sa, alive, rewards = rollout(theta, P, r, rho, gamma, reg, u_start, u)
    gains = alive * rewards                                   # (H, B)
    to_go = jnp.cumsum(gains[::-1], axis=0)[::-1]
    weights = alive * (to_go if estimator == "gpomdp" else to_go[:1])
    N = jnp.zeros(S * A, theta.dtype).at[sa.reshape(-1)].add(weights.reshape(-1)).reshape(S, A)
    return (N - N.sum(axis=-1, keepdims=True) * jax.nn.softmax(theta, axis=-1)) / batch


def sampled_returns(theta, P, r, rho, gamma, reg: Regularizer, key, *, batch: int, horizon: int):
    """`batch` unbiased single-trajectory estimates of J(theta): sum_t alive_t r_t."""
    u_start, u = trajectory_uniforms(key, batch, horizon)

    _, alive, rewards = rollout(theta, P, r, rho, gamma, reg, u_start, u)
    return jnp.sum(alive * rewards, axis=0)


def sampled_kl(theta, log_ref, P, rho, gamma, key, *, batch: int, horizon: int):
    """`batch` unbiased single-trajectory estimates of sum_t gamma^t KL(pi(.|s_t) || ref(.|s_t))
    = policy_kl / (1 - gamma) from the k3 estimator at the sampled actions, (ref/pi - 1) -
    log(ref/pi) (Schulman 2020, "Approximating KL divergence"; the authors' RL code): each
    term is non-negative and its mean over a ~ pi is the state's KL."""
    u_start, u = trajectory_uniforms(key, batch, horizon)
    S, A = theta.shape
    sa, alive, _ = rollout(theta, P, jnp.zeros((S, A), theta.dtype), rho, gamma, Regularizer(),
                           u_start, u)
    log_ratio = jnp.reshape(log_ref - jax.nn.log_softmax(theta, axis=-1), S * A)[sa]
    return jnp.sum(alive * (jnp.exp(log_ratio) - 1 - log_ratio), axis=0)
