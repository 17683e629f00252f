"""Key derivation: every random draw is a pure function of (run key, round, client, step).

Keys are folded in, never split sequentially, so client k's stream does not depend on how
many clients there are or which ones took part in a round.
"""

from __future__ import annotations

import jax

_ROUNDS, _INIT = 0, 1          # top-level streams of a run key
_PARTICIPATION, _CLIENTS, _DROPOUT, _SERVER, _FAULTS, _STRAGGLERS = range(6)  # of a round key


def _round_key(run_key, round_index):
    return jax.random.fold_in(jax.random.fold_in(run_key, _ROUNDS), round_index)


def participation_key(run_key, round_index):
    return jax.random.fold_in(_round_key(run_key, round_index), _PARTICIPATION)


def client_round_key(run_key, round_index, client_index):
    rounds = _round_key(run_key, round_index)
    return jax.random.fold_in(jax.random.fold_in(rounds, _CLIENTS), client_index)


def dropout_key(run_key, round_index):
    """Which participants drop out this round."""
    return jax.random.fold_in(_round_key(run_key, round_index), _DROPOUT)


def straggler_key(run_key, round_index):
    """Which participants straggle this round, and how many local steps they manage."""
    return jax.random.fold_in(_round_key(run_key, round_index), _STRAGGLERS)


def server_key(run_key, round_index):
    """The server's own draws (e.g. DP-FedAvg's noise), independent of every client's."""
    return jax.random.fold_in(_round_key(run_key, round_index), _SERVER)


def fault_key(run_key, round_index, client_index):
    """A faulty client's draws (e.g. the noise it sends instead of its delta)."""
    faults = jax.random.fold_in(_round_key(run_key, round_index), _FAULTS)
    return jax.random.fold_in(faults, client_index)


def client_step_key(client_key, local_step):
    return jax.random.fold_in(client_key, local_step)


def client_init_key(run_key, client_index):
    return jax.random.fold_in(jax.random.fold_in(run_key, _INIT), client_index)
