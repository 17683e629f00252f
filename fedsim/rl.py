"""Reinforcement-learning pieces the tasks' PPO learners share (fedsim.tabular.ppo,
fedsim.imdb.ppo): generalised advantage estimation and TRL's adaptive KL controller."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def adapt_kl_scale(scale, kl, target, horizon, batch):
    """TRL's AdaptiveKLController (Ziegler et al. 2019): scale *= 1 + clip(KL / target - 1,
    -0.2, 0.2) * batch / horizon, with KL the batch's mean per-trajectory sum of
    log pi_old - log ref at the sampled actions."""
    error = jnp.clip(kl / target - 1.0, -0.2, 0.2)
    return scale * (1.0 + error * batch / horizon)


def gae(rewards, alive, values, next_values, lam):
    """Advantages (H, B): delta_t = alive_t (r_t - V(s_t)) + alive_{t+1} V(s_{t+1}),
    A_t = delta_t + lam A_{t+1}; zero after a trajectory ends."""
    next_alive = jnp.concatenate([alive[1:], jnp.zeros_like(alive[:1])])
    delta = alive * (rewards - values) + next_alive * next_values

    def back(carry, x):
        d, a = x
        carry = (d + lam * carry) * a
        return carry, carry

    _, adv = jax.lax.scan(back, jnp.zeros_like(delta[0]), (delta, alive), reverse=True)
    return adv
