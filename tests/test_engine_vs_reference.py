"""The vmapped, scanned, jitted engine against the plain sequential reference (1e-5)."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from conftest import engine_run, reference_arrays, small_instance
from fedsim.engine import Federation, step_sizes
from fedsim.reference import reference_run
from fedsim.tabular.task import LearnerSpec, regularizer

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gradient,participants,algorithm", list(itertools.product(
    ["exact", "sampled"], [None, 2], ["fedavg", "centralized", "local"])))
def test_engine_equals_sequential_reference(gradient, participants, algorithm):
    instance = small_instance(transition_heterogeneity=0.5, reward_heterogeneity=0.5)
    learner = LearnerSpec(gradient=gradient, batch=3, horizon=12)
    fed = Federation(algorithm, local_steps=2, participants=participants)
    lrs = step_sizes("inverse_time", 3, 2, beta=2.0, gamma0=2.0)
    state, metrics = engine_run(instance, learner, fed, lrs, seed=7)
    ref = reference_run(reference_arrays(instance, lrs), jax.random.key(7), algorithm=algorithm,
                        participants=participants, gradient=gradient, batch=3, horizon=12)
    np.testing.assert_allclose(np.asarray(state.params), ref["theta"], **TOL)
    np.testing.assert_allclose(np.asarray(state.client_params), ref["client_thetas"], **TOL)
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
