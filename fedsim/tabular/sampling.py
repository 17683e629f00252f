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

import functools
import math

import jax
import jax.numpy as jnp

from fedsim.tabular.oracles import Regularizer

ESTIMATORS = ("gpomdp", "reinforce")


def default_horizon(gamma: float, truncation: float = 1e-7) -> int:
    """The smallest H with gamma^H <= truncation."""
    if gamma == 0.0:
        return 1
    return max(1, math.ceil(math.log(truncation) / math.log(gamma)))


def trajectory_uniforms(key, batch: int, horizon: int):
    """u_start (B,) for s_0 and u (B, H, 3) for (action, next state, survival) at each step."""
    k_start, k_steps = jax.random.split(key)
    return jax.random.uniform(k_start, (batch,)), jax.random.uniform(k_steps, (batch, horizon, 3))


def inverse_cdf(probs, u):
    """Index i with P(i) = probs[i] for u ~ U[0, 1): the number of cdf entries <= u."""
    idx = jnp.sum(jnp.cumsum(probs) <= u)
    return jnp.minimum(idx, probs.shape[-1] - 1)


def rollout(theta, P, r, rho, gamma, reg: Regularizer, u_start, u):
    """One trajectory: states, actions (H,), alive mask (H,), regularised rewards (H,)."""
    pi = jax.nn.softmax(theta, axis=-1)
    r_tau = r - reg.tau * (jax.nn.log_softmax(theta, axis=-1) - reg.log_ref)

    def step(carry, u_t):
        s, alive = carry
        a = inverse_cdf(pi[s], u_t[0])
        s_next = inverse_cdf(P[s, a], u_t[1])
        alive_next = alive * (u_t[2] < gamma)
        return (s_next, alive_next), (s, a, alive, r_tau[s, a])

    s0 = inverse_cdf(rho, u_start)
    _, (states, actions, alive, rewards) = jax.lax.scan(step, (s0, jnp.ones((), r.dtype)), u)
    return states, actions, alive, rewards


def _trajectory_gradient(theta, P, r, rho, gamma, reg, estimator, u_start, u):
    states, actions, alive, rewards = rollout(theta, P, r, rho, gamma, reg, u_start, u)
    gains = alive * rewards
    to_go = jnp.cumsum(gains[::-1])[::-1]
    weights = alive * (to_go if estimator == "gpomdp" else to_go[0])
    S, A = theta.shape
    pi = jax.nn.softmax(theta, axis=-1)
    # grad log pi(a|s) for softmax logits: e_s (e_a - pi(s)).
    score = jax.nn.one_hot(actions, A, dtype=theta.dtype) - pi[states]
    return jnp.einsum("h,hs,ha->sa", weights, jax.nn.one_hot(states, S, dtype=theta.dtype), score)


def sampled_gradient(theta, P, r, rho, gamma, reg: Regularizer, key, *, batch: int, horizon: int,
                     estimator: str = "gpomdp"):
    """Mean of `batch` unbiased single-trajectory gradient estimates of dJ/dtheta (S, A)."""
    u_start, u = trajectory_uniforms(key, batch, horizon)
    one = functools.partial(_trajectory_gradient, theta, P, r, rho, gamma, reg, estimator)
    per_trajectory = jax.vmap(one)(u_start, u)
    return per_trajectory.mean(axis=0)


def sampled_returns(theta, P, r, rho, gamma, reg: Regularizer, key, *, batch: int, horizon: int):
    """`batch` unbiased single-trajectory estimates of J(theta): sum_t alive_t r_t."""
    u_start, u = trajectory_uniforms(key, batch, horizon)

    def one(u_s, u_t):
        _, _, alive, rewards = rollout(theta, P, r, rho, gamma, reg, u_s, u_t)
        return jnp.sum(alive * rewards)

    return jax.vmap(one)(u_start, u)
