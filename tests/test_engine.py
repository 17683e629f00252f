"""Properties of the round engine itself."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import engine_run, flat, small_instance, tabular_problem
from fedsim.engine import (Direction, Federation, HParams, Task, every_round, make_train,
                           make_train_round, make_trainer, participant_weights,
                           raise_if_nonfinite, sample_participants, step_sizes, weighted_sum)
from fedsim.tabular.task import make_task
from fedsim.tabular.config import LearnerSpec


def test_jit_and_no_jit_agree(constant_lrs):
    inst = small_instance()
    learner, fed = LearnerSpec("sampled", batch=2, horizon=8), Federation("fedavg", 2, 3)
    jitted, m1 = engine_run(inst, learner, fed, constant_lrs, jit=True)
    with jax.disable_jit():
        eager, m2 = engine_run(inst, learner, fed, constant_lrs, jit=False)
    np.testing.assert_allclose(jitted.params, eager.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m1["J"], m2["J"], rtol=1e-5)


def test_round_is_traced_once_per_shape():
    inst = small_instance()
    task = make_task(inst, LearnerSpec())
    fed = Federation("fedavg", 2, participants=2)
    data, weights, hparams = tabular_problem(inst, fed)
    algorithm = fed.algorithm_parts()
    round_fn = jax.jit(chex.assert_max_traces(make_train_round(task, algorithm, fed), n=1))
    key = jax.random.key(0)
    state = make_trainer(task, algorithm, fed).init(jnp.asarray(inst.theta0), data, key)
    for t in range(4):  # new round index, step sizes, weights, lambda, key: no retrace
        state, _ = round_fn(state, data, weights * (t + 1) / (t + 1),
                            hparams._replace(task=hparams.task._replace(lam=hparams.task.lam * t)),
                            jax.random.key(t), jnp.int32(t),
                            jnp.full((2,), 0.1 * (t + 1), jnp.float32))
    chex.clear_trace_counter()


def test_weighted_sum_contracts_axis_zero_only():
    K = 3
    tree = {"w": jnp.arange(K * 4 * 5, dtype=jnp.float32).reshape(K, 4, 5),
            "b": jnp.arange(K * 2, dtype=jnp.float32).reshape(K, 2)}
    p = jnp.asarray([0.2, 0.5, 0.3])
    out = weighted_sum(tree, p)
    assert out["w"].shape == (4, 5) and out["b"].shape == (2,)
    expected = sum(float(p[k]) * np.asarray(tree["w"][k]) for k in range(K))
    np.testing.assert_allclose(out["w"], expected, rtol=1e-6)
    np.testing.assert_allclose(out["b"], [0.2 * 0 + 0.5 * 2 + 0.3 * 4, 0.2 * 1 + 0.5 * 3 + 0.3 * 5],
                               rtol=1e-6)


def test_k1_federated_equals_centralized(constant_lrs):
    inst = small_instance(num_clients=1)
    learner = LearnerSpec("sampled", batch=4, horizon=10)
    fed_state, fed_m = engine_run(inst, learner, Federation("fedavg", 2), constant_lrs)
    cen_state, cen_m = engine_run(inst, learner, Federation("centralized", 2), constant_lrs)
    np.testing.assert_allclose(fed_state.params, cen_state.params, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fed_m["J"], cen_m["J"], rtol=1e-6)


def test_participants_are_distinct_and_reweighting_is_unbiased():
    K, m = 6, 2
    p = jnp.asarray([0.05, 0.1, 0.15, 0.2, 0.2, 0.3])
    x = jnp.arange(1.0, K + 1.0) ** 2

    def sampled_sum(key):
        idx = sample_participants(key, K, m)
        return participant_weights(p, idx, m) @ x[idx], idx

    sums, idx = jax.vmap(sampled_sum)(jax.random.split(jax.random.key(0), 40_000))
    idx = np.asarray(idx)
    assert np.all(idx[:, 0] != idx[:, 1])
    np.testing.assert_allclose(np.bincount(idx.ravel(), minlength=K) / idx.size, 1 / K, atol=0.01)
    se = float(sums.std()) / np.sqrt(sums.size)
    assert abs(float(sums.mean()) - float(p @ x)) < 4 * se


def test_cosine_schedule_anneals_from_lr_towards_zero():
    lrs = step_sizes("cosine", 4, 3, lr=0.2)
    s = np.arange(12).reshape(4, 3)
    np.testing.assert_allclose(lrs, 0.1 * (1 + np.cos(np.pi * s / 12)), rtol=1e-6)
    assert lrs.dtype == np.float32 and lrs[0, 0] == np.float32(0.2) and lrs[-1, -1] > 0
    assert np.all(np.diff(lrs.ravel()) < 0)


def test_chunked_run_equals_one_scan():
    inst = small_instance()
    task, fed = make_task(inst, LearnerSpec("sampled", batch=2, horizon=6)), Federation("fedavg", 2, 3)
    data, weights, hparams = tabular_problem(inst, fed)
    key = jax.random.key(5)
    lrs = jnp.asarray(step_sizes("inverse_time", 6, 2, beta=1.0, gamma0=3.0))
    trainer = make_trainer(task, fed.algorithm_parts(), fed)
    run = jax.jit(trainer.run)
    state0 = trainer.init(jnp.asarray(inst.theta0), data, key)
    whole, m_whole = run(state0, data, weights, hparams, key, lrs, every_round(6), 0)
    half, m1 = run(state0, data, weights, hparams, key, lrs, every_round(3), 0)
    rest, m2 = run(half, data, weights, hparams, key, lrs, every_round(6)[3:], 3)
    np.testing.assert_array_equal(whole.params, rest.params)
    np.testing.assert_array_equal(m_whole.round["J"],
                                  np.concatenate([m1.round["J"], m2.round["J"]]))


def test_seed_vmap_equals_separate_runs(constant_lrs):
    inst = small_instance()
    learner, fed = LearnerSpec("sampled", batch=2, horizon=6), Federation("fedavg", 2)
    task = make_task(inst, learner)
    data, weights, hparams = tabular_problem(inst, fed)
    theta0, lrs = jnp.asarray(inst.theta0), jnp.asarray(constant_lrs)
    train = make_train(task, fed.algorithm_parts(), fed)

    def simulate(key):   # a whole run, vmapped over seeds: PureJaxRL's shape
        return train(theta0, data, weights, hparams, key, lrs, every_round(len(lrs)))

    keys = jax.vmap(jax.random.key)(jnp.arange(3))
    batched_state, batched_m = jax.jit(jax.vmap(simulate))(keys)
    batched_m = flat(batched_m)
    for i in range(3):
        state, m = engine_run(inst, learner, fed, constant_lrs, seed=i)
        np.testing.assert_allclose(batched_state.params[i], state.params, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(batched_m["J"][i], m["J"], rtol=1e-6)
    assert not np.allclose(batched_state.params[0], batched_state.params[1])


def test_nonfinite_parameters_name_the_round():
    inst = small_instance()
    lrs = step_sizes("constant", 5, 1, lr=0.1)
    lrs[2:] = np.inf  # round index 2 makes the parameters infinite
    state, _ = engine_run(inst, LearnerSpec(), Federation("fedavg", 1), lrs)
    assert int(state.nonfinite_round) == 2
    with pytest.raises(FloatingPointError, match="in round 3 "):  # counted from 1
        raise_if_nonfinite(state.nonfinite_round)
    raise_if_nonfinite(np.asarray([-1, -1]))  # finite runs pass


@pytest.mark.parametrize("blow_up", [False, True])
def test_train_then_evaluate_equals_run(blow_up):
    """Trainer.train then Trainer.evaluate (the rounds, then all checkpoints' evaluation in one
    batch) give run's metrics, and the first non-finite round it records."""
    inst = small_instance()
    fed = Federation("fedprox", 2)
    lrs = step_sizes("constant", 6, 2, lr=0.5)
    if blow_up:
        lrs[3:] = np.inf
    task = make_task(inst, LearnerSpec(reg="entropy", tau=0.1))
    trainer = make_trainer(task, fed.algorithm_parts(task, inst.num_clients), fed)
    data, weights, hparams = tabular_problem(inst, fed)
    key = jax.random.key(0)
    state = jax.jit(trainer.init)(jnp.asarray(inst.theta0), data, key)
    checkpoints = jnp.asarray([2, 3, 5, 6], jnp.int32)
    args = (data, weights, hparams, key, jnp.asarray(lrs), checkpoints)
    ran, metrics = jax.jit(trainer.run)(state, *args)
    trained, snapshots = jax.jit(trainer.train)(state, *args)
    first_bad, evaluated = jax.jit(trainer.evaluate)(snapshots, data, weights, hparams,
                                                     checkpoints)
    assert int(first_bad) == int(ran.nonfinite_round) == (3 if blow_up else -1)
    assert jax.tree.structure(metrics) == jax.tree.structure(evaluated)
    if not blow_up:
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     metrics, evaluated)
        jax.tree.map(np.testing.assert_array_equal, ran.params, trained.params)


class MLPPolicy(nn.Module):
    """A flax policy over one-hot states, to show neural parameters fit the engine."""

    num_actions: int

    @nn.compact
    def __call__(self, states):
        return nn.Dense(self.num_actions)(nn.tanh(nn.Dense(8)(states)))


def test_flax_policy_with_private_client_state():
    """Neural parameters are averaged; per-client state stays put and differs per client.

    Each client keeps a private reward model (a bias vector fitted locally, never sent) and a
    step counter; its local objective is the expected private reward of the shared policy.
    """
    K, S, A, E = 3, 4, 3, 2
    model = MLPPolicy(A)
    states = jnp.eye(S)
    params0 = model.init(jax.random.key(0), states)

    def init_private(data, key):
        return {"reward_model": jax.random.normal(key, (A,)), "steps": jnp.zeros((), jnp.int32)}

    def objective(params, reward_model):
        return jnp.mean(jax.nn.softmax(model.apply(params, states)) @ reward_model)

    def direction(params, personal, private, data, hparams, key):
        private = {"reward_model": private["reward_model"] + 0.0 * data, "steps": private["steps"] + 1}
        return Direction(jax.grad(objective)(params, private["reward_model"]), private=private,
                         aux={"objective": objective(params, private["reward_model"])})

    def evaluate(params, clients, data, hparams, weights):
        return {"J": jnp.zeros(())}, {}

    task = Task(init_private, direction, evaluate)
    fed = Federation("fedavg", E)
    data, weights = jnp.zeros((K, A)), jnp.asarray([0.5, 0.25, 0.25])
    key = jax.random.key(1)
    trainer = make_trainer(task, fed.algorithm_parts(), fed)
    state = trainer.init(params0, data, key)
    new, metrics = jax.jit(trainer.run)(state, data, weights, HParams(), key,
                                        jnp.full((3, E), 0.5, jnp.float32), every_round(3))
    # Private state: never aggregated, per client, updated only by its own client.
    private, private0 = new.clients.private, state.clients.private
    np.testing.assert_array_equal(private["reward_model"], private0["reward_model"])
    assert not np.allclose(private["reward_model"][0], private["reward_model"][1])
    np.testing.assert_array_equal(private["steps"], [3 * E] * K)
    # Aux metrics come out stacked per logged round: the participants' weighted mean.
    assert metrics.aux["objective"].shape == (3,)
    assert np.all(np.isfinite(metrics.aux["objective"]))
    # ... and per client, whose weighted mean it is
    per_client = np.asarray(metrics.client_aux["objective"])
    assert per_client.shape == (3, K)
    np.testing.assert_allclose(per_client @ np.asarray(weights), metrics.aux["objective"],
                               rtol=1e-6)
    # Global parameters are the weighted average of what the clients held after the last round.
    expected = weighted_sum(new.clients.params, weights)
    chex.assert_trees_all_close(new.params, expected, rtol=1e-6)
    chex.assert_trees_all_equal_shapes(new.params, params0)


def test_every_client_step_gets_its_own_key():
    from fedsim.engine import keys

    run_key = jax.random.key(0)
    raw = {(t, k, e): tuple(np.asarray(jax.random.key_data(
        keys.client_step_key(keys.client_round_key(run_key, t, k), e))))
        for t in range(4) for k in range(5) for e in range(3)}
    assert len(set(raw.values())) == len(raw)
    other_run = keys.client_step_key(keys.client_round_key(jax.random.key(1), 0, 0), 0)
    assert tuple(np.asarray(jax.random.key_data(other_run))) != raw[(0, 0, 0)]


def test_checkpointed_run_equals_full_run_at_the_checkpoints():
    from fedsim.engine import log_checkpoints

    inst = small_instance()
    task, fed = make_task(inst, LearnerSpec("sampled", batch=2, horizon=6)), Federation("fedavg", 2, 3)
    data, weights, hparams = tabular_problem(inst, fed)
    key = jax.random.key(2)
    lrs = jnp.asarray(step_sizes("inverse_time", 40, 2, beta=1.0, gamma0=3.0))
    train = jax.jit(make_train(task, fed.algorithm_parts(), fed))
    theta0 = jnp.asarray(inst.theta0)
    full_state, full = train(theta0, data, weights, hparams, key, lrs, every_round(40))
    checkpoints = log_checkpoints(40, 8)
    assert checkpoints[0] == 1 and checkpoints[-1] == 40 and np.all(np.diff(checkpoints) > 0)
    state, sparse = train(theta0, data, weights, hparams, key, lrs, checkpoints)
    np.testing.assert_allclose(sparse.round["J"], full.round["J"][checkpoints - 1], rtol=1e-6)
    np.testing.assert_allclose(state.params, full_state.params, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("algorithm,participants", [("fedavg", None), ("local", None),
                                                    ("centralized", None), ("fedavg", 2),
                                                    ("fedprox", 2)])
def test_client_blocks_equal_one_vmap(algorithm, participants):
    """Federation.client_block (lax.map over blocks, vmap inside) computes the same rounds;
    a block size that does not divide the clients leaves a remainder block."""
    inst = small_instance()   # 4 clients: blocks of 3 leave a remainder of 1
    lrs = jnp.full((6, 2), 0.5)
    results = [engine_run(inst, LearnerSpec("sampled", batch=2, horizon=6),
                          Federation(algorithm, 2, participants, client_block=block), lrs, seed=3)
               for block in (None, 3)]
    (s1, m1), (s2, m2) = results
    np.testing.assert_allclose(m2["J"], m1["J"], rtol=1e-6)
    np.testing.assert_allclose(s2.clients.params, s1.clients.params, rtol=1e-6, atol=1e-7)
