"""Canary clients for a one-run privacy audit (Andrew, Kairouz, Oh, Oprea, McMahan, Suriyakumar,
"One-shot empirical privacy estimation for federated learning", ICLR 2024).

A run with n canaries has n extra rows at the end of the client axis. Canary i has a fixed
random direction u_i (unit L2 norm over the parameter pytree) and is in the population with
probability 1/2, both drawn from the run key alone; when it is in and sampled, it sends
C u_i in place of its delta, which survives clipping to C unchanged. Its score is
<u_i, theta_T - theta_0>: with FedAvg's server step this is the sum of its inner products with
every released aggregate. High-dimensional random directions are nearly orthogonal to each
other and to the real updates, so a canary that was in stands out unless the noise hides it;
fedsim.privacy.audit turns the scores into a lower bound on epsilon.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_DIRECTION, _INCLUDED = 0, 1


def canary_key(run_key):
    return jax.random.fold_in(run_key, 0xCA9A)   # beside the engine's streams (keys.py)


def canary_included(run_key, num_canaries: int) -> jax.Array:
    """(n,) bool: which canaries are in this run's population."""
    key = jax.random.fold_in(canary_key(run_key), _INCLUDED)
    return jax.random.bernoulli(key, 0.5, (num_canaries,))


def canary_directions(run_key, num_canaries: int, like):
    """A pytree like `like` with a leading axis n: canary i's unit direction u_i."""
    base = jax.random.fold_in(canary_key(run_key), _DIRECTION)
    leaves, treedef = jax.tree.flatten(like)

    def one(i):
        key = jax.random.fold_in(base, i)
        drawn = [jax.random.normal(jax.random.fold_in(key, j), jnp.shape(x), jnp.float32)
                 for j, x in enumerate(leaves)]
        norm = jnp.sqrt(sum(jnp.sum(d * d) for d in drawn))
        return [(d / norm).astype(jnp.asarray(x).dtype) for d, x in zip(drawn, leaves)]

    rows = jax.vmap(one)(jnp.arange(num_canaries))
    return jax.tree.unflatten(treedef, rows)


def insert_canaries(deltas, arrived, run_key, num_canaries: int, clip: float):
    """The round's deltas (K, ...) and arrival mask (K,) with the last n rows replaced by the
    canaries' C u_i, and arriving only if the canary is in the population (and was sampled)."""
    if num_canaries == 0:
        return deltas, arrived
    like = jax.tree.map(lambda d: d[0], deltas)
    sent = jax.tree.map(lambda u: clip * u, canary_directions(run_key, num_canaries, like))
    deltas = jax.tree.map(lambda d, c: d.at[-num_canaries:].set(c.astype(d.dtype)), deltas, sent)
    included = canary_included(run_key, num_canaries).astype(arrived.dtype)
    return deltas, arrived.at[-num_canaries:].multiply(included)


def canary_scores(run_key, num_canaries: int, params0, params) -> jax.Array:
    """(n,): <u_i, params - params0> for each canary."""
    moved = jax.tree.map(lambda a, b: (a - b).astype(jnp.float32), params, params0)
    units = canary_directions(run_key, num_canaries, params0)
    return sum(jnp.tensordot(u.reshape(num_canaries, -1).astype(jnp.float32), m.reshape(-1), 1)
               for u, m in zip(jax.tree.leaves(units), jax.tree.leaves(moved)))


def with_canary_rows(tree, canaries: int):
    """A client-axis pytree with `canaries` copies of client 0's row after the K clients (a
    canary's own training is never sent: insert_canaries replaces its delta)."""
    if not canaries:
        return tree
    return jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[:1], canaries, 0)]), tree)


def canary_weights(p, canaries: int):
    """p over K clients and n canaries: the clients keep their proportions (scaled by K/(K +
    n)) and each canary gets 1/(K + n), so its weight reaches DP-FedAvg's cap 1/E."""
    if not canaries:
        return p
    rows = p.shape[0] + canaries
    return jnp.concatenate([p * (p.shape[0] / rows), jnp.full(canaries, 1.0 / rows, p.dtype)])
