"""One tabular experiment end to end: validate, draw the instance, compile, run, write results.

Writes to the output folder:
    config.json    the full configuration (a folder never mixes two configs)
    metrics.csv    one row per seed and logged round: seed, round, J, J_star, gap, J0,
                   J_personal, step_size
    clients.csv    per client: seed, round, client, J_client, J_personal_client
    instance.npz   every array needed to re-run the experiment independently
    summary.json   J* and how it was obtained, final gaps, compile and run seconds
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedsim.engine import (Federation, init_state, log_checkpoints, make_checkpointed_run,
                           raise_if_nonfinite, step_sizes)
from fedsim.engine.sharding import client_mesh, pad_clients, padded_size, shard_clients, to_host
from fedsim.errors import check_choice, check_int, check_real, require
from fedsim.results import prepare_out_dir, write_csv, write_json, write_npz
from fedsim.tabular import oracles
from fedsim.tabular.mdp import InstanceSpec, TabularInstance, client_data, make_instance
from fedsim.tabular.task import LearnerSpec, make_task, regularizer

SERVER_OPTIMIZERS = ("none", "sgd", "momentum", "adam")


@dataclass(frozen=True)
class TabularRunConfig:
    """A tabular FedRLHF run. lr = "mei" picks Mei et al.'s provably safe constant step."""

    instance: InstanceSpec = field(default_factory=InstanceSpec)
    learner: LearnerSpec = field(default_factory=LearnerSpec)
    algorithm: str = "fedavg"
    rounds: int = 100
    local_steps: int = 5
    participants: int | None = None
    schedule: str = "constant"
    lr: float | str = 1.0
    beta: float = 1.0
    gamma0: float = 10.0
    server_optimizer: str = "none"
    server_lr: float = 1.0
    seed: int = 0
    num_seeds: int = 1
    log_every: int = 1
    log_points: int | None = None
    devices: int = 1
    client_block: int | None = None

    def validate(self) -> "TabularRunConfig":
        self.instance.validate()
        self.learner.validate()
        self.federation().validate(self.instance.num_clients)
        check_int("rounds (T)", self.rounds, 1)
        check_choice("server_opt", self.server_optimizer, SERVER_OPTIMIZERS)
        check_real("server_lr", self.server_lr, 0.0, lo_open=True)
        check_int("seed", self.seed, 0)
        check_int("num_seeds", self.num_seeds, 1)
        check_int("log_every", self.log_every, 1)
        if self.log_points is not None:
            check_int("log_points", self.log_points, 1)
        available = len(jax.devices())
        require(isinstance(self.devices, int) and 1 <= self.devices <= available, "devices",
                self.devices, f"must be an integer in [1, {available}], the devices JAX sees "
                "(on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N)")
        if padded_size(self.instance.num_clients, self.devices) != self.instance.num_clients:
            require(self.participants is None, "participants", self.participants,
                    f"must be none (all clients) when K = {self.instance.num_clients} is not a "
                    f"multiple of --devices {self.devices}: padded clients would be sampled")
        require(self.lr == "mei" or isinstance(self.lr, (int, float)), "lr", self.lr,
                'must be a positive number or "mei"')
        self.step_sizes(1.0)  # validates the schedule's numbers
        return self

    def federation(self) -> Federation:
        opt = {"none": None, "sgd": optax.sgd, "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
               "adam": optax.adam}.get(self.server_optimizer)
        return Federation(self.algorithm, self.local_steps, self.participants,
                          opt(self.server_lr) if opt else None, self.client_block)

    def logged_rounds(self) -> np.ndarray:
        """Round counts (1-based) evaluated and written: about log_points log-spaced ones if
        set, else every log_every-th; always the last."""
        if self.log_points is not None:
            return log_checkpoints(self.rounds, self.log_points)
        every = np.arange(self.log_every, self.rounds + 1, self.log_every)
        return np.unique(np.append(every, self.rounds)).astype(np.int32)

    def step_sizes(self, mei_step: float) -> np.ndarray:
        lr = mei_step if self.lr == "mei" else self.lr
        return step_sizes(self.schedule, self.rounds, self.local_steps, lr=lr, beta=self.beta,
                          gamma0=self.gamma0)


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


def _chunks(total: int, parts: int = 50) -> list[int]:
    """Chunk lengths for progress reporting: at most two distinct lengths (two compilations)."""
    size = max(1, total // parts)
    lengths = [size] * (total // size)
    return lengths + ([total % size] if total % size else [])


def run_tabular(config: TabularRunConfig, out: Path | None = None, progress: bool = True) -> dict:
    """Run `config` (seeds vmapped), write the results folder if `out` is given; return them."""
    config.validate()
    config_dict = dataclasses.asdict(config)
    if jax.process_index() != 0:   # with several processes (jax.distributed), one writes
        out = None
    if out is not None:
        out = prepare_out_dir(Path(out), config_dict)

    instance = make_instance(config.instance)
    learner = config.learner
    mei = mei_step_size(instance, learner)
    lrs = config.step_sizes(mei)
    task = make_task(instance, learner)
    fed = config.federation()
    reg = regularizer(learner, instance)
    optimum = oracles.optimal_value(instance, reg)

    data, weights = client_data(instance), jnp.asarray(instance.p)
    seeds = config.seed + np.arange(config.num_seeds)
    run_keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
    theta0 = jnp.asarray(instance.theta0)
    if config.devices > 1:   # clients split over devices; padded clients have weight 0
        mesh = client_mesh(config.devices)
        data, weights = shard_clients(pad_clients(data, weights, config.devices), mesh)
    states = jax.vmap(lambda key: init_state(task, fed, theta0, data, key))(run_keys)
    if config.devices > 1:
        states = states._replace(client_params=shard_clients(states.client_params, mesh, 1),
                                 private=shard_clients(states.private, mesh, 1))
    # Evaluated only at logged rounds: memory is O(K state + logged rounds), not O(T K).
    run = jax.vmap(make_checkpointed_run(task, fed), in_axes=(0, None, None, 0, None, None, None))
    checkpoints, lrs_device = config.logged_rounds(), jnp.asarray(lrs)
    groups = _chunks(len(checkpoints))   # checkpoints per call, for the progress bar
    compiled, compile_s = {}, 0.0
    for n in sorted(set(groups)):
        start = time.perf_counter()
        compiled[n] = jax.jit(run, donate_argnums=0).lower(
            states, data, weights, run_keys, lrs_device, jnp.asarray(checkpoints[:n]),
            jnp.int32(0)).compile()
        compile_s += time.perf_counter() - start

    chunks, done = [], 0
    bar = _progress_bar(config.rounds, progress)
    start = time.perf_counter()
    for i, n in enumerate(np.cumsum([0] + groups[:-1])):
        stops = checkpoints[n:n + groups[i]]
        states, metrics = compiled[groups[i]](states, data, weights, run_keys, lrs_device,
                                              jnp.asarray(stops), jnp.int32(done))
        raise_if_nonfinite(to_host(states.nonfinite_round))  # at the end of the chunk
        chunks.append(to_host(metrics))
        bar.update(int(stops[-1]) - done)
        done = int(stops[-1])
    bar.close()
    run_s = time.perf_counter() - start
    metrics = {name: np.concatenate([c[name] for c in chunks], axis=1) for name in chunks[0]}
    for name in ("J_client", "J_personal_client"):   # drop padded clients
        metrics[name] = metrics[name][..., :instance.num_clients]

    logged = list(enumerate(int(c) - 1 for c in checkpoints))   # (metrics index, round index)
    rows = [{"seed": int(seed), "round": t + 1, "J": metrics["J"][i, j], "J_star": optimum.J_star,
             "gap": optimum.J_star - float(metrics["J"][i, j]), "J0": metrics["J0"][i, j],
             "J_personal": metrics["J_personal"][i, j], "step_size": lrs[t, 0]}
            for i, seed in enumerate(seeds) for j, t in logged]
    client_rows = [{"seed": int(seed), "round": t + 1, "client": k,
                    "J_client": metrics["J_client"][i, j, k],
                    "J_personal_client": metrics["J_personal_client"][i, j, k]}
                   for i, seed in enumerate(seeds) for j, t in logged
                   for k in range(instance.num_clients)]
    client_steps = config.rounds * config.local_steps * fed.num_participants(instance.num_clients)
    summary = {
        "J_star": optimum.J_star, "J_star_tolerance": optimum.tolerance,
        "J_star_upper_bound": optimum.upper_bound, "J_star_method": optimum.method,
        "final_gap": {int(s): optimum.J_star - float(metrics["J"][i, -1]) for i, s in enumerate(seeds)},
        "mei_step_size": mei, "horizon": learner.horizon_for(instance.gamma),
        "compile_seconds": compile_s, "run_seconds": run_s,
        "client_steps_per_second": client_steps * len(seeds) / run_s,
    }
    if out is not None:
        write_json(out / "config.json", config_dict)
        write_csv(out / "metrics.csv", list(rows[0]), rows)
        write_csv(out / "clients.csv", list(client_rows[0]), client_rows)
        write_npz(out / "instance.npz", instance_arrays(config, instance, lrs, reg))
        write_json(out / "summary.json", summary)
    return {"rows": rows, "summary": summary, "instance": instance, "step_sizes": lrs}


def instance_arrays(config: TabularRunConfig, instance: TabularInstance, lrs, reg) -> dict:
    """Everything an independent implementation needs (random draws: see fedsim.engine.keys)."""
    learner = config.learner
    return {
        **{name: getattr(instance, name) for name in
           ("P", "R0", "H", "lam", "p", "n_samples", "rho", "theta0")},
        "gamma": instance.gamma, "reward_form": instance.reward_form, "step_sizes": lrs,
        "local_steps": config.local_steps, "rounds": config.rounds, "algorithm": config.algorithm,
        "participants": config.participants or instance.num_clients,
        "gradient": learner.gradient, "batch": learner.batch,
        "horizon": learner.horizon_for(instance.gamma), "estimator": learner.estimator,
        "reg": learner.reg, "tau": float(reg.tau),
        "log_ref": np.broadcast_to(np.asarray(reg.log_ref, np.float32), instance.theta0.shape),
        "server_optimizer": config.server_optimizer, "server_lr": config.server_lr,
        "seeds": config.seed + np.arange(config.num_seeds),
    }


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="round", desc="rounds", disable=not enabled, leave=False)
