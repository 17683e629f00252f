"""Small instances and a one-call engine run shared by the tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsim.engine import Federation, init_state, make_run, step_sizes
from fedsim.tabular.mdp import InstanceSpec, client_data, make_instance
from fedsim.tabular.task import LearnerSpec, make_task


def small_instance(**overrides):
    spec = dict(num_clients=4, num_states=5, num_actions=3, gamma=0.8, lam_grid=(0.1, 0.9),
                weights="samples", start="random", init="random", seed=3)
    spec.update(overrides)
    return make_instance(InstanceSpec(**spec))


def engine_run(instance, learner: LearnerSpec, fed: Federation, lrs, seed=0, jit=True):
    """Initialise and run the vmapped engine; returns (final state, metrics as numpy)."""
    task = make_task(instance, learner)
    data, weights = client_data(instance), jnp.asarray(instance.p)
    key = jax.random.key(seed)
    state = init_state(task, fed, jnp.asarray(instance.theta0), data, key)
    run = make_run(task, fed)
    if jit:
        run = jax.jit(run)
    state, metrics = run(state, data, weights, key, jnp.asarray(lrs), 0)
    return state, jax.tree.map(np.asarray, metrics)


def reference_arrays(instance, lrs) -> dict:
    return {**instance._asdict(), "step_sizes": np.asarray(lrs)}


@pytest.fixture
def constant_lrs():
    return step_sizes("constant", 3, 2, lr=0.5)
