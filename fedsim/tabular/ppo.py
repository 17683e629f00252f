"""PPO as a tabular client's local learner (Schulman et al. 2017, "Proximal Policy Optimization
Algorithms"; the RLHF form of Ziegler et al. 2019 and TRL, with the KL penalty in the reward).

One engine local step is one PPO iteration of client k:

1. roll out B trajectories of the current policy pi_old (fedsim.tabular.sampling: discounting
   as termination, so the trajectories are episodes of an undiscounted process whose values
   are the discounted ones), with the reward r - (tau + beta)(log pi_old - log ref): the
   learner's own regulariser and, under fedkl, the KL to the peers' reference, as one term
   (fedsim.tabular.task.with_reference);
2. advantages by GAE(lambda) against the client's tabular value function V (its private state,
   never sent): delta_t = r_t + alive_{t+1} V(s_{t+1}) - V(s_t), A_t = delta_t + lambda A_{t+1}
   (the discount is in the termination, so GAE's own discount is 1), optionally normalised;
3. `epochs` passes over `minibatches` groups of trajectories, each a gradient-ascent step of
   size `ppo_lr` on the clipped surrogate, per trajectory (summed over its steps, averaged
   over trajectories, so that it estimates the return's surrogate),

       L(theta) = mean_traj sum_t [min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)
                                   + c_ent H(pi_theta(.|s_t))],  rho_t = pi_theta / pi_old,

   and a step of size `value_lr` on the squared error of V against the TD(lambda) returns.

The direction the engine receives is the iteration's displacement theta_new - theta (so the
engine's step size 1 gives PPO exactly), the private state is the new V (and, with a KL
target, the adaptive controller's scale of the KL coefficient, as TRL's), and the aux metrics
are the surrogate, the value loss, the approximate KL(pi_old || pi_new) (k3 at the sampled
actions), the clip fraction and the entropy. With eps = inf, one epoch, one minibatch,
lambda = 1, V = 0 and no normalisation, the step is ppo_lr times the GPOMDP policy gradient on
the same trajectories (tests/test_ppo.py).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedsim.engine import Direction
from fedsim.rl import gae
from fedsim.tabular.sampling import rollout, trajectory_uniforms


class PPOState(NamedTuple):
    """What PPO keeps on the client (private, never sent)."""

    value: jax.Array      # (S,) the tabular value function
    kl_scale: jax.Array   # the adaptive controller's multiplier of the KL coefficient (1: fixed)


def ppo_iteration(theta, value, P, r, rho, gamma, reg, key, *, spec, horizon: int,
                  kl_log_ref=None):
    """One PPO iteration of one client: (theta, V (S,)) -> Direction(theta_new - theta, V_new,
    aux). `reg` is the reward's regulariser (tau, log_ref), applied at pi_old. With
    `kl_log_ref`, aux also holds reference_kl, the batch's KL to it as the adaptive
    controller measures it (fedsim.rl.adapt_kl_scale)."""
    S, A = theta.shape
    B, M = spec.batch, spec.minibatches
    # the key's trajectories are the ones the policy gradient would sample with it
    sa, alive, rewards = rollout(theta, P, r, rho, gamma, reg, *trajectory_uniforms(key, B, horizon))
    k_perm = jax.random.fold_in(key, 1)
    states, actions = sa // A, sa % A
    log_old = jax.nn.log_softmax(theta, axis=-1)[states, actions]           # (H, B)
    next_values = jnp.concatenate([value[states[1:]], jnp.zeros((1, B), value.dtype)])
    adv = gae(rewards, alive, value[states], next_values, spec.gae_lambda)
    targets = adv + value[states]   # TD(lambda) returns
    if spec.normalize_advantages:
        n = jnp.maximum(alive.sum(), 1.0)
        mean = jnp.sum(adv * alive) / n
        std = jnp.sqrt(jnp.sum(alive * (adv - mean) ** 2) / n)
        adv = alive * (adv - mean) / (std + 1e-8)
    eps = spec.clip

    def surrogate(th, idx):
        log_pi_all = jax.nn.log_softmax(th, axis=-1)
        s, a, w, ad = states[:, idx], actions[:, idx], alive[:, idx], adv[:, idx]
        ratio = jnp.exp(log_pi_all[s, a] - log_old[:, idx])
        clipped = jnp.clip(ratio, 1 - eps, 1 + eps) if math.isfinite(eps) else ratio
        gain = jnp.minimum(ratio * ad, clipped * ad)
        entropy = -jnp.sum(jnp.exp(log_pi_all) * log_pi_all, axis=-1)[s]
        return jnp.sum(w * (gain + spec.entropy_coef * entropy)) / idx.shape[0]

    def value_loss(v, idx):
        w = alive[:, idx]
        return 0.5 * jnp.sum(w * (v[states[:, idx]] - targets[:, idx]) ** 2) / idx.shape[0]

    def epoch(carry, k):
        order = jax.random.permutation(k, B).reshape(M, B // M)

        def minibatch(carry, idx):
            th, v = carry
            th = th + spec.ppo_lr * jax.grad(surrogate)(th, idx)
            v = v - spec.value_lr * jax.grad(value_loss)(v, idx)
            return (th, v), None

        return jax.lax.scan(minibatch, carry, order)[0], None

    (new_theta, new_value), _ = jax.lax.scan(epoch, (theta, value),
                                             jax.random.split(k_perm, spec.epochs))
    all_idx = jnp.arange(B)
    log_new = jax.nn.log_softmax(new_theta, axis=-1)[states, actions]
    log_ratio = log_new - log_old
    steps = jnp.maximum(alive.sum(), 1.0)
    per_step = lambda x: jnp.sum(alive * x) / steps
    pi_new = jax.nn.softmax(new_theta, axis=-1)
    aux = {
        "surrogate": surrogate(new_theta, all_idx),      # per trajectory, as optimised
        "value_loss": value_loss(new_value, all_idx),
        "approx_kl": per_step(jnp.exp(-log_ratio) - 1 + log_ratio),   # k3 of KL(old || new)
        "clip_fraction": per_step((jnp.abs(jnp.exp(log_ratio) - 1) > eps).astype(theta.dtype)),
        "entropy": per_step(-jnp.sum(pi_new * jnp.log(pi_new), axis=-1)[states]),
    }
    if kl_log_ref is not None:
        log_ref = jnp.reshape(jnp.broadcast_to(kl_log_ref, theta.shape), S * A)[sa]
        aux["reference_kl"] = jnp.sum(alive * (log_old - log_ref)) / B
    return Direction(new_theta - theta, private=new_value, aux=aux)
