"""Server-side aggregation over the leading client axis, and client sampling."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def weighted_sum(tree, weights):
    """sum_k weights[k] * leaf[k] for every leaf: contracts axis 0 only, keeps the rest."""
    return jax.tree.map(lambda leaf: jnp.tensordot(weights.astype(leaf.dtype), leaf, axes=1), tree)


def sample_participants(key, num_clients: int, num_participants: int):
    """m distinct client indices, uniformly without replacement (sorted, for readable logs)."""
    if num_participants == num_clients:
        return jnp.arange(num_clients)
    return jnp.sort(jax.random.choice(key, num_clients, (num_participants,), replace=False))


def participant_weights(weights, idx, num_participants: int):
    """Weights that make a sampled sum unbiased: E[sum_{k in S} w'_k x_k] = sum_k p_k x_k.

    Client k is in S with probability m/K, so w'_k = p_k K/m (Li et al. 2020, scheme II).
    They do not sum to 1 unless p is uniform, so the server applies them to updates
    (theta + sum_S w'_k (theta_k - theta)), never to raw parameters.
    """
    num_clients = weights.shape[0]
    if num_participants == num_clients:
        return weights
    return weights[idx] * (num_clients / num_participants)
