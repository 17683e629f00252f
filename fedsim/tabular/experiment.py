"""One tabular experiment end to end: validate, draw the instance, compile, run, write results.

Writes to the output folder (which it owns for the run's life: fedsim.rundir):
    config.json      the full configuration and a run id, before any work
    provenance.json  versions, git commit, devices, command line, start and end times
    instance.npz     every array needed to re-run the experiment independently (first)
    metrics.csv      one row per logged round and seed: seed, round, J, J_star, gap, J0,
                     J_personal, step_size (appended at each save: at most once a
                     second, and at the end)
    clients.csv      per client: seed, round, client, J_client, J_personal_client (and, with
                     fedkl, kl_to_reference)
    state.npz        the state after the last saved chunk: a killed run resumes from it
                     (not with several processes, which start again from round 1)
    summary.json     J* and how it was obtained, final gaps, compile and run seconds (last)
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import SingleDeviceSharding

from fedsim.checkpoint import load_state, save_state
from fedsim.engine import HParams, make_trainer, raise_if_nonfinite
from fedsim.engine.round import round_draws
from fedsim.engine.sharding import client_mesh, to_host
from fedsim.interrupt import requested, stop_if_requested
from fedsim.memory import FLOAT
from fedsim.privacy.canaries import canary_weights, with_canary_rows
from fedsim.privacy.settings import epsilon_by_round
from fedsim.provenance import SIMULATOR, code_fingerprint
from fedsim.results import append_csv, concat_tables, read_csv_rows, write_json, write_npz
from fedsim.rundir import RunFolder
from fedsim.tabular import oracles
from fedsim.tabular.mdp import TabularInstance, client_data, make_instance
from fedsim.tabular.task import client_hparams, make_task, regularizer
from fedsim.tabular.config import LearnerSpec, TabularRunConfig


def mei_step_size(instance: TabularInstance, learner: LearnerSpec) -> float:
    """1/L for the softmax return, L = (8 span + tau (4 + 8 log A)) / (1 - gamma)^3.

    Mei et al. (2020), Lemma 7 and Lemma 14 state L for rewards in [0, 1]; the return is
    invariant to shifting r and scales with it, so the reward span replaces 1.
    """
    r = instance.shaped_reward()
    span = max(float(r.max() - r.min()), 1e-12)
    A = instance.theta0.shape[1]
    tau = learner.tau if learner.reg != "none" else 0.0
    return (1 - instance.gamma) ** 3 / (8 * span + tau * (4 + 8 * math.log(A)))


# A run is cut into at most MAX_CHUNKS chunks (compiled calls; progress, saving and safe
# stopping happen between them), each of at least MIN_CHUNK_CLIENT_STEPS where the run has
# that many: a chunk's fixed costs (its call, its evaluation program) made 37% of a W1 run of
# K = 100, T = 400 in 50 chunks, 15-22% in 20, and in 7 interleaved pairs of standalone runs
# 10-21% (median 13%) in 10 against 17-26% (median 19%) in 20 (2-core CPU).
MAX_CHUNKS = 50
MIN_CHUNK_CLIENT_STEPS = 20_000


def chunk_count(config: TabularRunConfig) -> int:
    steps = config.client_steps(config.num_rows) * config.num_seeds   # the canaries' too
    return int(min(MAX_CHUNKS, max(1, steps // MIN_CHUNK_CLIENT_STEPS)))


def _chunks(total: int, parts: int) -> list[int]:
    """Chunk lengths (checkpoints per compiled call) for `total` checkpoints in about `parts`
    chunks. At most two distinct lengths (two compilations)."""
    size = max(1, total // parts)
    lengths = [size] * (total // size)
    return lengths + ([total % size] if total % size else [])


def estimate_memory(config: TabularRunConfig) -> list[tuple[str, float, str]]:
    """(what, bytes, options) of the run's largest allocations (fedsim.memory.check_fits)."""
    spec, learner = config.instance, config.learner
    K, S, A, T, E = (spec.num_clients, spec.num_states, spec.num_actions, config.rounds,
                     config.local_steps)
    seeds, block = config.num_seeds, min(config.client_block or K, K)
    logged = (min(T, 2 * config.log_points) if config.log_points
              else T // config.log_every + 1)
    sampled = learner.gradient == "sampled" or learner.learner == "ppo"
    horizon = learner.horizon_for(spec.gamma) if sampled else 0
    chunks = chunk_count(config)
    return [
        # numpy float64 while the instance is drawn, then float32 on the host and the device
        ("the transition tensors P (K x S x A x S)", 16.0 * K * S * A * S, "--clients, --states"),
        ("the clients' parameters and updates (seeds x K x S x A, a few copies)",
         6.0 * FLOAT * seeds * K * S * A, "--num-seeds, --clients, --states, --actions"),
        ("the local steps' working memory (seeds x client block x S x S x A)",
         4.0 * FLOAT * seeds * block * S * S * A, "--num-seeds, --clients (or --client-block)"),
        ("sampled trajectories (seeds x client block x B x horizon)",
         8.0 * FLOAT * seeds * block * learner.batch * horizon,
         "--batch, --horizon, --num-seeds, --clients (or --client-block)"),
        ("the step sizes (T x E)", 12.0 * T * E, "--rounds, --local-steps"),
        ("the logged per-client metrics (seeds x logged rounds x K)",
         3.0 * FLOAT * seeds * logged * K,
         "--rounds, --log-every (or --log-points), --clients, --num-seeds"),
        ("the rows of one chunk of clients.csv", 400.0 * seeds * K * max(1, logged // chunks),
         "--clients, --num-seeds, --rounds, --log-every (or --log-points)"),
    ]


# How often a run saves (its CSV rows and state, each fsynced), and always at its end and
# before stopping: states up to SAVE_STATE_BYTES at most every SAVE_SMALL_EVERY_S (saving
# after each of a 1.5 s run's 50 chunks was 10% of it), larger ones every SAVE_EVERY_S.
SAVE_STATE_BYTES = 64 << 20
SAVE_SMALL_EVERY_S = 1.0
SAVE_EVERY_S = 30.0


def run_tabular(config: TabularRunConfig, out: Path | None = None, progress: bool = True) -> dict:
    """Run `config` (seeds vmapped); with `out`, the results folder is written as the run goes
    and a run killed or interrupted there resumes from its last saved chunk; return them."""
    config.validate()
    if jax.process_index() != 0:   # with several processes (jax.distributed), one writes
        out = None
    if out is None:
        return _run(config, None, progress)
    with RunFolder(out, {"task": "tabular", **dataclasses.asdict(config)}) as folder:
        return _run(config, folder.path, progress)


def _run(config: TabularRunConfig, out: Path | None, progress: bool) -> dict:
    instance = make_instance(config.instance)
    learner = config.learner
    mei = mei_step_size(instance, learner)
    lrs = config.step_sizes(mei)
    task = make_task(instance, learner)
    fed = config.federation()
    # epsilon after each logged round, up front
    epsilon = epsilon_by_round(fed, config.num_rows, config.logged_rounds())
    reg = regularizer(learner, instance)
    optimum = oracles.optimal_value(instance, reg)
    if out is not None:   # known before the run: written first
        write_npz(out / "instance.npz", instance_arrays(config, instance, lrs, reg))

    canaries = config.privacy.canaries
    data = with_canary_rows(client_data(instance), canaries)
    weights = canary_weights(jnp.asarray(instance.p), canaries)
    hparams = HParams(with_canary_rows(client_hparams(instance), canaries),
                      fed.algorithm_hparams(config.num_rows))
    seeds = config.seed + np.arange(config.num_seeds)
    run_keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
    theta0 = jnp.asarray(instance.theta0)
    # With several devices the engine splits the clients over them (padding with weight 0).
    mesh = client_mesh(config.devices) if config.devices > 1 else None
    trainer = make_trainer(task, fed.algorithm_parts(task, config.num_rows), fed, mesh)
    states = jax.jit(jax.vmap(lambda key: trainer.init(theta0, data, key)))(run_keys)
    saver = None if out is None else _Progress(out, states, metric_columns(config),
                                               client_columns(config),
                                               keep_state=jax.process_count() == 1)
    first_chunk, states = saver.restore(states) if saver else (0, states)
    chunks = _ChunkCalls(trainer, config, mesh, states, (data, weights, hparams),
                         (run_keys, jnp.asarray(lrs)), first_chunk)
    done = chunks.rounds_before(first_chunk)
    compile_s = chunks.compile(states, lambda: stop_if_requested(
        f"stopped while compiling, with {done} of {config.rounds} rounds saved"
        + (f" in {out}; run the same command to resume" if out else "")))
    run_s = saver.run_seconds if saver else 0.0
    final_J = saver.final_J if saver else None
    num_clients = instance.num_clients
    all_rows = read_csv_rows(out / "metrics.csv") if first_chunk else []

    # Chunk i + 1 is queued behind chunk i, so the device runs it while the host writes chunk
    # i's rows and files. This attempt's seconds: the host waiting for the device (its rounds
    # and evaluations, and their transfer), the host's own work, and the part of that work
    # the device did not hide (at most: the last chunk's, and each chunk's after which the next
    # was already done).
    timing = {"waiting": 0.0, "host": 0.0, "host_unhidden": 0.0}
    with _progress_bar(config.rounds, done, progress) as bar:
        clock = loop_start = time.perf_counter()
        pending = chunks.launch(first_chunk, states) if first_chunk < len(chunks) else None
        try:
            for i in range(first_chunk, len(chunks)):
                stops, states, nonfinite, metrics = pending
                last = i + 1 == len(chunks)
                write = saver is not None and saver.due(last)
                # the state to save, copied before the next chunk consumes its buffers
                keep = None
                if write and saver.keep_state:
                    keep = states if last else jax.tree.map(jnp.copy, states)
                if not last:
                    pending = chunks.launch(i + 1, states)
                nonfinite, metrics, keep = to_host((nonfinite, metrics, keep))
                raise_if_nonfinite(nonfinite)   # at the end of the chunk, naming the round
                ready = time.perf_counter()
                timing["waiting"] += ready - clock
                final_J = metrics.round["J"][:, -1]
                bar.update(int(stops[-1]) - done)
                done = int(stops[-1])
                rows, client_rows = _chunk_rows(metrics, stops, seeds, lrs, optimum,
                                                num_clients, epsilon)
                all_rows += rows
                if saver:
                    saver.save(i + 1, keep, rows, client_rows,
                               run_s + time.perf_counter() - loop_start, final_J, write)
                    if write and (last or requested()):
                        saver.wait()   # on disk before the run ends or stops
                clock = time.perf_counter()
                timing["host"] += clock - ready
                if last or all(x.is_ready() for x in jax.tree.leaves(pending[1:])):
                    timing["host_unhidden"] += clock - ready
                if write:
                    stop_if_requested(f"stopped after round {done} of {config.rounds}; saved "
                                      f"in {out}; run the same command to resume")
        finally:
            if saver:
                saver.close()
    run_s += timing["waiting"] + timing["host"]

    client_steps = config.client_steps(num_clients)   # the real clients'
    summary = {
        "J_star": optimum.J_star, "J_star_tolerance": optimum.tolerance,
        "J_star_upper_bound": optimum.upper_bound, "J_star_method": optimum.method,
        "final_gap": {int(s): optimum.J_star - float(final_J[i]) for i, s in enumerate(seeds)},
        "mei_step_size": mei, "horizon": learner.horizon_for(instance.gamma),
        "compile_seconds": compile_s, "run_seconds": run_s,
        "client_steps_per_second": client_steps * len(seeds) / max(run_s, 1e-12),
        "timing_this_attempt": {f"{k}_seconds": v for k, v in timing.items()} | {
            "host_unhidden_fraction": timing["host_unhidden"]
            / max(timing["waiting"] + timing["host"], 1e-12)},
    }
    if fed.dp is not None:
        summary.update(privacy_summary(fed, config, epsilon[int(chunks.checkpoints[-1])],
                                       states, run_keys, theta0, seeds))
    if out is not None:
        write_json(out / "summary.json", summary)
    return {"rows": all_rows, "summary": summary, "instance": instance, "step_sizes": lrs}


# the seed axis of trainer.run's (and .train's) arguments, and of trainer.evaluate's
RUN_AXES = (0, None, None, None, 0, None, None, None)
EVALUATE_AXES = (0, None, None, None, None)
# The most bytes of states a chunk may keep for its evaluation in a program of its own
SNAPSHOT_BYTES = 256 << 20


class _ChunkCalls:
    """A run's logged rounds cut into chunks (chunk_count), each a compiled call dispatched
    without waiting. Evaluated only at logged rounds: memory is O(K state + logged rounds),
    not O(T K). Where a chunk's states fit SNAPSHOT_BYTES, the rounds and their evaluation are
    two programs (Trainer.train, Trainer.evaluate): all of a chunk's checkpoints are evaluated
    in one batch while the device goes on to the next chunk's rounds, on a device the rounds
    do not use if there is one (on a CPU, `--devices` makes them)."""

    def __init__(self, trainer, config: TabularRunConfig, mesh, states, inputs, seeded,
                 first_chunk: int):
        """inputs: (data, weights, hparams), the evaluation's too; seeded: (run keys, step
        sizes); states: the state the run starts (or resumes) from, at chunk first_chunk."""
        self.checkpoints = config.logged_rounds()
        self.groups = _chunks(len(self.checkpoints), chunk_count(config))   # checkpoints a call
        self.first_chunk, self.inputs, self.seeded = first_chunk, inputs, seeded
        self.split = _bytes(states) * max(self.groups[first_chunk:], default=1) <= SNAPSHOT_BYTES
        self.run = _over_seeds(trainer.train if self.split else trainer.run, config.num_seeds,
                               RUN_AXES)
        self.evaluate = _over_seeds(trainer.evaluate, config.num_seeds, EVALUATE_AXES)
        self.spare = (_spare_device(mesh) if self.split and _bytes(inputs[0]) <= SNAPSHOT_BYTES
                      else None)
        self.eval_inputs = self.on_spare(inputs)
        self.rounds, self.evaluations = {}, {}   # compiled, by the chunk's checkpoint count

    def __len__(self) -> int:
        return len(self.groups)

    def on_spare(self, tree):
        return tree if self.spare is None else jax.device_put(tree,
                                                              SingleDeviceSharding(self.spare))

    def rounds_before(self, i: int) -> int:
        """The rounds trained before chunk i (i = len(self): all of them)."""
        logged = sum(self.groups[:i])
        return int(self.checkpoints[logged - 1]) if logged else 0

    def compile(self, states, after_each=lambda: None) -> float:
        """Compile the calls of the chunks still to run (one per distinct length), calling
        after_each() after each; return the seconds it took."""
        seconds = 0.0
        for n in sorted(set(self.groups[self.first_chunk:])):
            start = time.perf_counter()
            stops = jnp.asarray(self.checkpoints[:n])
            self.rounds[n] = jax.jit(self.run, donate_argnums=0).lower(
                states, *self.inputs, *self.seeded, stops, jnp.int32(0)).compile()
            if self.split:   # the snapshots' shapes, from the rounds' program
                snapshots = self.rounds[n].out_info[1]
                if self.spare is not None:
                    snapshots = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
                        x.shape, x.dtype, sharding=SingleDeviceSharding(self.spare)), snapshots)
                self.evaluations[n] = jax.jit(self.evaluate).lower(
                    snapshots, *self.eval_inputs, self.on_spare(stops)).compile()
            seconds += time.perf_counter() - start
            after_each()
        return seconds

    def launch(self, i: int, states):
        """Chunk i's calls, dispatched without waiting for them (the state is donated):
        (its checkpoints, the state after it, the first non-finite round, its metrics)."""
        n, logged = self.groups[i], sum(self.groups[:i])
        stops = self.checkpoints[logged:logged + n]
        states, out = self.rounds[n](states, *self.inputs, *self.seeded, jnp.asarray(stops),
                                     jnp.int32(self.rounds_before(i)))
        if self.split:
            return (stops, states) + self.evaluations[n](self.on_spare(out), *self.eval_inputs,
                                                        self.on_spare(jnp.asarray(stops)))
        # a copy: the next chunk consumes the state's buffers
        return stops, states, jnp.copy(states.nonfinite_round), out


def _over_seeds(fn, num_seeds: int, in_axes):
    """fn over a leading seed axis of the arguments whose in_axes is 0. One seed is run without
    the vmap, its axis added back: a size-1 vmap made XLA's CPU program 1.5x slower (W1, K =
    100: 1.1e5 against 1.7e5 client-steps/s)."""
    if num_seeds > 1:
        return jax.vmap(fn, in_axes=in_axes)

    def one_seed(*args):
        args = [jax.tree.map(lambda x: x[0], a) if axis == 0 else a
                for a, axis in zip(args, in_axes)]
        return jax.tree.map(lambda x: x[None], fn(*args))

    return one_seed


def _spare_device(mesh):
    """A local device the rounds do not run on (one process only), or None."""
    if jax.process_count() > 1:
        return None
    used = set(mesh.devices.flat) if mesh is not None else {jax.local_devices()[0]}
    return next((d for d in jax.local_devices() if d not in used), None)


def _bytes(tree) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(tree))


def _chunk_rows(metrics, stops, seeds, lrs, optimum, num_clients, epsilon=None):
    """Rows of metrics.csv (dicts) and clients.csv (columns) for one chunk, ordered by
    round, then seed."""
    rows = []
    for j, stop in enumerate(stops):
        t = int(stop) - 1
        for i, seed in enumerate(seeds):
            J = float(metrics.round["J"][i, j])
            rows.append({"seed": int(seed), "round": t + 1, "J": metrics.round["J"][i, j],
                         "J_star": optimum.J_star, "gap": optimum.J_star - J,
                         "J0": metrics.round["J0"][i, j],
                         "J_personal": metrics.round["J_personal"][i, j],
                         "step_size": lrs[t, 0]})
            if epsilon is not None:
                rows[-1]["epsilon"] = epsilon[t + 1]
    # clients.csv as columns, ordered by round, then seed, then client: metrics.clients'
    # values are (seeds, rounds, K)
    rounds, seeds_, K = len(stops), len(seeds), num_clients
    client_rows = {
        "seed": np.tile(np.repeat(np.asarray(seeds), K), rounds),
        "round": np.repeat(np.asarray(stops, np.int64), seeds_ * K),
        "client": np.tile(np.arange(K), rounds * seeds_),
        **{name: np.swapaxes(np.asarray(values), 0, 1).reshape(-1)
           for name, values in metrics.clients.items()}}
    return rows, client_rows


METRICS_COLUMNS = ["seed", "round", "J", "J_star", "gap", "J0", "J_personal", "step_size"]
CLIENT_COLUMNS = ["seed", "round", "client", "J_client", "J_personal_client"]


def metric_columns(config: TabularRunConfig) -> list[str]:
    """metrics.csv's columns: DP-FedAvg adds the accountant's epsilon after the round."""
    return METRICS_COLUMNS + (["epsilon"] if config.privacy.dp_enabled else [])


def privacy_summary(fed, config: TabularRunConfig, epsilon: float, states, run_keys, theta0,
                    seeds) -> dict:
    """summary.json's privacy part: the accountant's epsilon and its inputs, the final
    clipping norm, and with canaries the one-run audit's lower bound per seed."""
    from fedsim.privacy.audit import one_run_audit
    from fedsim.privacy.canaries import canary_included, canary_scores
    from fedsim.privacy.settings import privacy_record

    record = privacy_record(fed, config.num_rows, config.rounds)
    record["final_clip"] = {int(s): float(c) for s, c in zip(
        seeds, np.asarray(states.aggregator_state.clip))}
    out = {"epsilon": epsilon, "privacy": record}
    n = fed.canaries
    if n:
        scores = np.asarray(jax.vmap(lambda k, p: canary_scores(k, n, theta0, p))(
            run_keys, states.params))
        included = np.asarray(jax.vmap(lambda k: canary_included(k, n))(run_keys))
        audits = {int(s): one_run_audit(scores[i], included[i], fed.dp.delta)._asdict()
                  for i, s in enumerate(seeds)}
        out["audit"] = {"canaries": n, "method": "one-run (Steinke, Nasr, Jagielski 2023), "
                        "canary clients (Andrew et al. 2024)", "per_seed": audits,
                        "epsilon_lower": max(a["epsilon_lower"] for a in audits.values())}
    return out


def client_columns(config: TabularRunConfig) -> list[str]:
    """clients.csv's columns: fedkl adds each client's exact KL to its next reference."""
    return CLIENT_COLUMNS + (["kl_to_reference"] if config.algorithm == "fedkl" else [])


class _Progress:
    """metrics.csv and clients.csv appended at each save (SAVE_SMALL_EVERY_S), and
    `state.npz`: the state after the last saved chunk with the CSV lengths it vouches for. A
    resumed run continues from that state and cuts the CSVs back to those lengths, so it ends
    with the same bytes. The files are written by a thread, one save at a time and in order,
    while the run goes on: a save is three fsyncs (about 0.1 s here, three chunks of a small
    run)."""

    def __init__(self, out: Path, like, metric_columns, columns, keep_state: bool = True):
        self.out, self.path, self.keep_state = out, out / "state.npz", keep_state
        self.metric_columns, self.columns = metric_columns, columns
        self.code = code_fingerprint(SIMULATOR)
        self.every_s = (SAVE_EVERY_S if _bytes(like)
                        > SAVE_STATE_BYTES else SAVE_SMALL_EVERY_S)
        self.lengths, self.run_seconds, self.final_J = [0, 0], 0.0, None
        self.pending, self.last_save = [[], []], time.perf_counter()
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedsim-save")
        self.writing = None   # the save in flight

    def restore(self, like):
        if not (self.keep_state and self.path.exists()):
            return 0, like
        state, meta = load_state(self.path, like)
        why = meta if state is None else (
            "was computed by other code" if meta.get("code") != self.code else None)
        if why:
            print(f"fedsim: note: {self.path} {why}; starting the run again from round 1",
                  file=sys.stderr)
            return 0, like
        self.lengths, self.run_seconds = meta["lengths"], meta["run_seconds"]
        self.final_J = np.asarray(meta["final_J"])
        return meta["chunks_done"], state

    def due(self, last: bool) -> bool:
        """Whether this chunk's save writes: at the end, when asked to stop, and at most once
        every `every_s` otherwise."""
        return last or requested() or time.perf_counter() - self.last_save >= self.every_s

    def save(self, chunks_done, state, rows, client_rows, run_seconds, final_J, write: bool):
        """Queue the chunk's rows; with `write`, start writing the queued rows and `state`
        (on the host; None: rows only) once the save before has finished."""
        self.pending[0] += rows
        self.pending[1].append(client_rows)
        if not write:
            return
        rows, tables = self.pending
        self.pending, self.last_save = [[], []], time.perf_counter()
        self.wait()
        self.writing = self.writer.submit(self._write, chunks_done, state, rows, tables,
                                          run_seconds, final_J)

    def wait(self):
        """Until the save in flight is on disk (its error, if any, raised here)."""
        writing, self.writing = self.writing, None
        if writing is not None:
            writing.result()

    def close(self):
        self.wait()
        self.writer.shutdown()

    def _write(self, chunks_done, state, rows, tables, run_seconds, final_J):
        self.lengths = [append_csv(self.out / "metrics.csv", self.metric_columns, rows,
                                   self.lengths[0]),
                        append_csv(self.out / "clients.csv", self.columns,
                                   concat_tables(tables), self.lengths[1])]
        if state is None:   # several processes: rows only (see the module docstring)
            return
        save_state(self.path, state, {
            "chunks_done": chunks_done, "lengths": self.lengths, "run_seconds": run_seconds,
            "final_J": np.asarray(final_J).tolist(), "code": self.code})


def instance_arrays(config: TabularRunConfig, instance: TabularInstance, lrs, reg) -> dict:
    """Everything an independent implementation needs (random draws: see fedsim.engine.keys)."""
    learner = config.learner
    return {
        **{name: getattr(instance, name) for name in
           ("P", "R0", "H", "lam", "p", "n_samples", "rho", "theta0")},
        "gamma": instance.gamma, "reward_form": instance.reward_form, "step_sizes": lrs,
        "local_steps": config.local_steps, "rounds": config.rounds, "algorithm": config.algorithm,
        "participants": config.participants or instance.num_clients,
        "learner": learner.learner, "gradient": learner.gradient, "batch": learner.batch,
        "horizon": learner.horizon_for(instance.gamma), "estimator": learner.estimator,
        "reg": learner.reg, "tau": float(reg.tau),
        "log_ref": np.broadcast_to(np.asarray(reg.log_ref, np.float32), instance.theta0.shape),
        "server_optimizer": config.server_optimizer, "server_lr": config.server_lr,
        "mu": config.mu,
        **({"kl_coef": config.kl_coef, "mixing": config.mixing,
            "peer_weighting": config.peer_weighting,
            "return_temperature": config.return_temperature,
            "peer_weights": config.federation().mixing_matrix(instance.num_clients)}
           if config.algorithm == "fedkl" else {}),
        "aggregator": config.aggregator, "trim": config.trim, "dropout": config.dropout,
        "byzantine": config.byzantine_mask(), "attack": config.attack,
        "attack_scale": config.attack_scale,
        **({"arrived": arrived_masks(config)} if config.dropout > 0 else {}),
        **({"steps_done": realised_steps(config)} if config.stragglers > 0 else {}),
        "seeds": config.seed + np.arange(config.num_seeds),
    }


def _per_round(config: TabularRunConfig, field: str, fill) -> np.ndarray:
    """(seeds, T, K): the round's draws (fedsim.engine.round.round_draws) of `field` for its
    participants, `fill` elsewhere."""
    fed, K = config.federation(), config.num_rows

    def one(run_key, t):
        draws = round_draws(fed, run_key, t, K)
        return jnp.full(K, fill).at[draws.participants].set(getattr(draws, field))

    keys = jax.vmap(jax.random.key)(jnp.asarray(config.seed + np.arange(config.num_seeds), jnp.uint32))
    rounds = jnp.arange(config.rounds)
    return np.asarray(jax.vmap(lambda k: jax.vmap(lambda t: one(k, t))(rounds))(keys))


def arrived_masks(config: TabularRunConfig) -> np.ndarray:
    """(seeds, T, K) bool: whether client k's delta reached the server in round t (sampled
    and not dropped out): the realised participation, for an independent replay."""
    return _per_round(config, "arrived", 0.0) > 0


def realised_steps(config: TabularRunConfig) -> np.ndarray:
    """(seeds, T, K) int: the local steps client k completed in round t (0: not sampled)."""
    return _per_round(config, "steps", 0)


def _progress_bar(total: int, done: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="round", desc="rounds", disable=not enabled,
                leave=False)
