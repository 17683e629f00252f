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
    sharded     the engine with its clients split over every device JAX sees (`--devices`);
                on a CPU, the cell makes one XLA device per core, each running its shard on
                a thread of its own, in blocks of 1000 / devices above 1000 clients (W1)
    minimal     the same rounds hand-written as one `jax.vmap` over clients inside a
                `lax.fori_loop` over rounds, with no engine around it: what a JAX user writes
                for FedAvg with the task's gradient (W1, W2; its blocks as the engine's)
    drjax       the same round as a DrJAX program (broadcast, map_fn, reduce_weighted_mean)
                in the same loop (W1, W2; optional extra)
    solve       minimal's program with the exact gradient from two `jnp.linalg.solve` calls
                (LAPACK on the CPU) instead of the engine's pivot-free inverse (W1): what a
                JAX user writes; run with a time limit, since batched small solves have hung
                XLA's CPU runtime
    flower      W1 in Flower's simulation engine, numpy clients (fedsim.bench.flower;
                optional extra, K <= 100)
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

from fedsim.engine import (ClientState, Direction, Federation, HParams, Task, make_train,
                           make_trainer)
from fedsim.engine import keys as K_
from fedsim.engine.algorithm import (ascend, client_step, local_steps_of_one_client,
                                     task_objective)
from fedsim.engine.grid import grid_vmap
from fedsim.engine.sharding import client_mesh
from fedsim.tabular.mdp import TabularInstance, client_data, make_instance, shaped_reward
from fedsim.tabular.config import InstanceSpec
from fedsim.movielens import data as movielens_data
from fedsim.movielens import task as movielens_task
from fedsim.movielens.clients import make_clients
from fedsim.tabular.task import TabularHParams, client_hparams, make_task
from fedsim.tabular.config import LearnerSpec

WORKLOADS = {
    "W1": LearnerSpec(gradient="exact"),
    "W2": LearnerSpec(gradient="sampled", batch=16, horizon=20),
}
LOCAL_STEPS = 5
STEP_SIZE = 0.5          # W1, W2 (the engine's plain ascent steps)
NEURAL_STEP_SIZE = 0.01  # W3 (Adam-normalised directions; the MovieLens default)
NEURAL = "W3"
MODES = ("vectorized", "sharded", "minimal", "drjax", "solve", "flower", "loop", "loop_step",
         "numpy")
# The modes that need the optional [bench] extra: mode -> the module they import
OPTIONAL_MODES = {"drjax": "drjax", "flower": "flwr.simulation"}


class Problem(NamedTuple):
    """What a mode needs: the task, initial parameters, client data (leading axis K), weights,
    the task's hyperparameters and the step size."""

    task: Task
    params0: Any
    data: Any
    weights: jax.Array
    hparams: HParams
    step_size: float = STEP_SIZE


def modes_for(workload: str) -> tuple[str, ...]:
    """W1: every mode; W2: the hand-written JAX ones as well (minimal, drjax), not solve,
    flower or numpy (W1's exact gradient); W3: the engine and its loops."""
    if workload == "W1":
        return MODES
    if workload in WORKLOADS:
        return ("vectorized", "minimal", "drjax", "loop", "loop_step")
    return ("vectorized", "loop", "loop_step")


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


def spec_for(num_clients: int) -> InstanceSpec:
    """W1's and W2's instance: S = 20, A = 5, the other settings fedsim's defaults."""
    return InstanceSpec(num_clients=num_clients, num_states=20, num_actions=5)


def instance_for(num_clients: int) -> TabularInstance:
    return make_instance(spec_for(num_clients))


def problem_for(workload: str, num_clients: int) -> Problem:
    if workload != NEURAL:
        instance = instance_for(num_clients)
        return Problem(make_task(instance, WORKLOADS[workload]), jnp.asarray(instance.theta0),
                       client_data(instance), jnp.asarray(instance.p),
                       HParams(client_hparams(instance)))
    ratings = movielens_data.synthetic(num_users=num_clients, num_movies=1000, seed=0)
    clients = make_clients(ratings, movielens_data.split_per_user(ratings),
                           np.arange(num_clients))
    spec = movielens_task.ModelSpec()
    task, net = movielens_task.make_task(ratings.num_movies, ratings.genres, spec)
    params0 = movielens_task.init_params(net, jax.random.key(0), ratings.genres.shape[1], spec.dim)
    counts = clients.train.count
    return Problem(task, params0, jax.tree.map(jnp.asarray, clients),
                   jnp.asarray(counts / counts.sum()),
                   HParams(movielens_task.MovieLensHParams(jnp.full(num_clients, 0.5))),
                   NEURAL_STEP_SIZE)


def env_steps_per_client_step(workload: str) -> int:
    """Transitions simulated per client-step: B H for sampled gradients (those after the
    geometric termination are computed and masked, so they count), none for exact ones."""
    learner = WORKLOADS.get(workload)
    return learner.batch * learner.horizon if learner and learner.gradient == "sampled" else 0


def _rounds_for(seconds_per_round: float, budget: float, cap: int) -> int:
    return int(np.clip(budget / max(seconds_per_round, 1e-9), 1, cap))


def vectorized_rounds(problem: Problem, max_rounds: int = 2000, mesh=None):
    """The engine's long-run path (training rounds, one evaluation at the end), compiled once
    for any number of rounds <= max_rounds, its clients over `mesh`'s devices if given:
    returns (run(rounds) -> global params, compile s)."""
    task, params0, data, weights, hparams, _ = problem
    num_clients = weights.shape[0]
    fed = Federation("fedavg", LOCAL_STEPS, client_block=client_block_for(num_clients))
    key = jax.random.key(0)
    lrs = _step_sizes(problem, max_rounds)
    trainer = make_trainer(task, fed.algorithm_parts(), fed, mesh)
    state = jax.jit(trainer.init)(params0, data, key)
    run = jax.jit(trainer.run, donate_argnums=0)
    start = time.perf_counter()
    compiled = run.lower(state, data, weights, hparams, key, lrs,
                         jnp.ones(1, jnp.int32)).compile()
    compile_s = time.perf_counter() - start

    def rounds(n: int):
        fresh = jax.tree.map(jnp.copy, state)   # donated buffers are consumed by the call
        return compiled(fresh, data, weights, hparams, key, lrs,
                        jnp.asarray([n], jnp.int32))[0].params

    return rounds, compile_s


def sharded_rounds(problem: Problem, max_rounds: int = 2000):
    """vectorized_rounds with the clients split over every device JAX sees."""
    return vectorized_rounds(problem, max_rounds, client_mesh())


def time_vectorized(problem: Problem, budget: float = 1.0, max_rounds: int = 2000,
                    mode: str = "vectorized") -> Measurement:
    """The engine's run, or one of the hand-written ones (ROUNDS_OF_MODE)."""
    return time_rounds_fn(*ROUNDS_OF_MODE[mode](problem, max_rounds), budget, max_rounds)


def _hand_written_client(problem: Problem, lrs):
    """One client's E local steps as a JAX user writes them, with the engine's keys."""
    task = problem.task

    def client(theta, data_k, hparams_k, k, t, key):
        client_key = K_.client_round_key(key, t, k)

        def step(theta, e):
            grad = task.direction(theta, (), (), data_k, hparams_k,
                                  K_.client_step_key(client_key, e)).params
            return theta + lrs[t, e] * grad, None

        return jax.lax.scan(step, theta, jnp.arange(LOCAL_STEPS))[0]

    return client


def _hand_written_rounds(problem: Problem, one_round, max_rounds: int):
    """rounds of `one_round(theta, data, weights, hparams, key, t) -> (theta, held)` in a
    `lax.fori_loop`, then the task's metrics once (as the engine's run computes them).
    Returns (run(rounds) -> params, compile s)."""
    task, params0, data, weights, hparams, _ = problem
    num_clients = weights.shape[0]

    def rounds(theta, data, weights, task_hparams, key, n):
        def body(t, carry):
            return one_round(carry[0], data, weights, task_hparams, key, t)

        start = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_clients,) + x.shape), theta)
        theta, held = jax.lax.fori_loop(0, n, body, (theta, start))
        metrics = task.evaluate(theta, ClientState(held, (), (), (), ()), data, task_hparams,
                                weights)
        return theta, metrics

    key = jax.random.key(0)
    start = time.perf_counter()
    compiled = jax.jit(rounds).lower(params0, data, weights, hparams.task, key,
                                     jnp.int32(1)).compile()
    compile_s = time.perf_counter() - start
    return (lambda n: compiled(params0, data, weights, hparams.task, key, jnp.int32(n))[0],
            compile_s)


def minimal_rounds(problem: Problem, max_rounds: int = 2000):
    """FedAvg hand-written: one vmap over clients (in the engine's blocks) inside a loop over
    rounds; the same keys and gradients as the engine, nothing else."""
    num_clients = problem.weights.shape[0]
    block = client_block_for(num_clients)
    client = _hand_written_client(problem, _step_sizes(problem, max_rounds))

    def one_round(theta, data, weights, task_hparams, key, t):
        local = lambda d, h, k: client(theta, d, h, k, t, key)
        clients = (data, task_hparams, jnp.arange(num_clients))
        held = jax.vmap(local)(*clients) if block is None else jax.lax.map(
            lambda xs: local(*xs), clients, batch_size=block)
        return theta + jnp.tensordot(weights, held - theta, axes=1), held

    return _hand_written_rounds(problem, one_round, max_rounds)


def drjax_rounds(problem: Problem, max_rounds: int = 2000):
    """The same round as a DrJAX program: the server's logits broadcast to the clients'
    placement, the client update mapped over it, the weighted mean reduced back
    (`drjax.program`, `broadcast`, `map_fn`, `reduce_weighted_mean`)."""
    import drjax

    num_clients = problem.weights.shape[0]
    client = _hand_written_client(problem, _step_sizes(problem, max_rounds))

    @drjax.program(placements={"clients": num_clients})
    def one_round(theta, data, weights, task_hparams, key, t):
        held = drjax.map_fn(lambda th, d, h, k: client(th, d, h, k, t, key),
                            (drjax.broadcast(theta), data, task_hparams,
                             jnp.arange(num_clients)))
        return drjax.reduce_weighted_mean(held, weights), held

    return _hand_written_rounds(problem, one_round, max_rounds)


def solve_gradient(theta, P, r, rho, gamma):
    """The exact policy gradient as a JAX user writes it: two `jnp.linalg.solve` calls."""
    pi = jax.nn.softmax(theta, axis=-1)
    M = jnp.eye(P.shape[0], dtype=P.dtype) - gamma * jnp.einsum("sa,sat->st", pi, P)
    V = jnp.linalg.solve(M, jnp.sum(pi * r, axis=-1))
    Q = r + gamma * jnp.einsum("sat,t->sa", P, V)
    d = jnp.linalg.solve(M.T, rho)
    return d[:, None] * pi * (Q - V[:, None])


def solve_problem(num_clients: int) -> Problem:
    """W1 with `solve_gradient` in place of the engine's pivot-free inverse."""
    problem, instance = problem_for("W1", num_clients), instance_for(num_clients)
    rho, gamma = jnp.asarray(instance.rho), instance.gamma

    def direction(theta, personal, private, data, hp, key):
        r = shaped_reward(data.R0, data.H, hp.lam, instance.reward_form)
        return Direction(solve_gradient(theta, data.P, r, rho, gamma))

    return problem._replace(task=problem.task._replace(direction=direction))


def _step_sizes(problem: Problem, max_rounds: int):
    return jnp.full((max_rounds, LOCAL_STEPS), problem.step_size, jnp.float32)


# The modes that compile a whole run: mode -> rounds builder (the solve mode runs minimal's
# program on `solve_problem`)
ROUNDS_OF_MODE = {"vectorized": vectorized_rounds, "sharded": sharded_rounds,
                  "minimal": minimal_rounds,
                  "drjax": drjax_rounds, "solve": minimal_rounds}


def time_rounds_fn(rounds_fn, compile_s: float, budget: float, max_rounds: int) -> Measurement:
    """Time a run(rounds) function: one warm-up round, then the fastest of REPEATS runs of
    as many rounds as fit the budget (at least one)."""
    def timed(rounds):
        start = time.perf_counter()
        jax.block_until_ready(rounds_fn(rounds))
        return time.perf_counter() - start

    timed(1)   # the first call after compilation pays one-time costs
    first = timed(1)
    rounds = _rounds_for(first, budget, max_rounds)
    # a round over half the budget (so one round a repeat) is itself the first of the REPEATS
    times = [first] if rounds == 1 else []
    times += [timed(rounds) for _ in range(REPEATS - len(times))]
    return Measurement(rounds, min(times), compile_s)


def loop_round(problem: Problem, per_step: bool):
    """One FedAvg round as a Python loop over clients calling a jitted client update (E steps)
    or, per_step, a jitted local step: returns (round(params, t) -> params, compile s).
    Each client's private state (reward model, optimiser moments) persists between rounds."""
    task, params0, data, weights, hparams, step_size = problem
    num_clients = weights.shape[0]
    fed = Federation("fedavg", LOCAL_STEPS)
    key = jax.random.key(0)
    clients = jax.jit(make_trainer(task, fed.algorithm_parts(), fed).init)(params0, data, key).clients
    # Each client's rows, cut on the host and placed on the device in one call: slicing the
    # device arrays dispatched once per client and leaf (1.6 s against 0.5 s at K = 2000).
    row = lambda tree, k: jax.tree.map(lambda x: x[k], tree)
    host = jax.device_get((data, hparams.task, clients))
    per_client, states = map(list, zip(*jax.device_put(
        [((row(host[0], k), row(host[1], k)), row(host[2], k)) for k in range(num_clients)])))
    lrs = jnp.full((LOCAL_STEPS,), step_size, jnp.float32)
    # The server's running weighted sum, one client at a time, as a loop framework aggregates
    # (a jitted stack of K arguments compiled anew for every K: 4 s at K = 2000; with the
    # slicing above, most of the 3 minutes a K = 10 000 loop cell took)
    accumulate = jax.jit(lambda total, held, w: jax.tree.map(lambda a, x: a + w * x, total, held))
    client_weights = [np.float32(w) for w in np.asarray(weights)]
    if per_step:
        one_step = client_step(task, task_objective)
        step = jax.jit(lambda p, c, d, h, t, k, e, lr: (lambda u, c, aux: (ascend(p, u, lr), c))(
            *one_step(p, c, d, h, K_.client_step_key(K_.client_round_key(key, t, k), e), (), ())))
        step_lrs = list(lrs)   # indexed once here, not on every call

        def update(params, k, t):
            for e in range(LOCAL_STEPS):
                params, states[k] = step(params, states[k], *per_client[k], t, k, e, step_lrs[e])
            return params
    else:
        local_update = local_steps_of_one_client(task, task_objective, LOCAL_STEPS)
        client = jax.jit(lambda p, c, d, h, t, k: local_update(
            p, c, d, h, K_.client_round_key(key, t, k), lrs, None, (), ())[0])

        def update(params, k, t):
            states[k] = client(params, states[k], *per_client[k], t, k)
            return states[k].params

    def one_round(params, t):
        # Calls dispatch asynchronously; the round ends when the aggregate is ready.
        total = jax.tree.map(jnp.zeros_like, params)
        for k in range(num_clients):
            total = accumulate(total, update(params, k, t), client_weights[k])
        return jax.block_until_ready(total)

    start = time.perf_counter()   # trace and compile once, leaving the clients' state as is
    if per_step:
        jax.block_until_ready(step(params0, states[0], *per_client[0], 0, 0, 0, step_lrs[0]))
    else:
        jax.block_until_ready(client(params0, states[0], *per_client[0], 0, 0))
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
              seeded_init: bool = False, cells_per_block: int | None = None) -> Measurement:
    """W1 over a lambda x seed grid as one compiled program (nested vmaps, fedsim.engine.grid);
    num_lams = num_seeds = 1 is a single cell through the same code.

    A seed is a run key, as in `fedsim run tabular`. Exact gradients with every client taking
    part use no randomness, so nothing depends on the key, and vmap batches only the lambda
    axis: the seeds cost nothing. seeded_init draws each seed's initial policy (theta0 plus
    standard normal logits), which makes every cell distinct work. cells_per_block: the cells
    in blocks (grid_vmap); the clients are in the engine's blocks above CLIENT_BLOCK."""
    task = make_task(instance, WORKLOADS["W1"])
    fed = Federation("fedavg", LOCAL_STEPS, client_block=client_block_for(instance.num_clients))
    train = make_train(task, fed.algorithm_parts(), fed)
    data, weights = client_data(instance), jnp.asarray(instance.p)
    lams = jnp.broadcast_to(jnp.linspace(0.0, 2.0, num_lams)[:, None],
                            (num_lams, instance.num_clients))
    keys = jax.vmap(jax.random.key)(jnp.arange(num_seeds, dtype=jnp.uint32))
    lrs = jnp.full((rounds, LOCAL_STEPS), STEP_SIZE, jnp.float32)
    theta0 = jnp.asarray(instance.theta0)

    def one(lam, key, data, weights):
        start = theta0 + jax.random.normal(key, theta0.shape) if seeded_init else theta0
        return train(start, data, weights, HParams(TabularHParams(lam)), key, lrs,
                     jnp.asarray([rounds], jnp.int32))[1].round["J"]

    # Arguments, not closed-over constants: XLA would constant-fold work on the client data.
    args = dict(lam=lams, key=keys, data=data, weights=weights)
    grid = jax.jit(grid_vmap(one, ("lam", "seed"), {"lam": ["lam"], "key": ["seed"]},
                             cells_per_block))
    start = time.perf_counter()
    compiled = grid.lower(**args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(**args))

    def timed():
        start = time.perf_counter()
        jax.block_until_ready(compiled(**args))
        return time.perf_counter() - start

    return Measurement(rounds, min(timed() for _ in range(REPEATS)), compile_s)


def time_run_path(num_clients: int, rounds: int, log_every: int, repeats: int) -> dict:
    """`fedsim run tabular` on W1 (its results folder written as a user's is) against the same
    run evaluated only after its last round: the compiled training rounds alone. Interleaved,
    the fastest of `repeats` each (the bench's config: 5, more than REPEATS, for a ratio of
    two runs on a noisy machine; 3 with --quick). A run's seconds are its loop's
    (fedsim.tabular.experiment: the host waiting for the device, and its own work on rows,
    files and progress, which mostly overlaps the device's next chunk); the rounds alone are
    the second run's wait; `path` is the host's work the device did not hide (at most),
    `evaluation` the rest of the overhead (the logged rounds' evaluations and the chunks'
    calls); setup is the rest of the call less compilation (the instance, its optimum J*, the
    folder). It points this process's JAX compilation cache at a folder it then deletes: call
    it in a process of its own, as the bench's cells are."""
    import shutil
    import tempfile
    from pathlib import Path

    from fedsim.tabular.config import TabularRunConfig
    from fedsim.tabular.experiment import run_tabular

    def one(every: int) -> dict:
        config = TabularRunConfig(
            instance=spec_for(num_clients), learner=WORKLOADS["W1"], rounds=rounds,
            local_steps=LOCAL_STEPS, lr=STEP_SIZE, log_every=every)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            summary = run_tabular(config, Path(folder) / "run", progress=False)["summary"]
            wall = time.perf_counter() - start
        t = summary["timing_this_attempt"]
        loop = t["waiting_seconds"] + t["host_seconds"]
        return {"seconds": loop, "waiting_s": t["waiting_seconds"],
                "path_s": t["host_unhidden_seconds"], "compile_s": summary["compile_seconds"],
                "setup_s": wall - loop - summary["compile_seconds"]}

    # A compilation cache for this process's repeats: the same two programs are compiled
    # 2 `repeats` times, all but the first two from the cache (timed apart from the runs)
    cache = tempfile.mkdtemp(prefix="fedsim-bench-cache-")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    best, first = {}, {}
    try:
        for _ in range(repeats):
            for name, every in (("run", log_every), ("rounds", rounds)):
                m = one(every)
                first.setdefault(name, m)
                if name not in best or m["seconds"] < best[name]["seconds"]:
                    best[name] = m
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    best["run"] |= {"compile_s": first["run"]["compile_s"]}   # not the cache's
    run, alone = best["run"], best["rounds"]["waiting_s"]
    overhead, path = 1 - alone / run["seconds"], run["path_s"] / run["seconds"]
    return run | {"rounds_alone_s": alone, "overhead": overhead, "path": path,
                  "evaluation": overhead - path}
