"""The vmapped, scanned, jitted engine against the plain sequential reference (1e-5)."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from conftest import engine_run, reference_arrays, small_instance
from fedsim.engine import Federation, step_sizes
from fedsim.reference import reference_run
from fedsim.tabular.task import regularizer
from fedsim.tabular.config import LearnerSpec

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gradient,participants,algorithm", list(itertools.product(
    ["exact", "sampled"], [None, 2], ["fedavg", "fedprox", "centralized", "local"])))
def test_engine_equals_sequential_reference(gradient, participants, algorithm):
    instance = small_instance(transition_heterogeneity=0.5, reward_heterogeneity=0.5)
    learner = LearnerSpec(gradient=gradient, batch=3, horizon=12)
    mu = 0.7 if algorithm == "fedprox" else 0.0
    fed = Federation(algorithm, local_steps=2, participants=participants, mu=mu)
    lrs = step_sizes("inverse_time", 3, 2, beta=2.0, gamma0=2.0)
    state, metrics = engine_run(instance, learner, fed, lrs, seed=7)
    ref = reference_run(reference_arrays(instance, lrs), jax.random.key(7), algorithm=algorithm,
                        participants=participants, gradient=gradient, batch=3, horizon=12,
                        mu=mu)
    np.testing.assert_allclose(np.asarray(state.params), ref["theta"], **TOL)
    np.testing.assert_allclose(np.asarray(state.clients.params), ref["client_thetas"], **TOL)
    np.testing.assert_allclose(metrics["J"], ref["J"], **TOL)
    np.testing.assert_allclose(metrics["J0"], ref["J0"], **TOL)
    assert not np.allclose(ref["theta"], instance.theta0)  # something was learned


@pytest.mark.parametrize("reg,gradient", [("entropy", "exact"), ("kl", "exact"), ("kl", "sampled")])
def test_regularised_engine_equals_reference(reg, gradient):
    instance = small_instance()
    learner = LearnerSpec(gradient=gradient, batch=2, horizon=10, reg=reg, tau=0.3)
    lrs = step_sizes("constant", 3, 2, lr=0.5)
    state, metrics = engine_run(instance, learner, Federation("fedavg", 2), lrs, seed=1)
    r = regularizer(learner, instance)
    ref = reference_run(reference_arrays(instance, lrs), jax.random.key(1), gradient=gradient,
                        batch=2, horizon=10, tau=0.3, log_ref=np.asarray(r.log_ref, np.float64))
    np.testing.assert_allclose(np.asarray(state.params), ref["theta"], **TOL)
    np.testing.assert_allclose(metrics["J"], ref["J"], **TOL)


def test_server_sgd_equals_reference():
    import optax

    instance = small_instance()
    lrs = step_sizes("constant", 4, 2, lr=0.5)
    fed = Federation("fedavg", 2, participants=3, server_optimizer=optax.sgd(0.7))
    state, metrics = engine_run(instance, LearnerSpec(), fed, lrs, seed=2)
    ref = reference_run(reference_arrays(instance, lrs), jax.random.key(2), participants=3,
                        server_lr=0.7)
    np.testing.assert_allclose(np.asarray(state.params), ref["theta"], **TOL)
    np.testing.assert_allclose(metrics["J"], ref["J"], **TOL)


def test_fedprox_reference_fails_with_the_wrong_pull():
    """The comparison can fail: a reference that drops FedProx's proximal term (or pulls the
    wrong way) disagrees with the engine, and mu > 0 changes the run."""
    instance = small_instance(transition_heterogeneity=0.5, reward_heterogeneity=0.5)
    lrs = step_sizes("constant", 3, 3, lr=0.8)
    state, _ = engine_run(instance, LearnerSpec(), Federation("fedprox", 3, mu=0.9), lrs, seed=1)
    arrays = reference_arrays(instance, lrs)
    right = reference_run(arrays, jax.random.key(1), algorithm="fedprox", mu=0.9)
    np.testing.assert_allclose(np.asarray(state.params), right["theta"], **TOL)
    for wrong in (0.0, -0.9):
        ref = reference_run(arrays, jax.random.key(1), algorithm="fedprox", mu=wrong)
        assert not np.allclose(np.asarray(state.params), ref["theta"], **TOL)
