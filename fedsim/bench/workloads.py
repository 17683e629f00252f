"""The benchmark workloads and the ways of running them (modes), each timed in isolation.

Workloads (DESIGN.md section 5), FedAvg with E = 5 local steps:
    W1  tabular, exact policy gradients, S = 20, A = 5
    W2  tabular, sampled-trajectory gradients (GPOMDP, batch 16, horizon 20), S = 20, A = 5
    W3  the MovieLens task's neural model (flax Q-network, 32 ratings a step, local Adam), on
        a synthetic MovieLens-shaped data set with K users (no data needed)

Modes, all computing the same rounds (the same keys, the same client updates):
    vectorized  the engine: clients vmapped (in blocks of 1000 above 1000 clients), rounds in
                one compiled loop (a trip count known only at run time, so one compilation
                serves every length)
    loop        the engine's client update (E local steps) jitted once and called in a
                Python loop over clients; the server averages the stacked results
    loop_step   FedJAX's granularity (`for_each_client` jits one client step): a jitted
                local step called in Python loops over clients and local steps
    numpy       plain numpy, float64, a Python loop over clients and steps (W1 only)

Per-client data are placed on the device before timing in the loop modes, which is
generous to them: a real per-client pipeline also pays the transfer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.engine import (Federation, Task, init_state, make_checkpointed_run, make_local_step,
                           make_local_update, weighted_sum)
from fedsim.engine import keys as K_
from fedsim.engine.grid import grid_vmap
from fedsim.tabular.mdp import InstanceSpec, TabularInstance, client_data, make_instance
from fedsim.movielens import data as movielens_data
from fedsim.movielens import task as movielens_task
from fedsim.movielens.clients import make_clients
from fedsim.tabular.task import LearnerSpec, make_task

WORKLOADS = {
    "W1": LearnerSpec(gradient="exact"),
    "W2": LearnerSpec(gradient="sampled", batch=16, horizon=20),
}
LOCAL_STEPS = 5
STEP_SIZE = 0.5          # W1, W2 (the engine's plain ascent steps)
NEURAL_STEP_SIZE = 0.01  # W3 (Adam-normalised directions; the MovieLens default)
NEURAL = "W3"
MODES = ("vectorized", "loop", "loop_step", "numpy")   # numpy: W1 only


class Problem(NamedTuple):
    """What a mode needs: the task, initial parameters, client data (leading axis K), weights,
    and the step size."""

    task: Task
    params0: Any
    data: Any
    weights: jax.Array
    step_size: float = STEP_SIZE


def modes_for(workload: str) -> tuple[str, ...]:
    return MODES if workload == "W1" else MODES[:3]


# Above this many clients the vectorized mode runs them in blocks of this size
# (Federation.client_block): the working set of 1000 W1 clients fits a 32 MB L3 cache.
CLIENT_BLOCK = 1000


def client_block_for(num_clients: int) -> int | None:
    return CLIENT_BLOCK if num_clients > CLIENT_BLOCK else None


REPEATS = 3   # every mode is timed this many times and reports its fastest


@dataclass(frozen=True)
class Measurement:
    rounds: int
    seconds: float       # wall time of the timed rounds (fastest repeat), after compilation
    compile_seconds: float


def instance_for(num_clients: int) -> TabularInstance:
    return make_instance(InstanceSpec(num_clients=num_clients, num_states=20, num_actions=5))


def problem_for(workload: str, num_clients: int) -> Problem:
    if workload != NEURAL:
        instance = instance_for(num_clients)
        return Problem(make_task(instance, WORKLOADS[workload]), jnp.asarray(instance.theta0),
                       client_data(instance), jnp.asarray(instance.p))
    ratings = movielens_data.synthetic(num_users=num_clients, num_movies=1000, seed=0)
    clients = make_clients(ratings, movielens_data.split_per_user(ratings),
                           np.arange(num_clients), 0.5)
    spec = movielens_task.ModelSpec()
    task, net = movielens_task.make_task(ratings.num_movies, ratings.genres, spec)
    params0 = movielens_task.init_params(net, jax.random.key(0), ratings.genres.shape[1], spec.dim)
    counts = clients["train_count"]
    return Problem(task, params0, {k: jnp.asarray(v) for k, v in clients.items()},
                   jnp.asarray(counts / counts.sum()), NEURAL_STEP_SIZE)


def env_steps_per_client_step(workload: str) -> int:
    """Transitions simulated per client-step: B H for sampled gradients (those after the
    geometric termination are computed and masked, so they count), none for exact ones."""
    learner = WORKLOADS.get(workload)
    return learner.batch * learner.horizon if learner and learner.gradient == "sampled" else 0


def _rounds_for(seconds_per_round: float, budget: float, cap: int) -> int:
    return int(np.clip(budget / max(seconds_per_round, 1e-9), 1, cap))


def vectorized_rounds(problem: Problem, max_rounds: int = 2000):
    """The engine's long-run path (training rounds, one evaluation at the end), compiled once
    for any number of rounds <= max_rounds: returns (run(rounds) -> global params, compile s)."""
    task, params0, data, weights, step_size = problem
    num_clients = weights.shape[0]
    fed = Federation("fedavg", LOCAL_STEPS, client_block=client_block_for(num_clients))
    key = jax.random.key(0)
    lrs = jnp.full((max_rounds, LOCAL_STEPS), step_size, jnp.float32)
    state = init_state(task, fed, params0, data, key)
    run = jax.jit(make_checkpointed_run(task, fed), donate_argnums=0)
    start = time.perf_counter()
    compiled = run.lower(state, data, weights, key, lrs, jnp.ones(1, jnp.int32)).compile()
    compile_s = time.perf_counter() - start

    def rounds(n: int):
        fresh = jax.tree.map(jnp.copy, state)   # donated buffers are consumed by the call
        return compiled(fresh, data, weights, key, lrs, jnp.asarray([n], jnp.int32))[0].params

    return rounds, compile_s


def time_vectorized(problem: Problem, budget: float = 1.0, max_rounds: int = 2000) -> Measurement:
    run, compile_s = vectorized_rounds(problem, max_rounds)

    def timed(rounds):
        start = time.perf_counter()
        jax.block_until_ready(run(rounds))
        return time.perf_counter() - start

    timed(1)   # the first call after compilation pays one-time costs
    rounds = _rounds_for(timed(1), budget, max_rounds)
    return Measurement(rounds, min(timed(rounds) for _ in range(REPEATS)), compile_s)


def loop_round(problem: Problem, per_step: bool):
    """One FedAvg round as a Python loop over clients calling a jitted client update (E steps)
    or, per_step, a jitted local step: returns (round(params, t) -> params, compile s).
    Each client's private state (reward model, optimiser moments) persists between rounds."""
    task, params0, data, weights, step_size = problem
    num_clients = weights.shape[0]
    fed = Federation("fedavg", LOCAL_STEPS)
    key = jax.random.key(0)
    per_client = [jax.tree.map(lambda x, k=k: x[k], data) for k in range(num_clients)]
    private = init_state(task, fed, params0, data, key).private
    privates = [jax.tree.map(lambda x, k=k: x[k], private) for k in range(num_clients)]
    lrs = jnp.full((LOCAL_STEPS,), step_size, jnp.float32)
    aggregate = jax.jit(lambda held, w: weighted_sum(jax.tree.map(lambda *xs: jnp.stack(xs), *held), w))
    if per_step:
        local_step = make_local_step(task)
        step = jax.jit(lambda p, pr, d, t, k, e, lr: local_step(
            p, pr, d, K_.client_round_key(key, t, k), e, lr))
        step_lrs = list(lrs)   # indexed once here, not on every call

        def update(params, k, t):
            for e in range(LOCAL_STEPS):
                params, privates[k] = step(params, privates[k], per_client[k], t, k, e,
                                           step_lrs[e])
            return params
    else:
        local_update = make_local_update(task, fed)
        client = jax.jit(lambda p, pr, d, t, k: local_update(
            p, pr, d, K_.client_round_key(key, t, k), lrs))

        def update(params, k, t):
            params, privates[k] = client(params, privates[k], per_client[k], t, k)
            return params

    def one_round(params, t):
        # Calls dispatch asynchronously; the round ends when the aggregate is ready.
        return jax.block_until_ready(
            aggregate([update(params, k, t) for k in range(num_clients)], weights))

    start = time.perf_counter()   # trace and compile once, leaving the clients' state as is
    if per_step:
        jax.block_until_ready(step(params0, privates[0], per_client[0], 0, 0, 0, step_lrs[0]))
    else:
        jax.block_until_ready(client(params0, privates[0], per_client[0], 0, 0))
    return one_round, time.perf_counter() - start


def time_loop(problem: Problem, per_step: bool, budget: float = 1.0) -> Measurement:
    one_round, compile_s = loop_round(problem, per_step)
    return _time_rounds(one_round, problem.params0, budget, compile_s)


def numpy_gradient(theta, P, r, rho, gamma):
    """The exact policy gradient as a numpy user writes it (float64, two solves)."""
    z = np.exp(theta - theta.max(axis=1, keepdims=True))
    pi = z / z.sum(axis=1, keepdims=True)
    M = np.eye(P.shape[0]) - gamma * np.einsum("sa,sat->st", pi, P)
    V = np.linalg.solve(M, np.sum(pi * r, axis=1))
    Q = r + gamma * P @ V
    d = np.linalg.solve(M.T, rho)
    return d[:, None] * pi * (Q - V[:, None])


def numpy_round(instance):
    """One FedAvg round of exact gradients in plain numpy: round(params, t) -> params."""
    P = instance.P.astype(np.float64)
    r = instance.shaped_reward().astype(np.float64)
    rho, p, gamma = instance.rho.astype(np.float64), instance.p.astype(np.float64), instance.gamma

    def one_round(theta, t):
        held = []
        for k in range(instance.num_clients):
            th = theta.copy()
            for _ in range(LOCAL_STEPS):
                th = th + STEP_SIZE * numpy_gradient(th, P[k], r[k], rho, gamma)
            held.append(th)
        return np.tensordot(p, np.stack(held), axes=1)

    return one_round


def time_numpy(instance, budget: float = 1.0) -> Measurement:
    return _time_rounds(numpy_round(instance), instance.theta0.astype(np.float64), budget, 0.0)


def _time_rounds(one_round, params0, budget: float, compile_s: float) -> Measurement:
    """Chained rounds from params0 until the budget is spent (at least one); then as many
    rounds from params0 again, REPEATS - 1 times, keeping the fastest."""
    def run(rounds=None):
        params, t, start = params0, 0, time.perf_counter()
        while (t < rounds) if rounds else (t == 0 or time.perf_counter() - start < budget):
            params = one_round(params, t)
            t += 1
        return t, time.perf_counter() - start

    rounds, best = run()
    return Measurement(rounds, min([best] + [run(rounds)[1] for _ in range(REPEATS - 1)]),
                       compile_s)


def time_grid(instance, num_lams: int, num_seeds: int, rounds: int,
              seeded_init: bool = False) -> Measurement:
    """W1 over a lambda x seed grid as one compiled program (nested vmaps, fedsim.engine.grid);
    num_lams = num_seeds = 1 is a single cell through the same code.

    A seed is a run key, as in `fedsim run tabular`. Exact gradients with every client taking
    part use no randomness, so nothing depends on the key, and vmap batches only the lambda
    axis: the seeds cost nothing. seeded_init draws each seed's initial policy (theta0 plus
    standard normal logits), which makes every cell distinct work."""
    task, fed = make_task(instance, WORKLOADS["W1"]), Federation("fedavg", LOCAL_STEPS)
    data, weights = client_data(instance), jnp.asarray(instance.p)
    lams = jnp.broadcast_to(jnp.linspace(0.0, 2.0, num_lams)[:, None],
                            (num_lams, instance.num_clients))
    keys = jax.vmap(jax.random.key)(jnp.arange(num_seeds, dtype=jnp.uint32))
    lrs = jnp.full((rounds, LOCAL_STEPS), STEP_SIZE, jnp.float32)
    theta0 = jnp.asarray(instance.theta0)

    def one(lam, key, data, weights):
        cell_data = {**data, "lam": lam}
        start = theta0 + jax.random.normal(key, theta0.shape) if seeded_init else theta0
        state = init_state(task, fed, start, cell_data, key)
        return make_checkpointed_run(task, fed)(state, cell_data, weights, key, lrs,
                                                jnp.asarray([rounds], jnp.int32))[1]["J"]

    # Arguments, not closed-over constants: XLA would constant-fold work on the client data.
    args = dict(lam=lams, key=keys, data=data, weights=weights)
    grid = jax.jit(grid_vmap(one, ("lam", "seed"), {"lam": ["lam"], "key": ["seed"]}))
    start = time.perf_counter()
    compiled = grid.lower(**args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(**args))

    def timed():
        start = time.perf_counter()
        jax.block_until_ready(compiled(**args))
        return time.perf_counter() - start

    return Measurement(rounds, min(timed() for _ in range(REPEATS)), compile_s)
