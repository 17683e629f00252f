"""PPO as the tabular local learner: the limit in which it is the policy gradient, convergence
on a single client against the exact optimum, the k3 KL estimator, and its bad inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import engine_run, small_instance
from fedsim.engine import Federation, HParams, make_train, step_sizes
from fedsim.errors import ConfigError
from fedsim.tabular import oracles
from fedsim.tabular.config import InstanceSpec, LearnerSpec
from fedsim.tabular.mdp import client_data, make_instance
from fedsim.tabular.ppo import ppo_iteration
from fedsim.tabular.sampling import sampled_gradient, sampled_kl
from fedsim.tabular.task import client_hparams, make_task, regularizer


def _client(instance, k=0):
    data = client_data(instance)
    return (data.P[k], jnp.asarray(instance.shaped_reward()[k]), jnp.asarray(instance.rho),
            instance.gamma)


@pytest.mark.parametrize("reg", ["none", "kl"])
def test_unclipped_single_pass_ppo_is_the_policy_gradient_step(reg):
    instance = small_instance()
    spec = LearnerSpec(learner="ppo", batch=6, horizon=15, clip=float("inf"), epochs=1,
                       minibatches=1, gae_lambda=1.0, normalize_advantages=False, ppo_lr=0.3,
                       value_lr=0.7, reg=reg, tau=0.4 if reg == "kl" else 0.0)
    P, r, rho, gamma = _client(instance, 1)
    theta, key = jnp.asarray(instance.theta0), jax.random.key(3)
    reg_ = regularizer(spec, instance)
    d = ppo_iteration(theta, jnp.zeros(theta.shape[0]), P, r, rho, gamma, reg_, key, spec=spec,
                      horizon=15)
    pg = sampled_gradient(theta, P, r, rho, gamma, reg_, key, batch=6, horizon=15)
    np.testing.assert_allclose(np.asarray(d.params), 0.3 * np.asarray(pg), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(d.private), 0)   # the value function learnt meanwhile
    # the limit is sharp: clipping, a second epoch or a learnt baseline change the step
    for change in (dict(clip=0.05), dict(epochs=2), dict(gae_lambda=0.5)):
        other = ppo_iteration(theta, jnp.full(theta.shape[0], 1.0), P, r, rho, gamma, reg_, key,
                              spec=spec.__class__(**{**spec.__dict__, **change}), horizon=15)
        assert not np.allclose(np.asarray(other.params), np.asarray(d.params), atol=1e-4), change


def test_ppo_reaches_one_percent_of_the_optimum_on_a_single_client():
    """Measured: every one of 8 seeds within 1% of J* by round 500 (worst 0.91%) on this
    instance. On instances with a near-tie between actions PPO can commit to the wrong one
    before its advantages resolve it (the conftest instance: 2 of 8 seeds stall at 2%)."""
    instance = make_instance(InstanceSpec(num_clients=1, num_states=5, num_actions=3, gamma=0.8,
                                          seed=1))
    J_star = oracles.optimal_value(instance).J_star
    learner = LearnerSpec(learner="ppo", batch=64)
    task, fed, T = make_task(instance, learner), Federation("fedavg", 1), 500
    train = make_train(task, fed.algorithm_parts(task), fed)
    run = jax.jit(jax.vmap(lambda key: train(
        jnp.asarray(instance.theta0), client_data(instance), jnp.asarray(instance.p),
        HParams(client_hparams(instance)), key, jnp.ones((T, 1)),
        jnp.asarray([100, 300, T], jnp.int32))[1]))
    metrics = run(jax.vmap(jax.random.key)(jnp.arange(8)))
    gap = (J_star - np.asarray(metrics.round["J"])) / abs(J_star)
    assert gap[:, -1].max() < 0.01, gap
    assert gap[:, 0].mean() > gap[:, -1].mean()   # it got there by learning
    for name in ("surrogate", "value_loss", "approx_kl", "clip_fraction", "entropy"):
        assert np.all(np.isfinite(np.asarray(metrics.aux[name])))
    assert np.asarray(metrics.aux["entropy"])[:, -1].max() < np.log(3)


def test_k3_kl_estimate_is_unbiased_and_a_biased_one_is_caught():
    instance = small_instance()
    P, _, rho, gamma = _client(instance, 2)
    rng = np.random.default_rng(0)
    theta = jnp.asarray(rng.normal(size=instance.theta0.shape), jnp.float32)
    log_ref = jax.nn.log_softmax(jnp.asarray(rng.normal(size=instance.theta0.shape)), axis=-1)
    exact = float(oracles.policy_kl(theta, log_ref, P, rho, gamma)) / (1 - gamma)
    est = np.asarray(sampled_kl(theta, log_ref, P, rho, gamma, jax.random.key(0), batch=40_000,
                                horizon=80), np.float64)
    half = 3 * est.std(ddof=1) / np.sqrt(est.size)   # 3 standard errors
    assert abs(est.mean() - exact) <= half, (est.mean(), exact, half)
    assert np.all(est >= 0)
    # the comparison has the power to fail: k2 = (log r)^2 / 2 is biased, and is outside
    from fedsim.tabular.sampling import rollout, trajectory_uniforms
    from fedsim.tabular.oracles import Regularizer

    S, A = theta.shape
    sa, alive, _ = rollout(theta, P, jnp.zeros((S, A)), rho, gamma, Regularizer(),
                           *trajectory_uniforms(jax.random.key(0), 40_000, 80))
    log_r = jnp.reshape(log_ref - jax.nn.log_softmax(theta, axis=-1), S * A)[sa]
    k2 = np.asarray(jnp.sum(alive * 0.5 * log_r ** 2, axis=0), np.float64)
    assert abs(k2.mean() - exact) > 3 * k2.std(ddof=1) / np.sqrt(k2.size)


def test_ppo_under_fedkl_with_beta_zero_is_isolated_ppo():
    instance = small_instance(reward_heterogeneity=0.8)
    learner = LearnerSpec(learner="ppo", batch=8, horizon=20)
    lrs = step_sizes("constant", 4, 2, lr=1.0)
    a, ma = engine_run(instance, learner, Federation("fedkl", 2, kl_coef=0.0), lrs)
    b, _ = engine_run(instance, learner, Federation("local", 2), lrs)
    np.testing.assert_allclose(np.asarray(a.clients.params), np.asarray(b.clients.params),
                               rtol=1e-5, atol=1e-5)
    for x, y in zip(jax.tree.leaves(a.clients.private), jax.tree.leaves(b.clients.private)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)
    c, _ = engine_run(instance, learner, Federation("fedkl", 2, kl_coef=2.0, self_weight=0.0), lrs)
    assert not np.allclose(np.asarray(c.clients.params), np.asarray(a.clients.params), atol=1e-3)
    assert set(ma) >= {"approx_kl", "clip_fraction", "kl_to_reference"}


@pytest.mark.parametrize("change,message", [
    (dict(clip=0.0), "clip (epsilon) = 0.0"),
    (dict(clip=-1.0), "clip (epsilon) = -1.0"),
    (dict(epochs=0), "epochs = 0"),
    (dict(minibatches=3), "must divide the batch B = 16"),
    (dict(minibatches=32), "minibatches = 32"),
    (dict(gae_lambda=1.5), "gae_lambda = 1.5"),
    (dict(ppo_lr=0.0), "ppo_lr = 0.0"),
])
def test_bad_ppo_settings_fail_before_compiling(change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LearnerSpec(learner="ppo", batch=16, **change).validate()


def test_adaptive_kl_controller_follows_trl_and_moves_the_right_way():
    from fedsim.rl import adapt_kl_scale

    # TRL: proportional error clipped to [-0.2, 0.2], times n_steps / horizon
    assert float(adapt_kl_scale(1.0, 12.0, 6.0, 10_000, 16)) == pytest.approx(1 + 0.2 * 16 / 1e4)
    assert float(adapt_kl_scale(2.0, 6.6, 6.0, 100, 10)) == pytest.approx(2 * (1 + 0.1 * 0.1))
    assert float(adapt_kl_scale(1.0, 0.0, 6.0, 100, 10)) == pytest.approx(1 - 0.2 * 0.1)

    instance = small_instance(reward_heterogeneity=0.8)
    lrs = step_sizes("constant", 20, 1, lr=1.0)
    scales = {}
    for target in (None, 1e-6, 1e3):
        learner = LearnerSpec(learner="ppo", batch=8, horizon=20, kl_target=target,
                              kl_horizon=40.0)
        state, metrics = engine_run(instance, learner, Federation("fedkl", 1, kl_coef=0.5), lrs)
        scales[target] = np.asarray(state.clients.private.kl_scale)
        assert metrics["reference_kl"].shape == (20,)
    assert np.all(scales[None] == 1.0)
    # the clients start equal (KL 0: the scale first falls), then move apart: far above a tiny
    # target the coefficient grows, below a huge one it shrinks every round
    assert np.all(scales[1e-6] > 1.0) and np.all(scales[1e3] == pytest.approx((1 - 0.2 * 8 / 40) ** 20, rel=1e-4))


def test_kl_target_needs_a_kl_penalty():
    from fedsim.tabular.config import TabularRunConfig

    with pytest.raises(ConfigError, match="needs a KL penalty to adapt"):
        TabularRunConfig(learner=LearnerSpec(learner="ppo", kl_target=1.0)).validate()
    with pytest.raises(ConfigError, match="kl_target = -1.0"):
        LearnerSpec(learner="ppo", kl_target=-1.0).validate()
