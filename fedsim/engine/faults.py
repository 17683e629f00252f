"""Faults injected at the update level, whatever the task: dropout, stragglers, Byzantine
clients.

Dropout: each participant independently fails to send its delta with probability p (its
own local training still happens; only the upload is lost). Stragglers: each participant
independently, with probability s, manages only a number of local steps drawn uniformly
from 1, ..., E - 1 this round, and sends what it has. Byzantine clients: a fixed set whose
sent deltas are replaced before aggregation; their honest computation is unchanged:

  sign_flip   -c times the honest delta (FedPG-BR's attack with c = 2.5, Fan et al. 2021)
  scale       c times the honest delta
  noise       N(0, c^2) per coordinate, from the client's fault stream (keys.fault_key)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.choices import ATTACKS
from fedsim.engine import keys as K_
from fedsim.errors import check_choice, check_real, require


def byzantine_clients(num_clients: int, fraction: float, seed: int) -> np.ndarray:
    """(K,) bool: round(f K) clients chosen by a permutation seeded with `seed` (so that
    they are not always the last clients, whose lambda_k is the largest on a grid)."""
    check_real("byzantine", fraction, 0.0, 1.0)
    count = int(round(fraction * num_clients))
    chosen = np.random.default_rng([seed, 0xB1]).permutation(num_clients)[:count]
    mask = np.zeros(num_clients, bool)
    mask[chosen] = True
    return mask


def dropout_mask(key, num_participants: int, p: float):
    """(m,) float: 1 for a participant whose delta arrives."""
    return jax.random.bernoulli(key, 1.0 - p, (num_participants,)).astype(jnp.float32)


def straggler_steps(key, num_participants: int, local_steps: int, fraction: float):
    """(m,) int32: the local steps each participant completes this round (E if on time)."""
    late_key, steps_key = jax.random.split(key)
    late = jax.random.bernoulli(late_key, fraction, (num_participants,))
    done = jax.random.randint(steps_key, (num_participants,), 1, max(local_steps, 2))
    return jnp.where(late, done, local_steps).astype(jnp.int32)


def check_attack(attack: str, scale: float) -> None:
    check_choice("attack", attack, ATTACKS)
    check_real("attack_scale", scale, 0.0, lo_open=attack != "scale")
    require(attack != "scale" or scale != 1.0, "attack_scale", scale,
            "must not be 1 with --attack scale (that is an honest client)")


def attack(deltas, byzantine, name: str, scale: float, run_key, round_index, clients):
    """deltas (m, ...) with the rows of Byzantine clients replaced; byzantine: (m,) bool of
    those clients, clients: (m,) their indices (for their fault streams)."""
    def replace(i, leaf):
        if name == "noise":
            keys = jax.vmap(lambda k: jax.random.fold_in(K_.fault_key(run_key, round_index, k), i))(
                clients)
            bad = scale * jax.vmap(lambda k: jax.random.normal(k, leaf.shape[1:], leaf.dtype))(keys)
        else:
            bad = (-scale if name == "sign_flip" else scale) * leaf
        flag = byzantine.reshape((-1,) + (1,) * (leaf.ndim - 1))
        return jnp.where(flag, bad, leaf)

    leaves, treedef = jax.tree.flatten(deltas)
    return jax.tree.unflatten(treedef, [replace(i, leaf) for i, leaf in enumerate(leaves)])
