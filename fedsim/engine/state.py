"""The engine's state: the server's and, with a leading client axis K, every client's."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fedsim.engine import keys as K_


class ClientState(NamedTuple):
    """Client k's row of each leaf (leading axis K)."""

    params: Any               # the shared parameters the client last held
    personal: Any             # personal parameters (never leave the client)
    opt_state: Any            # the client optimiser's state (Task.client_optimizer)
    personal_opt_state: Any   # the personal optimiser's state
    private: Any              # the task's private state (never leaves the client)


class FedState(NamedTuple):
    params: Any               # the global parameters
    server_state: Any         # the server update's state (e.g. a server optimiser's moments)
    aggregator_state: Any
    clients: ClientState
    nonfinite_round: jax.Array  # first round with non-finite parameters or metrics, -1 if none
    empty_rounds: jax.Array   # rounds in which no delta reached the server (all dropped out)


def broadcast_clients(tree, num_clients: int):
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_clients,) + jnp.shape(x)), tree)


def init_state(task, algorithm, params0, data, run_key) -> FedState:
    """Every client starts from params0 with fresh optimiser states; private and personal
    state come from the task, each client from its own init key."""
    num_clients = jax.tree.leaves(data)[0].shape[0]
    keys = jax.vmap(lambda k: K_.client_init_key(run_key, k))(jnp.arange(num_clients))
    personal = jax.vmap(task.init_personal)(data, keys)
    clients = ClientState(
        params=broadcast_clients(params0, num_clients),
        personal=personal,
        opt_state=broadcast_clients(task.client_optimizer.init(params0), num_clients),
        personal_opt_state=jax.vmap(task.personal_optimizer.init, axis_size=num_clients)(personal),
        private=jax.vmap(task.init_private)(data, keys))
    return FedState(params0, algorithm.server_update.init(params0),
                    algorithm.aggregator.init(params0), clients, jnp.asarray(-1, jnp.int32),
                    jnp.asarray(0, jnp.int32))
