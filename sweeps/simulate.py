"""Many tabular runs as one compiled program: instances x seeds vmapped, log checkpoints."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.engine import Federation, init_state, make_checkpointed_run, raise_if_nonfinite
from fedsim.engine import Task
from fedsim.tabular.mdp import TabularInstance, client_data
from fedsim.tabular.task import LearnerSpec, make_task


def simulate(instances: list[TabularInstance], seeds, learner: LearnerSpec, fed: Federation,
             step_sizes, checkpoints, keep_params: bool = False) -> dict:
    """Run every (instance i, seed s) pair with run i using instances[i], seeds[i], step_sizes[i].

    The instances must share what the task closes over (S, A, gamma, rho, theta0, reward
    form); their arrays, weights and step sizes are batched. Returns the metrics as numpy
    arrays with leading axes (runs, checkpoints), plus "theta" if keep_params.
    """
    first = instances[0]
    for inst in instances[1:]:
        assert inst.gamma == first.gamma and inst.reward_form == first.reward_form
        assert np.array_equal(inst.rho, first.rho) and np.array_equal(inst.theta0, first.theta0)
    task = make_task(first, learner)
    if keep_params:
        base = task.evaluate
        task = Task(task.init_private, task.direction,
                    lambda p, cp, d, w: {**base(p, cp, d, w), "theta": p})
    data = jax.tree.map(lambda *xs: jnp.stack(xs), *[client_data(inst) for inst in instances])
    weights = jnp.stack([jnp.asarray(inst.p) for inst in instances])
    keys = jax.vmap(jax.random.key)(jnp.asarray(np.asarray(seeds), jnp.uint32))
    lrs = jnp.asarray(np.asarray(step_sizes, np.float32))
    theta0 = jnp.asarray(first.theta0)

    def one(data, weights, key, lrs):
        state = init_state(task, fed, theta0, data, key)
        return make_checkpointed_run(task, fed)(state, data, weights, key, lrs,
                                                jnp.asarray(checkpoints, jnp.int32))

    state, metrics = jax.jit(jax.vmap(one))(data, weights, keys, lrs)
    raise_if_nonfinite(state.nonfinite_round)
    return {name: np.asarray(value) for name, value in metrics.items()}
