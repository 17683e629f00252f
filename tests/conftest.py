"""Small instances and a one-call engine run shared by the tests."""

from __future__ import annotations

import os
import tempfile

# XLA's compiled programs are cached on disk for the whole suite, its workers and the fedsim
# processes the tests start (they inherit the environment): many tests compile the same
# program again (determinism, resumption, the command line in a subprocess). The cache is
# keyed by the program, the compiler options and the JAX version, so a hit is the same
# executable; set before JAX is imported, which reads these variables then.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "fedsim-tests-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
# Most tests are small programs whose time is compilation: without LLVM's optimisation of
# the generated CPU code the suite runs about a quarter faster (the same XLA graph passes
# and the same semantics; benchmarks and users' runs keep the default).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import jax.numpy as jnp
import numpy as np
import pytest

from fedsim.engine import Federation, HParams, every_round, make_trainer, step_sizes
from fedsim.tabular.mdp import client_data, make_instance
from fedsim.tabular.config import InstanceSpec
from fedsim.tabular.task import client_hparams, make_task
from fedsim.tabular.config import LearnerSpec


def small_instance(**overrides):
    spec = dict(num_clients=4, num_states=5, num_actions=3, gamma=0.8, lam_grid=(0.1, 0.9),
                weights="samples", start="random", init="random", seed=3)
    spec.update(overrides)
    return make_instance(InstanceSpec(**spec))


def flat(metrics) -> dict:
    """An engine Metrics as one dict of numpy arrays (round, per-client and aux metrics; the
    per-client aux, whose names are the aux's, stay in metrics.client_aux)."""
    return {k: np.asarray(v) for part in metrics[:3] for k, v in part.items()}


def tabular_problem(instance, fed: Federation):
    """(data, weights, hparams) of a tabular instance under `fed`."""
    return (client_data(instance), jnp.asarray(instance.p),
            HParams(client_hparams(instance), fed.algorithm_hparams(instance.num_clients)))


def engine_run(instance, learner: LearnerSpec, fed: Federation, lrs, seed=0, jit=True,
               algorithm=None, mesh=None):
    """Initialise and run the engine, evaluating every round; returns (final state, metrics
    as one dict of numpy arrays)."""
    task = make_task(instance, learner)
    trainer = make_trainer(task, algorithm or fed.algorithm_parts(task, instance.num_clients),
                           fed, mesh)
    data, weights, hparams = tabular_problem(instance, fed)
    key = jax.random.key(seed)
    init, run = (jax.jit(trainer.init), jax.jit(trainer.run)) if jit else trainer[:2]
    state = init(jnp.asarray(instance.theta0), data, key)
    state, metrics = run(state, data, weights, hparams, key, jnp.asarray(lrs),
                         every_round(len(lrs)))
    return state, flat(metrics)


def reference_arrays(instance, lrs) -> dict:
    return {**instance._asdict(), "step_sizes": np.asarray(lrs)}


@pytest.fixture
def constant_lrs():
    return step_sizes("constant", 3, 2, lr=0.5)
