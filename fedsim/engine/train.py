"""A whole run as one pure function (PureJaxRL's `make_train(config) -> train(rng)`).

    train = make_train(task, algorithm, fed)
    state, metrics = train(params0, data, weights, hparams, key, schedule, checkpoints)

jit it, vmap it over seeds (key) or grids (hparams, schedule, data), or both. Rounds
0, ..., checkpoints[-1] - 1 are trained, and the task evaluates the global model after the
round counts in `checkpoints` (increasing, 1-based), so memory is O(K state + checkpoints),
not O(T K). schedule: the (T, E) step sizes eta[t, e]. The loop bounds are traced, so one
compilation serves any checkpoint values.

`make_trainer` gives the two halves, init and run, for drivers that run a long schedule in
chunks (progress, saving, resuming): run(state, ..., first_round) continues a run, and
consecutive calls equal one call on the whole schedule. `train` then `evaluate` is `run` in two
programs: the rounds keep the states at the checkpoints (memory O(checkpoints K state)), and
their evaluation takes all of them in one batch, which a driver can run while the device
trains the next chunk.

With a device mesh (fedsim.engine.sharding.client_mesh), the client axis of the data, the
weights, the task's hyperparameters and the clients' state is split over the devices inside
the function (DrJAX's placement, XLA's SPMD partitioner), K not divisible by the device count
is padded with copies of the last client that carry weight 0, and the padded rows are cut
from the per-client metrics before they are returned: callers never see the padding.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fedsim.engine.algorithm import pooled_training
from fedsim.engine.round import HParams, evaluate, make_train_round
from fedsim.engine.sharding import CLIENT_AXIS, padded_size
from fedsim.engine.state import FedState, init_state
from fedsim.errors import require


class Metrics(NamedTuple):
    """Stacked over the logged rounds (leading axis n)."""

    round: dict     # the task's metrics of the federation: (n, ...)
    clients: dict   # the task's per-client metrics: (n, K, ...)
    aux: dict       # the task's aux metrics in the round just before each logged one: (n,)
    client_aux: dict = {}   # the same per client: (n, K, ...), NaN where it did not train


class Snapshots(NamedTuple):
    """A run's states at its checkpoints, stacked (leading axis n), with the aux metrics of the
    round before each: what `Trainer.evaluate` turns into Metrics."""

    states: FedState
    aux: dict
    client_aux: dict


class Trainer(NamedTuple):
    init: Callable[..., FedState]     # (params0, data, key) -> state
    run: Callable[..., tuple]         # (state, data, weights, hparams, key, schedule,
    #                                    checkpoints, first_round=0) -> (state, Metrics)
    # run in two programs: the rounds, keeping the states at the checkpoints, then their
    # evaluation, all checkpoints in one batch (the driver may overlap it with the next rounds)
    train: Callable[..., tuple]       # (same arguments as run) -> (state, Snapshots)
    evaluate: Callable[..., tuple]    # (Snapshots, data, weights, hparams, checkpoints) ->
    #                                    (first non-finite round or -1, Metrics)


def _padding(mesh: Mesh | None):
    """(pad, place): pad a client-axis pytree to the mesh and constrain it to the mesh."""
    if mesh is None:
        return (lambda tree, fill=None: tree), (lambda tree: tree)
    sharding = NamedSharding(mesh, PartitionSpec(CLIENT_AXIS))

    def pad(tree, fill=None):
        def one(x):
            extra = padded_size(x.shape[0], mesh.size) - x.shape[0]
            if not extra:
                return x
            tail = jnp.repeat(x[-1:], extra, 0) if fill is None else jnp.full(
                (extra,) + x.shape[1:], fill, x.dtype)
            return jnp.concatenate([x, tail])
        return jax.tree.map(one, tree)

    def place(tree):
        return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)

    return pad, place


def check(algorithm, fed, num_clients: int) -> None:
    """The federation's settings, for K clients and this algorithm: run when the run is traced,
    so before anything is compiled."""
    fed.validate(num_clients)
    require(algorithm.sends_deltas or not fed.acts_on_deltas, "algorithm", algorithm.name,
            "must send deltas to an aggregator with --aggregator, --dropout, --byzantine or "
            "DP-FedAvg")
    require(algorithm.client_update is not pooled_training or fed.stragglers == 0,
            "algorithm", algorithm.name, "must train clients locally with --stragglers")


def make_trainer(task, algorithm, fed, mesh: Mesh | None = None) -> Trainer:
    train_round = make_train_round(task, algorithm, fed, mesh)
    pad, place = _padding(mesh)

    def init(params0, data, key) -> FedState:
        check(algorithm, fed, jax.tree.leaves(data)[0].shape[0])
        state = init_state(task, algorithm, params0, place(pad(data)), key)
        return state._replace(clients=place(state.clients))

    def placed(data, weights, hparams: HParams):
        check(algorithm, fed, weights.shape[0])
        return (place(pad(data)), place(pad(weights, 0)),
                hparams._replace(task=place(pad(hparams.task))))

    def real_rows(tree, num_clients):
        """The per-client rows of the clients that exist (not the mesh's padding)."""
        return tree if mesh is None else jax.tree.map(lambda x: x[:num_clients], tree)

    def evaluated(state, data, weights, hparams, stop, num_clients):
        state, metrics, client_metrics = evaluate(task, algorithm, state, data, weights,
                                                  hparams, stop - 1)
        return state, metrics, real_rows(client_metrics, num_clients)

    def rounds(state, data, weights, hparams, key, schedule, checkpoints, first_round, out):
        """The rounds up to each checkpoint, then out(state, aux, stop) -> (state, output)."""
        aux0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(
            train_round, state, data, weights, hparams, key, 0, schedule[0])[1])

        def segment(carry, stop):
            state, aux, start = carry
            state, aux = jax.lax.fori_loop(
                start, stop, lambda t, c: train_round(c[0], data, weights, hparams, key, t,
                                                      schedule[t]), (state, aux))
            state, output = out(state._replace(clients=place(state.clients)), aux, stop)
            return (state, aux, stop), output

        (state, _, _), outputs = jax.lax.scan(
            segment, (state, aux0, jnp.asarray(first_round, jnp.int32)),
            jnp.asarray(checkpoints, jnp.int32))
        return state, outputs

    def run(state: FedState, data, weights, hparams: HParams, key, schedule, checkpoints,
            first_round=0):
        num_clients = weights.shape[0]
        data, weights, hparams = placed(data, weights, hparams)

        def out(state, aux, stop):
            state, metrics, client_metrics = evaluated(state, data, weights, hparams, stop,
                                                       num_clients)
            return state, Metrics(metrics, client_metrics, aux.mean,
                                  real_rows(aux.clients, num_clients))

        return rounds(state, data, weights, hparams, key, schedule, checkpoints, first_round,
                      out)

    def train(state: FedState, data, weights, hparams: HParams, key, schedule, checkpoints,
              first_round=0):
        num_clients = weights.shape[0]
        data, weights, hparams = placed(data, weights, hparams)
        return rounds(state, data, weights, hparams, key, schedule, checkpoints, first_round,
                      lambda state, aux, stop: (state, Snapshots(
                          state, aux.mean, real_rows(aux.clients, num_clients))))

    def evaluate_snapshots(snapshots: Snapshots, data, weights, hparams: HParams, checkpoints):
        num_clients = weights.shape[0]
        data, weights, hparams = placed(data, weights, hparams)

        def one(state, stop):
            state, metrics, client_metrics = evaluated(state, data, weights, hparams, stop,
                                                       num_clients)
            return state.nonfinite_round, metrics, client_metrics

        flags, metrics, client_metrics = jax.vmap(one)(snapshots.states,
                                                       jnp.asarray(checkpoints, jnp.int32))
        first = jnp.min(jnp.where(flags >= 0, flags, jnp.iinfo(flags.dtype).max))
        return (jnp.where(jnp.any(flags >= 0), first, -1),
                Metrics(metrics, client_metrics, snapshots.aux, snapshots.client_aux))

    return Trainer(init, run, train, evaluate_snapshots)


def make_train(task, algorithm, fed, mesh: Mesh | None = None):
    """train(params0, data, weights, hparams, key, schedule, checkpoints) -> (state, Metrics):
    init and every round of a run, pure (see the module docstring)."""
    trainer = make_trainer(task, algorithm, fed, mesh)

    def train(params0, data, weights, hparams: HParams, key, schedule, checkpoints):
        state = trainer.init(params0, data, key)
        return trainer.run(state, data, weights, hparams, key, schedule, checkpoints)

    return train


def every_round(num_rounds: int) -> np.ndarray:
    """Checkpoints that evaluate after every round."""
    return np.arange(1, num_rounds + 1, dtype=np.int32)


def log_checkpoints(num_rounds: int, count: int) -> np.ndarray:
    """About `count` log-spaced round counts in [1, num_rounds], always ending at num_rounds."""
    points = np.unique(np.round(np.logspace(0, np.log10(num_rounds), count)).astype(np.int64))
    return np.unique(np.append(points[points <= num_rounds], num_rounds)).astype(np.int32)


def raise_if_nonfinite(nonfinite_round) -> None:
    """Stop a run whose parameters or metrics became NaN/Inf, naming the round (and seed)."""
    bad = np.atleast_1d(np.asarray(nonfinite_round))
    if np.any(bad >= 0):
        runs = np.flatnonzero(bad >= 0)
        # Rounds are counted from 1 here, as in metrics.csv (round index t is round t + 1).
        raise FloatingPointError(
            f"parameters or metrics became NaN/Inf in round {int(bad[runs].min()) + 1} "
            f"(run index {', '.join(map(str, runs))}); lower the step size or check the rewards")

