"""The round engine: broadcast, E local steps per client under vmap, weighted aggregation.

A learning problem plugs in as a `Task` (three pure per-client functions); an algorithm is a
`Federation` (how a round starts, steps and aggregates). A round is a pure function

    (state, client data, weights, run key, round index, step sizes) -> (state, metrics)

and a run is `lax.scan` of rounds (`make_run`), so a whole run jits to one program and runs
over seeds or grids are `vmap`s of it (the PureJaxRL pattern). Everything with a leading
client axis K (data, private state, the parameters each client holds) is only ever mapped
over or contracted over axis 0.

Algorithms, all FedRLHF-shaped (Fan et al. 2025, Alg. 1), differing in three choices:

  fedavg       start from the global parameters; E local steps; the server aggregates the
               deltas the clients send (the weighted mean, FedAvg, McMahan et al. 2017, or a
               robust aggregator: fedsim.engine.aggregators), optionally through an optax
               server optimiser on the pseudo-gradient (Reddi et al. 2021, FedOpt).
  centralized  one learner on the pooled objective: each of its E steps per round uses the
               weighted average of the clients' directions at the same parameters, so it
               sees the same samples as fedavg (with K = 1 the two coincide).
  local        every client keeps its own parameters (no aggregation); the global
               parameters are the weighted average, for monitoring only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedsim.choices import ALGORITHMS
from fedsim.engine import keys as K_
from fedsim.engine.aggregation import participant_weights, sample_participants, weighted_sum
from fedsim.engine.aggregators import make_aggregator
from fedsim.engine.faults import attack, check_attack, dropout_mask, straggler_steps
from fedsim.errors import check_choice, check_int, check_real, require

Params = Any
Private = Any
ClientData = Any


class Task(NamedTuple):
    """A federated learning problem, as per-client pure functions (the engine vmaps them).

    init_private(data_k, key) -> private_k
        State that stays on client k forever: local reward models, personal parameters,
        optimiser moments. The engine never aggregates or broadcasts it.
    direction(params, private_k, data_k, key) -> (update direction, private_k)
        The ascent direction of client k's local objective at `params` (an exact or
        stochastic gradient, a Q-learning target step, ...); the local step is
        params + eta_t * direction.
    evaluate(global_params, client_params, private, data, weights) -> {name: array}
        Metrics of a round, given the global parameters, the (K, ...) parameters each
        client holds, the clients' private state (a client evaluates its own personal
        model; only the metrics leave it) and all clients' data; called outside the vmap.
    """

    init_private: Callable[[ClientData, jax.Array], Private]
    direction: Callable[[Params, Private, ClientData, jax.Array], tuple[Params, Private]]
    evaluate: Callable[[Params, Params, Private, ClientData, jax.Array], dict]


@dataclass(frozen=True)
class Federation:
    """How rounds run. `participants` (m) of K clients take part each round (None: all).

    client_block: None vmaps all clients at once; b runs them in blocks of b (vmap inside a
    block, a loop over blocks: `jax.lax.map(batch_size=b)`), the same computation with the
    working set of b clients, for K whose state outgrows the CPU's caches or the GPU memory.
    aggregator, trim: how the server combines the deltas (fedsim.engine.aggregators).
    dropout: each participant's delta is lost with this probability (fedsim.engine.faults).
    stragglers: each participant completes only 1..E-1 local steps with this probability
    (fedavg and local).
    byzantine: indices of clients whose sent deltas are replaced by `attack` with
    `attack_scale` (fedsim.engine.faults). The aggregator, dropout and Byzantine clients
    apply to fedavg, which is the algorithm that aggregates deltas.
    """

    algorithm: str = "fedavg"
    local_steps: int = 1
    participants: int | None = None
    server_optimizer: optax.GradientTransformation | None = None
    client_block: int | None = None
    aggregator: str = "mean"
    trim: float = 0.0
    dropout: float = 0.0
    stragglers: float = 0.0
    byzantine: tuple[int, ...] = ()
    attack: str = "sign_flip"
    attack_scale: float = 2.5

    def validate(self, num_clients: int) -> "Federation":
        check_choice("algorithm", self.algorithm, ALGORITHMS)
        check_int("local_steps (E)", self.local_steps, 1)
        if self.participants is not None:
            check_int("participants (m)", self.participants, 1, num_clients)
        if self.client_block is not None:
            check_int("client_block", self.client_block, 1)
        require(self.server_optimizer is None or self.algorithm != "local", "server_opt",
                "set", "must be none with the local algorithm (there is no aggregation)")
        make_aggregator(self.aggregator, self.trim)   # checks the name and the trim
        check_real("dropout", self.dropout, 0.0, 1.0, hi_open=True)
        check_real("stragglers", self.stragglers, 0.0, 1.0)
        require(self.stragglers == 0 or self.local_steps >= 2, "stragglers", self.stragglers,
                "must be 0 with local_steps E = 1 (a straggler does 1 to E - 1 steps)")
        require(self.stragglers == 0 or self.algorithm != "centralized", "algorithm",
                self.algorithm, "must be fedavg or local with --stragglers")
        faulty = self.aggregator != "mean" or self.dropout > 0 or bool(self.byzantine)
        require(not faulty or self.algorithm == "fedavg", "algorithm", self.algorithm,
                "must be fedavg with --aggregator, --dropout or --byzantine (the others do "
                "not aggregate deltas)")
        if self.byzantine:
            require(all(0 <= k < num_clients for k in self.byzantine), "byzantine",
                    list(self.byzantine), f"must name clients in [0, {num_clients - 1}]")
            check_attack(self.attack, self.attack_scale)
            fraction = len(set(self.byzantine)) / num_clients
            require(self.aggregator == "mean" or fraction < 0.5, "byzantine", fraction,
                    f"must be a fraction below 1/2 with --aggregator {self.aggregator} (a "
                    "median or trimmed mean breaks down at half)")
            require(self.aggregator != "trimmed_mean" or self.trim >= fraction, "trim",
                    self.trim, f"must be at least the Byzantine fraction {fraction:g} (Yin et "
                    "al. 2018: the trimmed mean tolerates a fraction up to beta)")
        return self

    def num_participants(self, num_clients: int) -> int:
        return num_clients if self.participants is None else self.participants


class FedState(NamedTuple):
    params: Params            # global parameters
    server_opt_state: Any     # () without a server optimiser
    client_params: Params     # (K, ...) the parameters each client last held
    private: Private          # (K, ...) never leaves the client
    nonfinite_round: jax.Array  # first round with non-finite parameters or metrics, -1 if none
    empty_rounds: jax.Array   # rounds in which no delta reached the server (all dropped out)


def init_state(task: Task, fed: Federation, params0, data, run_key) -> FedState:
    num_clients = jax.tree.leaves(data)[0].shape[0]
    init_keys = jax.vmap(lambda k: K_.client_init_key(run_key, k))(jnp.arange(num_clients))
    private = jax.vmap(task.init_private)(data, init_keys)
    client_params = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_clients,) + x.shape), params0)
    opt_state = fed.server_optimizer.init(params0) if fed.server_optimizer else ()
    return FedState(params0, opt_state, client_params, private, jnp.asarray(-1, jnp.int32),
                    jnp.asarray(0, jnp.int32))


def map_clients(fn, block: int | None):
    """fn mapped over the leading client axis of all its arguments: one vmap, or blocks of
    `block` clients (see Federation.client_block)."""
    if block is None:
        return jax.vmap(fn)
    return lambda *args: jax.lax.map(lambda xs: fn(*xs), args, batch_size=block)


def _ascend(params, direction, lr):
    return jax.tree.map(lambda p, d: p + lr.astype(p.dtype) * d, params, direction)


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def make_local_step(task: Task):
    """One local step of one client: (params, private, data_k, client round key, e, lr)."""

    def local_step(params, private, data, key, e, lr):
        direction, private = task.direction(params, private, data, K_.client_step_key(key, e))
        return _ascend(params, direction, lr), private

    return local_step


def make_local_update(task: Task, fed: Federation):
    """A client's update in a round, E local steps: (params, private, data_k, key, lrs (E,),
    steps=None)."""
    local_step = make_local_step(task)

    def local_update(params, private, data, key, lrs, steps=None):
        """steps: the local steps this client completes (a straggler's fewer than E); the
        later ones leave its parameters and private state as they were."""
        def step(carry, xs):
            new = local_step(*carry, data, key, *xs)
            if steps is None:
                return new, None
            return jax.tree.map(lambda n, o: jnp.where(xs[0] < steps, n, o), new, carry), None

        (params, private), _ = jax.lax.scan(step, (params, private),
                                            (jnp.arange(fed.local_steps), lrs))
        return params, private

    return local_update


def make_train_round(task: Task, fed: Federation):
    """One round without evaluation: (state, data, weights, run key, t, lrs (E,)) -> state."""
    E = fed.local_steps
    local_training = make_local_update(task, fed)
    aggregator = make_aggregator(fed.aggregator, fed.trim)

    def centralized_training(params, private, data, keys, weights, lrs):
        def step(carry, xs):
            params, private = carry
            e, lr = xs
            step_keys = jax.vmap(K_.client_step_key, (0, None))(keys, e)
            directions, private = map_clients(lambda pr, d, k: task.direction(params, pr, d, k),
                                              fed.client_block)(private, data, step_keys)
            return (_ascend(params, weighted_sum(directions, weights), lr), private), None

        (params, private), _ = jax.lax.scan(step, (params, private), (jnp.arange(E), lrs))
        return params, private

    def train_round(state: FedState, data, weights, run_key, round_index, lrs):
        num_clients = weights.shape[0]
        m = fed.num_participants(num_clients)
        full = m == num_clients
        idx = sample_participants(K_.participation_key(run_key, round_index), num_clients, m)
        take = (lambda tree: tree) if full else (lambda tree: jax.tree.map(lambda x: x[idx], tree))
        put = ((lambda tree, new: new) if full else
               (lambda tree, new: jax.tree.map(lambda x, y: x.at[idx].set(y), tree, new)))
        keys = jax.vmap(K_.client_round_key, (None, None, 0))(run_key, round_index, idx)
        agg_weights = participant_weights(weights, idx, m)
        data_s, private_s = take(data), take(state.private)

        empty = state.empty_rounds
        if fed.algorithm == "centralized":
            target, private_s = centralized_training(state.params, private_s, data_s, keys,
                                                     agg_weights, lrs)
            held = jax.tree.map(lambda x: jnp.broadcast_to(x, (m,) + x.shape), target)
        else:
            local = fed.algorithm == "local"
            start = take(state.client_params) if local else state.params
            steps = (straggler_steps(K_.straggler_key(run_key, round_index), m, E,
                                     fed.stragglers) if fed.stragglers > 0 else None)
            if local:
                held, private_s = map_clients(
                    lambda p, pr, d, k, n: local_training(p, pr, d, k, lrs, n), fed.client_block)(
                        start, private_s, data_s, keys, steps)
            else:
                held, private_s = map_clients(
                    lambda pr, d, k, n: local_training(start, pr, d, k, lrs, n), fed.client_block)(
                        private_s, data_s, keys, steps)
            if local:
                target = None
            else:   # the deltas clients send, aggregated (fedsim.engine.aggregators)
                delta = jax.tree.map(lambda h, p: h - p, held, state.params)
                if fed.byzantine:
                    byzantine = np.isin(np.arange(num_clients), fed.byzantine)
                    delta = attack(delta, jnp.asarray(byzantine)[idx], fed.attack,
                                   fed.attack_scale, run_key, round_index, idx)
                arrived = (dropout_mask(K_.dropout_key(run_key, round_index), m, fed.dropout)
                           if fed.dropout > 0 else jnp.ones(m, jnp.float32))
                arrived = arrived * (agg_weights > 0)   # zero-weight (padding) clients: never
                empty = empty + (arrived.sum() == 0).astype(jnp.int32)
                step, _ = aggregator.apply(delta, agg_weights, arrived,
                                           K_.server_key(run_key, round_index), ())
                target = _ascend(state.params, step, jnp.ones(()))
        client_params = put(state.client_params, held)

        opt_state = state.server_opt_state
        if fed.algorithm == "local":
            params = weighted_sum(client_params, weights)   # consensus, for monitoring only
        elif fed.server_optimizer is None:
            params = target
        else:
            pseudo_grad = jax.tree.map(lambda p, t: p - t, state.params, target)
            updates, opt_state = fed.server_optimizer.update(pseudo_grad, opt_state, state.params)
            params = optax.apply_updates(state.params, updates)

        new = FedState(params, opt_state, client_params, put(state.private, private_s),
                       state.nonfinite_round, empty)
        return _flag_nonfinite(new, (params, client_params), round_index)

    return train_round


def _flag_nonfinite(state: FedState, tree, round_index) -> FedState:
    first_bad = jnp.where((state.nonfinite_round < 0) & ~_all_finite(tree), round_index,
                          state.nonfinite_round)
    return state._replace(nonfinite_round=first_bad.astype(jnp.int32))


def _evaluate(task: Task, state: FedState, data, weights, round_index):
    metrics = task.evaluate(state.params, state.client_params, state.private, data, weights)
    return _flag_nonfinite(state, metrics, round_index), metrics


def make_round(task: Task, fed: Federation):
    """The round function (pure, jittable): a training round, then the task's metrics.

    (state, data, weights, run key, round index, step sizes (E,)) -> (state, metrics)
    """
    train_round = make_train_round(task, fed)

    def round_fn(state: FedState, data, weights, run_key, round_index, lrs):
        state = train_round(state, data, weights, run_key, round_index, lrs)
        return _evaluate(task, state, data, weights, round_index)

    return round_fn


def make_run(task: Task, fed: Federation):
    """run(state, data, weights, run_key, step_sizes (T, E), first_round) -> (state, metrics).

    One `lax.scan` over T rounds numbered first_round, ..., first_round + T - 1; metrics come
    back stacked with a leading axis T. Calling it on consecutive chunks equals one call on
    the whole schedule (that is how the command line shows progress).
    """
    round_fn = make_round(task, fed)

    def run(state: FedState, data, weights, run_key, step_sizes, first_round=0):
        rounds = first_round + jnp.arange(step_sizes.shape[0])

        def body(state, xs):
            return round_fn(state, data, weights, run_key, *xs)

        return jax.lax.scan(body, state, (rounds, step_sizes))

    return run


def make_checkpointed_run(task: Task, fed: Federation):
    """run(state, data, weights, run_key, step_sizes (T, E), checkpoints (n,), first_round=0)
    -> (state, metrics).

    Trains from round count `first_round` up to checkpoints[-1] but evaluates only after the
    round counts in `checkpoints` (increasing, in (first_round, T]), so memory is
    O(K state + checkpoints) rather than O(T K): long runs keep log-spaced checkpoints.
    Identical training to `make_run` (the same rounds and keys); consecutive calls continue
    one another. Loop bounds are traced, so one compilation serves any checkpoint values.
    """
    train_round = make_train_round(task, fed)

    def run(state: FedState, data, weights, run_key, step_sizes, checkpoints, first_round=0):
        def segment(carry, stop):
            state, start = carry
            state = jax.lax.fori_loop(
                start, stop,
                lambda t, s: train_round(s, data, weights, run_key, t, step_sizes[t]), state)
            state, metrics = _evaluate(task, state, data, weights, stop - 1)
            return (state, stop), metrics

        (state, _), metrics = jax.lax.scan(segment, (state, jnp.asarray(first_round, jnp.int32)),
                                           jnp.asarray(checkpoints, jnp.int32))
        return state, metrics

    return run


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
