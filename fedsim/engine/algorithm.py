"""An algorithm as a composition of small parts (FedJAX's and DrJAX's shape), and the standard
parts. fedsim.algorithms composes them into FedAvg, FedProx, centralized and local training.

    Algorithm(name, client_start, local_objective, client_update, aggregator, server_update)

client_start(global_params, client_params (K, ...), participants (m,), hparams[, reports])
        -> (start (m, ...), message)
    What each of the round's m participants starts from (the global parameters, its own) and
    a per-client message the server computes, from the global parameters or from every
    client's previous parameters (e.g. FedProx's anchor; () if none). A message that is a
    fedsim.engine.task.Reference puts the task's KL penalty to it into the local objective
    (Task.kl). An algorithm with reads_reports also receives reports=, every client's
    Task.report (leading axis K). `participant_rows` picks the participants' rows.
local_objective(direction, params, message, hparams) -> direction
    The algorithm's change to the task's local ascent direction (FedProx's proximal pull).
client_update(task, local_objective, local_steps, over_clients) -> update
    over_clients(fn) maps a per-client fn over the leading client axis, as the run maps
    clients (`map_clients` with the federation's blocks and the run's devices).
    update(start, clients, data, task_hparams, keys, lrs (E,), steps, message, weights,
    hparams) -> (clients, aux): the participants' local training, all clients mapped;
    `steps` (m,) are the local steps each completes (stragglers), or None for all E.
aggregator: fedsim.engine.aggregators.Aggregator, over the deltas the clients send.
server_update: ServerUpdate, the global parameters from the aggregate delta.
sends_deltas: whether the clients' deltas reach an aggregator (the faults of
    fedsim.engine.faults and robust aggregators apply only then).
client_metrics(task, state, data, task_hparams, hparams) -> dict of (K, ...) arrays: what
    the algorithm adds to the task's per-client metrics at evaluation (e.g. each client's KL
    to the reference it would be sent next).
hparams: the algorithm's hyperparameters (a pytree of scalars, e.g. FedProx's mu), an input
    of the compiled run.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec

from fedsim.engine import keys as K_
from fedsim.engine.aggregation import weighted_sum
from fedsim.engine.aggregators import Aggregator, weighted_mean
from fedsim.engine.sharding import CLIENT_AXIS
from fedsim.engine.state import ClientState, broadcast_clients
from fedsim.engine.task import Reference


class ServerUpdate(NamedTuple):
    """init(params) -> state; apply(params, aggregate, client_params (K, ...), weights (K,),
    state) -> (params, state)."""

    init: Callable[[Any], Any]
    apply: Callable[..., tuple[Any, Any]]


def map_clients(fn, block: int | None = None, mesh: Mesh | None = None):
    """fn mapped over the leading client axis of all its arguments: one vmap, or blocks of
    `block` clients (vmap inside a block, a loop over blocks: `jax.lax.map(batch_size=b)`),
    the same computation with the working set of b clients.

    With a device mesh (fedsim.engine.sharding.client_mesh) a vmap is left to XLA's
    partitioner, which splits it over the devices; blocks are not: given a loop over blocks
    of a sharded axis, it ran each block on one device (W1 K = 10 000 on 2 CPU devices: 0.6x
    one device). So each device maps its own clients, in blocks of b / devices, so that the
    devices together hold b clients' working set (`jax.shard_map`; W1 K = 10 000 on the 2
    cores, blocks of 1000 on one device against 500 on each of two: 1.13-1.16x one device
    alternating in one process, 0.98x in the bench's separate processes).
    A client axis the devices do not divide (the sampled participants) is mapped as without
    a mesh."""
    if block is None:
        return jax.vmap(fn)
    blocks = lambda size: (lambda *args: jax.lax.map(lambda xs: fn(*xs), args, batch_size=size))
    if mesh is None or mesh.size == 1:
        return blocks(block)

    def per_device(*args):
        if jax.tree.leaves(args)[0].shape[0] % mesh.size:
            return blocks(block)(*args)
        spec = PartitionSpec(CLIENT_AXIS)
        # check_vma=False: the clients' loops carry values that start replicated (the global
        # parameters) and end per device, which the type check of shard_map rejects
        return jax.shard_map(blocks(max(1, block // mesh.size)), mesh=mesh,
                             in_specs=(spec,) * len(args), out_specs=spec,
                             check_vma=False)(*args)

    return per_device


def ascend(params, step, lr):
    return jax.tree.map(lambda p, d: p + lr.astype(p.dtype) * d, params, step)


def _negated(tree):
    return jax.tree.map(jnp.negative, tree)


# ---- client start --------------------------------------------------------------------------

def participant_rows(tree, participants):
    """The participants' rows of a pytree with a leading client axis (all of it, without a
    gather, when every client takes part)."""
    leaves = jax.tree.leaves(tree)
    if not leaves or participants.shape[0] == leaves[0].shape[0]:
        return tree   # sample_participants gives 0..K-1 in order when m = K
    return jax.tree.map(lambda x: x[participants], tree)


def from_global(global_params, client_params, participants, hparams):
    """Every participant starts from the global parameters (FedAvg)."""
    return broadcast_clients(global_params, participants.shape[0]), ()


def from_own(global_params, client_params, participants, hparams):
    """Every participant continues from the parameters it holds (no federation)."""
    return participant_rows(client_params, participants), ()


# ---- local objective -----------------------------------------------------------------------

def task_objective(direction, params, message, hparams):
    """The task's own objective, unchanged."""
    return direction


# ---- client update -------------------------------------------------------------------------

def client_step(task, local_objective):
    """One client's optimiser step at `params`, unscaled: (params, client, data_k, hparams_k,
    key, message_k, hparams) -> (step, client with new optimiser/personal/private state, aux)."""
    def step(params, client: ClientState, data, task_hparams, key, message, hparams):
        if isinstance(message, Reference):
            d = task.kl.direction(params, client.personal, client.private, data, task_hparams,
                                  key, message.policy, message.coef)
        else:
            d = task.direction(params, client.personal, client.private, data, task_hparams, key)
        ascent = local_objective(d.params, params, message, hparams)
        update, opt_state = task.client_optimizer.update(_negated(ascent), client.opt_state, params)
        personal_update, personal_opt_state = task.personal_optimizer.update(
            _negated(d.personal), client.personal_opt_state, client.personal)
        personal = optax.apply_updates(client.personal, personal_update)
        return update, ClientState(params, personal, opt_state, personal_opt_state, d.private), d.aux

    return step


def _mean_over_steps(aux, done):
    return jax.tree.map(lambda x: jnp.sum(x * done) / jnp.maximum(jnp.sum(done), 1), aux)


def local_steps_of_one_client(task, local_objective, local_steps: int):
    """One client's E local steps: (start, client, data_k, hparams_k, key, lrs (E,), steps,
    message_k, hparams) -> (client, aux averaged over the steps it completed)."""
    step = client_step(task, local_objective)

    def update(start, client, data, task_hparams, key, lrs, steps, message, hparams):
        def body(carry, xs):
            e, lr = xs
            update, new, aux = step(carry.params, carry, data, task_hparams,
                                    K_.client_step_key(key, e), message, hparams)
            new = new._replace(params=ascend(carry.params, update, lr))
            if steps is None:
                return new, (aux, jnp.ones(()))
            done = e < steps   # a straggler's later steps leave its state as it was
            return jax.tree.map(lambda n, o: jnp.where(done, n, o), new, carry), (aux, done)

        client, (aux, done) = jax.lax.scan(body, client._replace(params=start),
                                           (jnp.arange(local_steps), lrs))
        return client, _mean_over_steps(aux, done)

    return update


def local_training(task, local_objective, local_steps: int, over_clients=jax.vmap):
    """E local steps per client from its start, every client mapped (FedAvg's client update)."""
    one_client = local_steps_of_one_client(task, local_objective, local_steps)

    def update(start, clients, data, task_hparams, keys, lrs, steps, message, weights, hparams):
        return over_clients(
            lambda s, c, d, h, k, n, msg: one_client(s, c, d, h, k, lrs, n, msg, hparams))(
                start, clients, data, task_hparams, keys, steps, message)

    return update


def pooled_training(task, local_objective, local_steps: int, over_clients=jax.vmap):
    """One learner on the pooled objective: each of its E steps takes the weighted mean of
    the participants' optimiser steps at the same parameters (it sees the same samples as
    local training; with one client the two coincide). The participants all hold the result."""
    step = client_step(task, local_objective)

    def update(start, clients, data, task_hparams, keys, lrs, steps, message, weights, hparams):
        def body(carry, xs):
            params, clients = carry
            e, lr = xs
            step_keys = jax.vmap(K_.client_step_key, (0, None))(keys, e)
            updates, clients, aux = over_clients(
                lambda c, d, h, k, msg: step(params, c, d, h, k, msg, hparams))(
                    clients, data, task_hparams, step_keys, message)
            return (ascend(params, weighted_sum(updates, weights), lr), clients), aux

        learner = jax.tree.map(lambda x: x[0], start)
        (params, clients), aux = jax.lax.scan(body, (learner, clients),
                                              (jnp.arange(local_steps), lrs))
        m = weights.shape[0]
        return (clients._replace(params=broadcast_clients(params, m)),
                jax.tree.map(lambda x: x.mean(0), aux))

    return update


# ---- server update -------------------------------------------------------------------------

def server_optimizer(optimizer: optax.GradientTransformation | None = None) -> ServerUpdate:
    """theta + aggregate, or an optax optimiser on the pseudo-gradient theta - (theta +
    aggregate) (Reddi et al. 2021, FedOpt; optax.sgd(1) is plain FedAvg)."""
    def init(params):
        return optimizer.init(params) if optimizer else ()

    def apply(params, aggregate, client_params, weights, state):
        target = ascend(params, aggregate, jnp.ones(()))
        if optimizer is None:
            return target, state
        pseudo_grad = jax.tree.map(lambda p, t: p - t, params, target)
        updates, state = optimizer.update(pseudo_grad, state, params)
        return optax.apply_updates(params, updates), state

    return ServerUpdate(init, apply)


def consensus() -> ServerUpdate:
    """The weighted average of every client's parameters, for monitoring only (nothing is
    sent back)."""
    return ServerUpdate(lambda params: (),
                        lambda params, aggregate, client_params, weights, state: (
                            weighted_sum(client_params, weights), state))


def no_client_metrics(task, state, data, task_hparams, hparams):
    return {}


class Algorithm(NamedTuple):
    name: str
    client_start: Callable = from_global
    local_objective: Callable = task_objective
    client_update: Callable = local_training
    aggregator: Aggregator = weighted_mean()
    server_update: ServerUpdate = server_optimizer()
    sends_deltas: bool = True
    client_metrics: Callable = no_client_metrics
    reads_reports: bool = False
