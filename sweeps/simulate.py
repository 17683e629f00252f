"""Many tabular runs as one compiled program, with metrics at log checkpoints.

`simulate_grid` runs a product grid, lambda (optional) x instance x seed, as nested vmaps
(fedsim.engine.grid): each instance's arrays are stored once however many seeds and lambda
values use them. `simulate` runs paired lists (run i = instance i, seed i, schedule i).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.engine import Federation, HParams, Task, make_train, raise_if_nonfinite
from fedsim.engine.grid import grid_vmap
from fedsim.tabular.mdp import TabularInstance, client_data
from fedsim.tabular.task import TabularHParams, make_task
from fedsim.tabular.config import LearnerSpec


def _task(instances: list[TabularInstance], learner: LearnerSpec, keep_params: bool) -> Task:
    """The task of instances that share what it closes over (S, A, gamma, rho, theta0, form)."""
    first = instances[0]
    for inst in instances[1:]:
        assert inst.gamma == first.gamma and inst.reward_form == first.reward_form
        assert np.array_equal(inst.rho, first.rho) and np.array_equal(inst.theta0, first.theta0)
    task = make_task(first, learner)
    if not keep_params:
        return task
    def evaluate(params, clients, data, hparams, weights):
        metrics, client_metrics = task.evaluate(params, clients, data, hparams, weights)
        return {**metrics, "theta": params}, client_metrics

    return task._replace(evaluate=evaluate)


def _one_run(task: Task, fed: Federation, theta0, checkpoints):
    train = make_train(task, fed.algorithm_parts(), fed)

    def run(data, weights, key, lrs, lam):
        hparams = HParams(TabularHParams(lam), fed.algorithm_hparams())
        state, metrics = train(theta0, data, weights, hparams, key, lrs,
                               jnp.asarray(checkpoints, jnp.int32))
        return state.nonfinite_round, {**metrics.round, **metrics.clients}

    return run


def _stack(instances):
    data = jax.tree.map(lambda *xs: jnp.stack(xs), *[client_data(inst) for inst in instances])
    lams = jnp.stack([jnp.asarray(inst.lam) for inst in instances])
    return data, jnp.stack([jnp.asarray(inst.p) for inst in instances]), lams


def _finish(nonfinite, metrics) -> dict:
    raise_if_nonfinite(nonfinite)
    return {name: np.asarray(value) for name, value in metrics.items()}


def simulate(instances: list[TabularInstance], seeds, learner: LearnerSpec, fed: Federation,
             step_sizes, checkpoints, keep_params: bool = False) -> dict:
    """Run every (instance i, seed s) pair with run i using instances[i], seeds[i], step_sizes[i].

    Returns the metrics as numpy arrays with leading axes (runs, checkpoints), plus "theta"
    if keep_params.
    """
    task = _task(instances, learner, keep_params)
    data, weights, lams = _stack(instances)
    keys = jax.vmap(jax.random.key)(jnp.asarray(np.asarray(seeds), jnp.uint32))
    lrs = jnp.asarray(np.asarray(step_sizes, np.float32))
    run = _one_run(task, fed, jnp.asarray(instances[0].theta0), checkpoints)
    return _finish(*jax.jit(jax.vmap(run))(data, weights, keys, lrs, lams))


def simulate_grid(instances: list[TabularInstance], seeds, learner: LearnerSpec, fed: Federation,
                  step_sizes, checkpoints, *, lams=None, step_axes: Sequence[str] = (),
                  keep_params: bool = False, cells_per_block: int | None = None) -> dict:
    """Every (lambda, instance, seed) combination in one compiled program.

    lams: None (each instance's own lambda) or (n_lam, K) per-client lambda values.
    step_sizes: (T, E), with a leading axis for each grid axis named in step_axes (in the
    order lam, instance, seed). cells_per_block: run the cells that many at a time
    (fedsim.engine.grid): for grids of distinct cells (sampled gradients, or lambda values) with
    cells x K above a few thousand clients, about CLIENT_BLOCK / K keeps the working set of one
    block of clients (W1, K = 100: 2.4x faster in blocks of 10, bench); None: nested vmaps,
    which batch only the axes a cell's work depends on (exact gradients ignore the seed).
    Returns metrics with leading axes ([n_lam,] n_instances, n_seeds, checkpoints).
    """
    task = _task(instances, learner, keep_params)
    data, weights, own_lams = _stack(instances)
    keys = jax.vmap(jax.random.key)(jnp.asarray(np.asarray(seeds), jnp.uint32))
    axes = (("lam",) if lams is not None else ()) + ("instance", "seed")
    varies = {"data": ["instance"], "weights": ["instance"], "key": ["seed"],
              "lrs": [a for a in axes if a in step_axes]}
    args = dict(data=data, weights=weights, key=keys,
                lrs=jnp.asarray(np.asarray(step_sizes, np.float32)))
    if lams is None:   # each instance's own lambda
        varies["lam"], args["lam"] = ["instance"], own_lams
    else:
        varies["lam"], args["lam"] = ["lam"], jnp.asarray(np.asarray(lams, np.float32))
    run = _one_run(task, fed, jnp.asarray(instances[0].theta0), checkpoints)
    return _finish(*jax.jit(grid_vmap(run, axes, varies, cells_per_block))(**args))
