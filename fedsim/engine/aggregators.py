"""Aggregators: how the server turns the clients' deltas into one, as optax-style pairs.

    aggregator = trimmed_mean(0.2)
    state = aggregator.init(params)
    delta, state = aggregator.apply(deltas, weights, mask, key, state)

deltas: a pytree whose leaves have a leading client axis (theta_k - theta, what each client
sends); weights (m,): the aggregation weights of those clients (FedAvg's p_k, or p_k K/m
when m of K were sampled); mask (m,): 1 for a client whose delta arrived this round (0: it
dropped out). A round where no delta arrived aggregates to zero: the global parameters stay.

  weighted_mean       sum_k w_k mask_k delta_k, renormalised to the round's total weight
                      over the clients that arrived (FedAvg, McMahan et al. 2017).
  coordinate_median   per coordinate, the median of the arrived deltas, unweighted.
  trimmed_mean(beta)  per coordinate, the mean after dropping the floor(beta n) largest and
                      floor(beta n) smallest of the n arrived values, unweighted (Yin,
                      Chen, Ramchandran, Bartlett, ICML 2018).

DP-FedAvg (clipping, a fixed denominator and Gaussian noise from the server's key stream) is
an aggregator too: fedsim.privacy.dp_fedavg.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from fedsim.choices import AGGREGATORS
from fedsim.errors import check_choice, check_real


class Aggregator(NamedTuple):
    init: Callable[[Any], Any]
    apply: Callable[..., tuple[Any, Any]]


def _no_state(params):
    return ()


def _renormalised(weights, mask):
    """w_k mask_k scaled so that the arrived clients carry the round's whole weight."""
    kept = weights * mask
    total = kept.sum()
    return jnp.where(total > 0, kept * (weights.sum() / jnp.where(total > 0, total, 1.0)), 0.0)


def weighted_mean() -> Aggregator:
    def apply(deltas, weights, mask, key, state):
        w = _renormalised(weights, mask)
        return jax.tree.map(lambda d: jnp.tensordot(w.astype(d.dtype), d, axes=1), deltas), state

    return Aggregator(_no_state, apply)


def _sorted_arrived(leaf, mask):
    """The leaf sorted along the client axis with the clients that did not arrive last."""
    fill = jnp.where(mask.astype(bool).reshape((-1,) + (1,) * (leaf.ndim - 1)), leaf, jnp.inf)
    return jnp.sort(fill, axis=0)


def coordinate_median() -> Aggregator:
    def apply(deltas, weights, mask, key, state):
        n = mask.astype(jnp.int32).sum()

        def median(leaf):
            ordered = _sorted_arrived(leaf, mask)   # the n arrived values come first
            middle = jnp.take(ordered, jnp.maximum(n - 1, 0) // 2, axis=0) + jnp.take(
                ordered, n // 2, axis=0)
            return jnp.where(n > 0, 0.5 * middle, 0.0).astype(leaf.dtype)

        return jax.tree.map(median, deltas), state

    return Aggregator(_no_state, apply)


def trimmed_mean(beta: float) -> Aggregator:
    check_real("trim", beta, 0.0, 0.5, hi_open=True)

    def apply(deltas, weights, mask, key, state):
        n = mask.astype(jnp.int32).sum()
        cut = jnp.floor(beta * n).astype(jnp.int32)

        def trimmed(leaf):
            ordered = _sorted_arrived(leaf, mask)
            position = jnp.arange(leaf.shape[0]).reshape((-1,) + (1,) * (leaf.ndim - 1))
            keep = (position >= cut) & (position < n - cut)
            total = jnp.sum(jnp.where(keep, ordered, 0.0), axis=0)
            return jnp.where(n > 0, total / jnp.maximum(n - 2 * cut, 1), 0.0).astype(leaf.dtype)

        return jax.tree.map(trimmed, deltas), state

    return Aggregator(_no_state, apply)


def make_aggregator(name: str = "mean", trim: float = 0.0) -> Aggregator:
    """The aggregator a configuration names (AGGREGATORS)."""
    check_choice("aggregator", name, AGGREGATORS)
    if name == "median":
        return coordinate_median()
    if name == "trimmed_mean":
        return trimmed_mean(trim)
    return weighted_mean()
