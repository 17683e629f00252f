"""Exact oracles against autodiff, finite differences and Monte-Carlo estimates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_instance
from fedsim import reference
from fedsim.tabular import oracles
from fedsim.tabular.sampling import default_horizon, sampled_gradient, sampled_returns

REGS = {"none": (0.0, 0.0), "entropy": (0.4, 0.0), "kl": (0.4, "theta0")}


def _problem(seed=0, **kw):
    inst = small_instance(seed=seed, **kw)
    theta = jnp.asarray(np.random.default_rng(seed).normal(size=inst.theta0.shape), jnp.float32)
    return inst, theta, jnp.asarray(inst.shaped_reward()[0]), jnp.asarray(inst.P[0])


def _reg(name, inst):
    tau, ref = REGS[name]
    log_ref = jax.nn.log_softmax(jnp.asarray(inst.theta0)) if ref == "theta0" else ref
    return oracles.Regularizer(jnp.float32(tau), log_ref)


@pytest.mark.parametrize("reg_name", REGS)
def test_exact_gradient_equals_autodiff(reg_name):
    inst, theta, r, P = _problem()
    reg = _reg(reg_name, inst)
    rho = jnp.asarray(inst.rho)
    analytic = oracles.client_gradient(theta, P, r, rho, inst.gamma, reg)
    autodiff = jax.grad(oracles.client_return)(theta, P, r, rho, inst.gamma, reg)
    np.testing.assert_allclose(analytic, autodiff, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("reg_name", REGS)
def test_exact_gradient_equals_finite_differences(reg_name):
    """Central differences of the float64 reference return (an independent implementation)."""
    inst, theta, r, P = _problem(seed=1)
    reg = _reg(reg_name, inst)
    analytic = np.asarray(oracles.client_gradient(theta, P, r, jnp.asarray(inst.rho), inst.gamma, reg))
    th = np.asarray(theta, np.float64)
    log_ref = np.asarray(reg.log_ref, np.float64)
    J = lambda x: reference.policy_values(x, np.float64(P), np.float64(r), np.float64(inst.rho),
                                          inst.gamma, float(reg.tau), log_ref)[0]
    eps, fd = 1e-6, np.zeros_like(th)
    for idx in np.ndindex(th.shape):
        e = np.zeros_like(th)
        e[idx] = eps
        fd[idx] = (J(th + e) - J(th - e)) / (2 * eps)
    np.testing.assert_allclose(analytic, fd, rtol=1e-4, atol=1e-5)


def test_global_objective_is_weighted_sum():
    inst, theta, *_ = _problem(transition_heterogeneity=1.0)
    P, r = jnp.asarray(inst.P), jnp.asarray(inst.shaped_reward())
    per_client = [reference.policy_values(np.float64(theta), np.float64(inst.P[k]),
                                          np.float64(inst.shaped_reward()[k]),
                                          np.float64(inst.rho), inst.gamma)[0]
                  for k in range(inst.num_clients)]
    J = oracles.global_return(theta, P, r, jnp.asarray(inst.p), jnp.asarray(inst.rho), inst.gamma)
    np.testing.assert_allclose(J, np.dot(inst.p, per_client), rtol=1e-5)


@pytest.mark.parametrize("heterogeneity", [0.0, 1.0])
def test_task_evaluation_matches_the_float64_reference(heterogeneity):
    """The task's evaluation (the global policy's visits from one solve when the dynamics are
    shared, else per client) against the float64 reference, client by client, with a KL
    regulariser; the clients' own policies differ from the global one."""
    from fedsim.engine import ClientState
    from fedsim.tabular.config import LearnerSpec
    from fedsim.tabular.mdp import client_data
    from fedsim.tabular.task import client_hparams, make_task

    inst, theta, *_ = _problem(seed=2, transition_heterogeneity=heterogeneity)
    assert inst.shared_dynamics == (heterogeneity == 0.0)
    task = make_task(inst, LearnerSpec(reg="kl", tau=0.3))
    own = theta + jnp.asarray(np.random.default_rng(5).normal(size=(inst.num_clients,)
                                                             + theta.shape), jnp.float32)
    clients = ClientState(own, (), (), (), ())
    metrics, per_client = jax.jit(task.evaluate)(theta, clients, client_data(inst),
                                                 client_hparams(inst), jnp.asarray(inst.p))
    log_ref = np.asarray(jax.nn.log_softmax(jnp.asarray(inst.theta0)), np.float64)
    value = lambda th, k, r: reference.policy_values(
        np.float64(th), np.float64(inst.P[k]), np.float64(r[k]), np.float64(inst.rho),
        inst.gamma, 0.3, log_ref)[0]
    shaped = inst.shaped_reward()
    for k in range(inst.num_clients):
        np.testing.assert_allclose(per_client["J_client"][k], value(theta, k, shaped), rtol=1e-5)
        np.testing.assert_allclose(per_client["J_personal_client"][k], value(own[k], k, shaped),
                                   rtol=1e-5)
    J0 = [reference.policy_values(np.float64(theta), np.float64(inst.P[k]),
                                  np.float64(inst.R0[k]), np.float64(inst.rho), inst.gamma)[0]
          for k in range(inst.num_clients)]
    np.testing.assert_allclose(metrics["J0"], np.dot(inst.p, J0), rtol=1e-5)


def test_batched_visits_match_each_policy_alone():
    """visits_of_policies (one batched solve for K clients x 2 policies) against
    discounted_visits of each policy in its client's MDP, and J from them against the float64
    reference."""
    inst, _, *_ = _problem(transition_heterogeneity=1.0)
    thetas = jnp.asarray(np.random.default_rng(3).normal(
        size=(inst.num_clients, 2) + inst.theta0.shape), jnp.float32)
    P, rho, r = jnp.asarray(inst.P), jnp.asarray(inst.rho), inst.shaped_reward()
    pi, d = oracles.visits_of_policies(thetas, P, rho, inst.gamma)
    assert pi.shape == thetas.shape and d.shape == thetas.shape[:-1]
    for k, p in np.ndindex(thetas.shape[:2]):
        pi_kp, d_kp = oracles.discounted_visits(thetas[k, p], P[k], rho, inst.gamma)
        np.testing.assert_allclose(pi[k, p], pi_kp, rtol=1e-6)
        np.testing.assert_allclose(d[k, p], d_kp, rtol=1e-5, atol=1e-6)
        J = reference.policy_values(np.float64(thetas[k, p]), np.float64(inst.P[k]),
                                    np.float64(r[k]), np.float64(inst.rho), inst.gamma)[0]
        np.testing.assert_allclose(d[k, p] @ jnp.sum(pi[k, p] * r[k], axis=-1), J, rtol=1e-4)


def test_return_matches_monte_carlo():
    """J from the linear solve lies in the 99.9% interval of 20k sampled returns."""
    inst, theta, r, P = _problem(seed=2)
    rho = jnp.asarray(inst.rho)
    exact = float(oracles.client_return(theta, P, r, rho, inst.gamma))
    samples = np.asarray(sampled_returns(theta, P, r, rho, inst.gamma, oracles.Regularizer(),
                                         jax.random.key(0), batch=20_000,
                                         horizon=default_horizon(inst.gamma)))
    se = samples.std() / np.sqrt(samples.size)
    assert abs(samples.mean() - exact) < 3.3 * se, (samples.mean(), exact, se)
    # The check has power: a 10% error in J would be far outside the interval.
    assert 0.1 * abs(exact) > 10 * se


@pytest.mark.parametrize("estimator", ["gpomdp", "reinforce"])
def test_sampled_gradient_is_unbiased(estimator):
    """Mean of many single-trajectory estimates vs the exact gradient, entry by entry."""
    inst, theta, r, P = _problem(seed=3)
    rho, reg = jnp.asarray(inst.rho), _reg("kl", inst)
    exact = np.asarray(oracles.client_gradient(theta, P, r, rho, inst.gamma, reg))
    keys = jax.random.split(jax.random.key(1), 4000)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: sampled_gradient(
        theta, P, r, rho, inst.gamma, reg, k, batch=5, horizon=default_horizon(inst.gamma),
        estimator=estimator)))(keys))
    mean, se = draws.mean(0), draws.std(0) / np.sqrt(len(draws)) + 1e-9
    z = np.abs(mean - exact) / se
    assert z.max() < 4.5, z.max()  # 15 entries; a 4.5-sigma excursion has p < 1e-4 overall


def test_truncated_horizon_is_biased_and_detected():
    """Negative control for the test above: a horizon of 2 is visibly biased."""
    inst, theta, r, P = _problem(seed=3)
    rho = jnp.asarray(inst.rho)
    exact = float(oracles.client_return(theta, P, r, rho, inst.gamma))
    samples = np.asarray(sampled_returns(theta, P, r, rho, inst.gamma, oracles.Regularizer(),
                                         jax.random.key(0), batch=20_000, horizon=2))
    assert abs(samples.mean() - exact) > 10 * samples.std() / np.sqrt(samples.size)


@pytest.mark.parametrize("reg_name", REGS)
def test_value_iteration_optimum_dominates_and_is_attained(reg_name):
    inst, *_ = _problem(seed=4)
    reg = _reg(reg_name, inst)
    opt = oracles.optimal_value(inst, reg)
    P, r, p, rho = (jnp.asarray(x) for x in (inst.P, inst.shaped_reward(), inst.p, inst.rho))
    thetas = jax.random.normal(jax.random.key(0), (200,) + inst.theta0.shape) * 3
    values = jax.vmap(lambda th: oracles.global_return(th, P, r, p, rho, inst.gamma, reg))(thetas)
    assert float(values.max()) <= opt.J_star + 1e-5
    # Attained: the greedy (tau = 0) or soft-greedy policy of the averaged MDP reaches J*.
    r_bar = np.tensordot(inst.p, inst.shaped_reward(), axes=1).astype(np.float64)
    tau = float(reg.tau)
    log_ref = np.asarray(reg.log_ref, np.float64) * np.ones_like(r_bar)
    V = oracles.optimal_values(inst.P[0], r_bar, inst.gamma, tau, log_ref if tau else None)
    Q = r_bar + inst.gamma * inst.P[0].astype(np.float64) @ V
    best = 50.0 * (Q == Q.max(1, keepdims=True)) if tau == 0 else Q / tau + log_ref
    attained = float(oracles.global_return(jnp.asarray(best, jnp.float32), P, r, p, rho, inst.gamma, reg))
    assert abs(attained - opt.J_star) < 1e-4
    assert opt.J_star <= opt.upper_bound + 1e-9


def test_heterogeneous_optimum_is_certified_between_bounds():
    inst, *_ = _problem(seed=5, transition_heterogeneity=1.0)
    opt = oracles.optimal_value(inst, certify_steps=4000)
    assert "per-client dynamics" in opt.method
    P, r, p, rho = (jnp.asarray(x) for x in (inst.P, inst.shaped_reward(), inst.p, inst.rho))
    thetas = jax.random.normal(jax.random.key(0), (200,) + inst.theta0.shape) * 3
    values = jax.vmap(lambda th: oracles.global_return(th, P, r, p, rho, inst.gamma))(thetas)
    assert float(values.max()) <= opt.J_star + opt.tolerance + 1e-5
    assert opt.J_star <= opt.upper_bound
    assert opt.tolerance < 1e-3
