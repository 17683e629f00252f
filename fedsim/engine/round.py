"""The round function: sample, start, train locally, send, aggregate, update the server.

    (state, data, weights, hparams, run key, round index t, step sizes (E,)) -> (state, aux)

It knows nothing of any algorithm: the algorithm's parts (fedsim.engine.algorithm) say how
clients start, train and are combined; the Federation says who takes part and which faults
strike. Everything with a leading client axis is only mapped over or contracted over axis 0.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.engine import keys as K_
from fedsim.engine.aggregation import participant_weights, sample_participants
from fedsim.engine.algorithm import map_clients, participant_rows
from fedsim.engine.faults import attack, dropout_mask, straggler_steps
from fedsim.engine.state import FedState
from fedsim.errors import require
from fedsim.privacy.canaries import insert_canaries


class HParams(NamedTuple):
    """The run's hyperparameters, inputs of the compiled run (grids over them are vmaps)."""

    task: Any = ()        # the task's, per client (leading axis K), e.g. lambda_k
    algorithm: Any = ()   # the algorithm's (scalars), e.g. FedProx's mu


def all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def flag_nonfinite(state: FedState, tree, round_index) -> FedState:
    first_bad = jnp.where((state.nonfinite_round < 0) & ~all_finite(tree), round_index,
                          state.nonfinite_round)
    return state._replace(nonfinite_round=first_bad.astype(jnp.int32))


class Draws(NamedTuple):
    """A round's random participation, from the run key alone (fedsim.engine.keys)."""

    participants: jax.Array   # (m,) client indices, sorted
    steps: Any                # (m,) local steps each completes (stragglers), or None: all E
    arrived: jax.Array        # (m,) 1 where the client's delta reaches the server
    selected: Any             # (m,) 1 where Poisson sampling took the row; None: every row


def round_draws(fed, run_key, t, num_clients: int) -> Draws:
    """Who takes part in round t, how many local steps each manages, whose delta arrives.
    With Poisson sampling all K rows are computed and `selected` says which took part."""
    m = fed.num_participants(num_clients)
    steps = (straggler_steps(K_.straggler_key(run_key, t), m, fed.local_steps, fed.stragglers)
             if fed.stragglers > 0 else None)
    arrived = (dropout_mask(K_.dropout_key(run_key, t), m, fed.dropout) if fed.dropout > 0
               else jnp.ones(m, jnp.float32))
    selected = None
    if fed.sampling == "poisson":
        selected = jax.random.bernoulli(K_.participation_key(run_key, t),
                                        fed.participation_rate, (m,)).astype(jnp.float32)
        arrived = arrived * selected
    return Draws(sample_participants(K_.participation_key(run_key, t), num_clients, m), steps,
                 arrived, selected)


class RoundAux(NamedTuple):
    """A round's aux metrics, averaged over the local steps each client completed."""

    mean: Any      # then over the participants with their aggregation weights: scalars
    clients: Any   # per client (K, ...), NaN for a client that did not train this round


def make_train_round(task, algorithm, fed, mesh=None):
    """One training round (no evaluation): (state, RoundAux). mesh: the devices the run's
    clients are split over (fedsim.engine.sharding), if any."""
    E = fed.local_steps
    over_clients = functools.partial(map_clients, block=fed.client_block, mesh=mesh)
    client_update = algorithm.client_update(task, algorithm.local_objective, E, over_clients)
    require(not algorithm.reads_reports or task.report is not None, "algorithm", algorithm.name,
            "weighs clients by their reports: it needs a task with Task.report")
    report = over_clients(task.report) if algorithm.reads_reports else None

    def train_round(state: FedState, data, weights, hparams: HParams, run_key, t, lrs):
        K = weights.shape[0]
        m = fed.num_participants(K)
        draws = round_draws(fed, run_key, t, K)
        idx = draws.participants
        take = lambda tree: participant_rows(tree, idx)
        put = (lambda tree, new: new) if m == K else (
            lambda tree, new: jax.tree.map(lambda x, y: x.at[idx].set(y), tree, new))
        keys = jax.vmap(K_.client_round_key, (None, None, 0))(run_key, t, idx)
        # unbiased weights: p_k K/m for m of K; p_k / q for the clients Poisson sampling
        # took, 0 for the others
        w = (weights * draws.selected / fed.participation_rate if draws.selected is not None
             else participant_weights(weights, idx, m))

        mine = take(state.clients)
        # what every client tells the server with its parameters (the algorithm reads it)
        given = {} if report is None else {"reports": report(
            state.clients.params, state.clients.private, data, hparams.task)}
        start, message = algorithm.client_start(state.params, state.clients.params, idx,
                                                hparams.algorithm, **given)
        trained, aux = client_update(start, mine, take(data), take(hparams.task), keys, lrs,
                                     draws.steps, message, w, hparams.algorithm)
        if draws.selected is not None:   # the clients Poisson sampling left out did nothing
            trained = jax.tree.map(lambda new, old: jnp.where(
                draws.selected.reshape((-1,) + (1,) * (new.ndim - 1)) > 0, new, old),
                trained, mine)
        mine = trained

        # What they send: the shared parameters' deltas only (never personal or private
        # state); tests/test_privacy.py checks that nothing else reaches the aggregator.
        delta = jax.tree.map(lambda h, p: h - p, mine.params, state.params)
        if fed.byzantine:
            byzantine = jnp.asarray(np.isin(np.arange(K), fed.byzantine))[idx]
            delta = attack(delta, byzantine, fed.attack, fed.attack_scale, run_key, t, idx)
        arrived = draws.arrived * (w > 0)   # zero-weight (padding) clients never count
        if fed.canaries:
            delta, arrived = insert_canaries(delta, arrived, run_key, fed.canaries, fed.dp.clip)
        aggregate, aggregator_state = algorithm.aggregator.apply(
            delta, w, arrived, K_.server_key(run_key, t), state.aggregator_state)

        clients = put(state.clients, mine)
        params, server_state = algorithm.server_update.apply(
            state.params, aggregate, clients.params, weights, state.server_state)
        empty = state.empty_rounds + (arrived.sum() == 0).astype(jnp.int32)
        new = FedState(params, server_state, aggregator_state, clients, state.nonfinite_round,
                       empty)
        share = w / jnp.maximum(w.sum(), 1e-30)
        mean = jax.tree.map(lambda x: share.astype(x.dtype) @ x, aux)
        took = w > 0   # a client that trained this round (NaN elsewhere in the per-client aux)
        per_client = jax.tree.map(lambda x: jnp.full((K,) + x.shape[1:], jnp.nan, x.dtype).at[
            idx].set(jnp.where(took.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.nan)), aux)
        return flag_nonfinite(new, (params, clients.params, mean), t), RoundAux(mean, per_client)

    return train_round


def evaluate(task, algorithm, state: FedState, data, weights, hparams: HParams, round_index):
    """(state, metrics, client_metrics): the task's evaluation and the algorithm's per-client
    metrics, flagged if non-finite."""
    metrics, client_metrics = task.evaluate(state.params, state.clients, data, hparams.task,
                                            weights)
    client_metrics = {**client_metrics, **algorithm.client_metrics(
        task, state, data, hparams.task, hparams.algorithm)}
    return flag_nonfinite(state, (metrics, client_metrics), round_index), metrics, client_metrics
