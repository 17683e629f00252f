"""DP-FedAvg at the client level, as an aggregator of the engine (fedsim.engine.aggregators).

McMahan, Ramage, Talwar, Zhang, "Learning differentially private recurrent language models",
ICLR 2018: each participant's round delta (the whole parameter pytree) is clipped to L2 norm
C, the server sums the clipped deltas with weights capped at 1/E (E the expected number of
participants, a constant: q K with Poisson sampling, m with m of K), adds N(0, (z C / E)^2)
to every coordinate and releases the sum. One client moves the sum by at most C / E, so the
release is the Gaussian mechanism with noise multiplier z; the accountant
(fedsim.privacy.accounting) composes it over the rounds with the sampling.

The weights the engine passes are unbiased participation weights (p_k / q, or p_k K/m), so
with equal p_k every weight is exactly 1/E, and with z = 0 and C above every delta's norm this
is FedAvg's weighted mean; a client with p_k above the average is capped at 1/E (McMahan et
al.'s w_k = min(n_k / w_hat, 1)), so that no client moves the sum by more than C / E.

Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy, NeurIPS 2021): every participant also
reports whether its delta's norm was at most C; the server adds N(0, sigma_b^2) to that count,
divides by E, and moves C geometrically towards the target quantile gamma:
C <- C exp(-eta (b - gamma)). The count is released too, so the deltas' sum gets the noise
multiplier z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2 and the two releases together cost what one
Gaussian mechanism with multiplier z costs (their Theorem 1); this needs 2 sigma_b > z.

What stays private is not an input here: the engine sends the aggregator only the deltas of the
shared parameters (fedsim.engine.round), never personal parameters, reward models or data.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedsim.engine.aggregators import Aggregator
from fedsim.errors import check_real, require


class DPState(NamedTuple):
    clip: jax.Array         # the clipping norm C used in the next round
    clipped_fraction: jax.Array   # the noisy fraction of last round's deltas at most C


class AdaptiveClip(NamedTuple):
    """Andrew et al. 2021's geometric update of C: target quantile gamma, step size eta, and
    the std sigma_b of the noise on the count of unclipped deltas."""

    target_quantile: float = 0.5
    learning_rate: float = 0.2
    count_std: float = 1.0


def delta_noise_multiplier(noise_multiplier: float, adaptive: AdaptiveClip | None) -> float:
    """The multiplier on the deltas' sum such that it and the noisy count together cost z."""
    if adaptive is None or noise_multiplier == 0:
        return noise_multiplier
    split = 2 * adaptive.count_std
    require(split > noise_multiplier, "dp_noise", noise_multiplier,
            f"must be below 2 x the clipped-count noise std = {split:g} with adaptive clipping "
            "(Andrew et al. 2021, Theorem 1: the count's release must cost less than the "
            "whole budget); sample more clients per round or raise --dp-count-std")
    return (noise_multiplier ** -2 - split ** -2) ** -0.5


def global_norms(deltas) -> jax.Array:
    """(m,): each client's L2 norm over the whole pytree."""
    squares = [jnp.sum(jnp.square(d.reshape(d.shape[0], -1).astype(jnp.float32)), axis=1)
               for d in jax.tree.leaves(deltas)]
    return jnp.sqrt(sum(squares))


def clip_scale(norms, clip) -> jax.Array:
    """(m,): the factors min(1, C / norm) that clip each client's delta to norm at most C."""
    return jnp.minimum(1.0, clip / jnp.maximum(norms, 1e-30))


def dp_fedavg(clip: float, noise_multiplier: float, expected_participants: float,
              adaptive: AdaptiveClip | None = None) -> Aggregator:
    """DP-FedAvg's server side (the module docstring): clip, capped-weight sum, Gaussian noise;
    with `adaptive`, C follows Andrew et al.'s quantile update from `clip`."""
    check_real("dp_clip", clip, 0.0, lo_open=True)
    check_real("dp_noise", noise_multiplier, 0.0)
    check_real("expected_participants", expected_participants, 0.0, lo_open=True)
    if adaptive is not None:
        check_real("dp_target_quantile", adaptive.target_quantile, 0.0, 1.0)
        check_real("dp_clip_lr", adaptive.learning_rate, 0.0, lo_open=True)
        check_real("dp_count_std", adaptive.count_std, 0.0)
    z_delta = delta_noise_multiplier(noise_multiplier, adaptive)
    cap = 1.0 / expected_participants

    def init(params):
        return DPState(jnp.float32(clip), jnp.float32(math.nan))

    def apply(deltas, weights, mask, key, state: DPState):
        noise_key, count_key = jax.random.split(key)
        norms = global_norms(deltas)
        w = jnp.minimum(weights, cap) * mask * clip_scale(norms, state.clip)
        total = jax.tree.map(lambda d: jnp.tensordot(w.astype(d.dtype), d, axes=1), deltas)
        std = z_delta * state.clip * cap
        leaves, treedef = jax.tree.flatten(total)
        keys = jax.random.split(noise_key, len(leaves))
        noisy = jax.tree.unflatten(treedef, [
            x + (std * jax.random.normal(k, x.shape)).astype(x.dtype)
            for x, k in zip(leaves, keys)])
        if adaptive is None:
            return noisy, state
        unclipped = jnp.sum(mask * (norms <= state.clip))
        fraction = (unclipped + adaptive.count_std * jax.random.normal(count_key)) * cap
        new_clip = state.clip * jnp.exp(-adaptive.learning_rate
                                        * (fraction - adaptive.target_quantile))
        return noisy, DPState(new_clip.astype(jnp.float32), fraction.astype(jnp.float32))

    return Aggregator(init, apply)
