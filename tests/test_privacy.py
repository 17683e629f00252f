"""Privacy: DP-FedAvg against the plain reference, its noise and adaptive clipping measured,
the accountant against dp-accounting's own events, the one-run audit shown to detect leakage
and to stay under the accountant, the parameters-only boundary, and bad settings refused."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fedsim.reference as R
from conftest import engine_run, reference_arrays, small_instance
from fedsim.engine import Federation, step_sizes
from fedsim.errors import ConfigError
from fedsim.privacy import accounting
from fedsim.privacy.audit import epsilon_lower_bound, one_run_audit, p_value
from fedsim.privacy.dp_fedavg import AdaptiveClip, dp_fedavg
from fedsim.privacy.settings import DPSettings
from fedsim.tabular.config import LearnerSpec

dpa = pytest.importorskip("dp_accounting")
K = 6
TOL = dict(rtol=1e-5, atol=1e-6)


def _instance(**overrides):
    return small_instance(num_clients=K, transition_heterogeneity=0.5,
                          reward_heterogeneity=0.5, **overrides)


# ---- DP-FedAvg in the engine, against the plain reference ---------------------------------

@pytest.mark.parametrize("sampling,rate,dp", [
    ("fixed", None, (0.05, 1.0, None)),
    ("poisson", 0.5, (0.05, 1.0, None)),
    ("poisson", 0.5, None),
    ("fixed", 0.5, (0.05, 0.7, None)),
    ("poisson", 0.7, (0.05, 1.0, (0.5, 0.2, 2.0))),
])
def test_dp_fedavg_and_poisson_sampling_equal_the_plain_reference(sampling, rate, dp):
    instance = _instance()
    lrs = step_sizes("constant", 4, 2, lr=0.5)
    settings = None if dp is None else DPSettings(
        clip=dp[0], noise_multiplier=dp[1], adaptive_clip=dp[2] is not None,
        target_quantile=(dp[2] or AdaptiveClip())[0], clip_lr=(dp[2] or AdaptiveClip())[1],
        count_std=None if dp[2] is None else dp[2][2])
    fed = Federation("fedavg", 2, sampling=sampling, participation_rate=rate, dp=settings)
    state, metrics = engine_run(instance, LearnerSpec(), fed, lrs, seed=5)
    ref = R.reference_run(reference_arrays(instance, lrs), jax.random.key(5), sampling=sampling,
                          rate=rate, dp=dp)
    np.testing.assert_allclose(np.asarray(state.params), ref["theta"], **TOL)
    np.testing.assert_allclose(metrics["J"], ref["J"], **TOL)
    # the reference is not vacuous: another noise draw moves it
    other = R.reference_run(reference_arrays(instance, lrs), jax.random.key(6), sampling=sampling,
                            rate=rate, dp=dp)
    assert not np.allclose(other["theta"], ref["theta"], **TOL)


def test_per_client_aux_is_nan_for_the_clients_poisson_sampling_left_out():
    from fedsim.engine import make_trainer
    from fedsim.tabular.task import make_task
    from conftest import tabular_problem

    instance = _instance()
    fed = Federation("fedavg", 1, sampling="poisson", participation_rate=0.5)
    task = make_task(instance, LearnerSpec(learner="ppo", batch=8))   # PPO reports aux
    trainer = make_trainer(task, fed.algorithm_parts(task, K), fed)
    data, weights, hparams = tabular_problem(instance, fed)
    key = jax.random.key(3)
    state = trainer.init(jnp.asarray(instance.theta0), data, key)
    _, metrics = jax.jit(trainer.run)(state, data, weights, hparams, key,
                                      jnp.ones((4, 1)), jnp.arange(1, 5))
    from fedsim.engine.round import round_draws

    for t in range(4):
        took = np.asarray(round_draws(fed, key, t, K).selected) > 0
        values = np.asarray(metrics.client_aux["value_loss"])[t]
        assert np.all(np.isnan(values[~took])) and np.all(np.isfinite(values[took]))


def test_without_noise_and_with_a_clip_above_every_delta_dp_fedavg_is_fedavg_exactly():
    instance = _instance(weights="uniform")
    lrs = step_sizes("constant", 5, 3, lr=0.5)
    for extra in ({}, {"participants": 3}):
        plain, _ = engine_run(instance, LearnerSpec(), Federation("fedavg", 3, **extra), lrs)
        dp = Federation("fedavg", 3, dp=DPSettings(clip=1e9, noise_multiplier=0.0), **extra)
        private, _ = engine_run(instance, LearnerSpec(), dp, lrs)
        np.testing.assert_array_equal(np.asarray(private.params), np.asarray(plain.params))


def test_the_noise_std_is_z_clip_over_the_expected_participants():
    z, clip, expected = 1.5, 0.8, 4.0
    agg = dp_fedavg(clip, z, expected)
    deltas = {"a": jnp.zeros((3, 50)), "b": jnp.zeros((3, 2, 5))}
    draws = jax.vmap(lambda k: agg.apply(deltas, jnp.full(3, 0.25), jnp.ones(3), k,
                                         agg.init(deltas))[0])(
        jax.random.split(jax.random.key(0), 400))
    values = np.concatenate([np.ravel(draws["a"]), np.ravel(draws["b"])])   # 24,000 draws
    assert np.std(values) == pytest.approx(z * clip / expected, rel=0.02)
    assert abs(np.mean(values)) < 0.02 * z * clip / expected


def test_the_aggregator_without_noise_is_the_weighted_mean_on_a_nested_pytree():
    from fedsim.engine.aggregators import weighted_mean

    keys = jax.random.split(jax.random.key(0), 3)
    deltas = {"params": {"dense": {"kernel": jax.random.normal(keys[0], (5, 4, 3)),
                                   "bias": jax.random.normal(keys[1], (5, 3))},
                         "value_head": jax.random.normal(keys[2], (5, 3, 1))}}
    w, mask = jnp.full(5, 0.2), jnp.ones(5)
    agg = dp_fedavg(1e9, 0.0, 5.0)
    ours, _ = agg.apply(deltas, w, mask, jax.random.key(1), agg.init(deltas))
    plain, _ = weighted_mean().apply(deltas, w, mask, jax.random.key(1), ())
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_clipping_bounds_each_clients_contribution_over_the_whole_pytree():
    agg = dp_fedavg(1.0, 0.0, 2.0)
    deltas = {"a": jnp.asarray([[3.0, 0.0], [0.3, 0.0]]), "b": jnp.asarray([[4.0], [0.4]])}
    out, _ = agg.apply(deltas, jnp.asarray([0.5, 0.5]), jnp.ones(2), jax.random.key(0),
                       agg.init(deltas))
    # client 0 (norm 5) scaled to norm 1, client 1 (norm 0.5) unchanged, both weighted 1/2
    np.testing.assert_allclose(out["a"], [0.5 * 0.6 + 0.5 * 0.3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out["b"], [0.5 * 0.8 + 0.5 * 0.4], rtol=1e-6)
    # a weight above 1/E is capped (no client moves the sum by more than C/E)
    heavy, _ = agg.apply(deltas, jnp.asarray([2.0, 0.0]), jnp.ones(2), jax.random.key(0),
                         agg.init(deltas))
    np.testing.assert_allclose(heavy["a"], [0.5 * 0.6, 0.0], rtol=1e-6)


def test_adaptive_clipping_tracks_the_target_quantile_of_known_norms():
    rng = np.random.default_rng(0)
    m, dim = 200, 3
    for gamma in (0.3, 0.5, 0.8):
        agg = dp_fedavg(0.05, 0.0, m, AdaptiveClip(gamma, 0.2, m / 20))
        state = agg.init(None)
        for t in range(300):   # norms log-normal: median e^0 = 1
            norms = np.exp(rng.normal(0.0, 0.5, m))
            directions = rng.normal(size=(m, dim))
            d = directions / np.linalg.norm(directions, axis=1, keepdims=True) * norms[:, None]
            _, state = agg.apply({"x": jnp.asarray(d, jnp.float32)}, jnp.full(m, 1.0 / m),
                                 jnp.ones(m), jax.random.key(t), state)
        quantile = float(np.exp(0.5 * _normal_quantile(gamma)))
        assert float(state.clip) == pytest.approx(quantile, rel=0.1)


def _normal_quantile(q):
    from scipy import stats
    return stats.norm.ppf(q)


# ---- accounting --------------------------------------------------------------------------

@pytest.mark.parametrize("kind,K,rate,z,T,delta,accountant", [
    ("poisson", 5, 1.0, 1.0, 5, 1e-5, "rdp"),     # FedRLHF's regime: epsilon about 12
    ("poisson", 1000, 0.01, 1.0, 100, 1e-5, "rdp"),
    ("poisson", 1000, 0.01, 1.0, 100, 1e-5, "pld"),
    ("poisson", 100, 0.1, 0.7, 50, 1e-6, "pld"),
    ("fixed", 100, 0.1, 1.2, 30, 1e-5, "rdp"),
])
def test_epsilon_equals_dp_accountings_own_composition(kind, K, rate, z, T, delta, accountant):
    ours = accounting.epsilons(z, accounting.Sampling(kind, K, rate), [T // 2, T], delta,
                               accountant)
    gaussian = dpa.GaussianDpEvent(z)
    if kind == "poisson":
        event = dpa.PoissonSampledDpEvent(rate, gaussian)
        acc = (dpa.rdp.RdpAccountant() if accountant == "rdp" else dpa.pld.PLDAccountant())
    else:
        event = dpa.SampledWithoutReplacementDpEvent(K, round(rate * K), gaussian)
        acc = dpa.rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
    acc.compose(dpa.SelfComposedDpEvent(event, T))
    assert ours[1] == pytest.approx(acc.get_epsilon(delta), rel=1e-3)
    assert ours[0] < ours[1]
    if (kind, K, T) == ("poisson", 5, 5):
        assert 11 < ours[1] < 13


@pytest.mark.parametrize("target,kind,rate", [(8.0, "poisson", 1.0), (1.0, "poisson", 0.05),
                                              (3.0, "fixed", 0.1)])
def test_target_epsilon_is_hit_within_one_percent(target, kind, rate):
    sampling = accounting.Sampling(kind, 200, rate)
    z = accounting.calibrate_noise(target, sampling, 40, 1e-5)
    reached = accounting.epsilons(z, sampling, [40], 1e-5)[0]
    assert reached <= target and reached == pytest.approx(target, rel=0.01)


# ---- the one-run audit -------------------------------------------------------------------

def test_the_audits_p_value_and_bound_behave_as_a_test_should():
    # all 100 guesses right: a large bound; chance-level guessing: none
    assert epsilon_lower_bound(1000, 100, 100, 0.0) > 3.0
    assert epsilon_lower_bound(1000, 100, 55, 1e-5) == 0.0
    # the p-value grows with epsilon and with delta
    assert p_value(100, 50, 45, 1.0, 0.0) < p_value(100, 50, 45, 2.0, 0.0)
    assert p_value(100, 50, 45, 1.0, 0.0) < p_value(100, 50, 45, 1.0, 1e-3)
    # exactly DP data (randomised response at epsilon = 1) is not caught above 1, over seeds
    rng = np.random.default_rng(0)
    q = 1 / (1 + np.exp(-1.0))
    bounds = []
    for _ in range(200):
        included = rng.random(1000) < 0.5
        right = rng.random(1000) < q
        scores = np.where(included == right, 1.0, -1.0) + 1e-3 * rng.normal(size=1000)
        bounds.append(one_run_audit(scores, included, 0.0).epsilon_lower)
    assert np.mean(np.asarray(bounds) > 1.0) <= 0.05


def _audit_run(z, seeds=5, canaries=60, claimed=None):
    """A tabular run with canaries (S A = 400 parameters, tiny real updates), audited."""
    from fedsim.tabular.config import InstanceSpec, TabularRunConfig
    from fedsim.privacy.options import PrivacyOptions
    from fedsim.tabular.experiment import run_tabular

    config = TabularRunConfig(
        instance=InstanceSpec(num_clients=80, num_states=40, num_actions=10, seed=1),
        rounds=10, local_steps=1, lr="mei", num_seeds=seeds,
        privacy=PrivacyOptions(dp_clip=1.0, dp_noise=z, canaries=canaries))
    return run_tabular(config, progress=False)["summary"]


def test_the_canary_audit_detects_leakage_without_noise_and_stays_under_the_accountant():
    loud = _audit_run(0.0)
    perfect = epsilon_lower_bound(60, 30, 30, 1e-5, 0.05 / 4)
    assert loud["epsilon"] == float("inf")
    assert loud["audit"]["epsilon_lower"] >= 0.9 * perfect > 1.5
    for z in (1.0,):   # more noise levels, over 5 seeds each: `fedsim sweep privacy`
        quiet = _audit_run(z)
        assert all(a["epsilon_lower"] <= quiet["epsilon"]
                   for a in quiet["audit"]["per_seed"].values())
    # a mechanism that adds no noise but claims z = 30 is caught: the audit exceeds its claim
    claimed = accounting.epsilons(30.0, accounting.Sampling("fixed", 140, 1.0), [10], 1e-5)[0]
    assert loud["audit"]["epsilon_lower"] > claimed


# ---- the parameters-only boundary ----------------------------------------------------------

def test_the_server_receives_only_shared_parameter_deltas():
    """The aggregator's and the server update's inputs, recorded at trace time: deltas with
    the shared parameters' structure, (m,) weights and mask, the key and its own state; the
    clients' private state and personal parameters never reach them."""
    from fedsim.engine.aggregators import Aggregator, weighted_mean
    from fedsim.engine.algorithm import Algorithm, ServerUpdate, server_optimizer

    seen = {}
    inner, server = weighted_mean(), server_optimizer()

    def spy(deltas, weights, mask, key, state):
        seen["aggregator"] = (deltas, weights, mask, state)
        return inner.apply(deltas, weights, mask, key, state)

    def spy_server(params, aggregate, client_params, weights, state):
        seen["server"] = (aggregate, client_params)
        return server.apply(params, aggregate, client_params, weights, state)

    algorithm = Algorithm("spied", aggregator=Aggregator(inner.init, spy),
                          server_update=ServerUpdate(server.init, spy_server))
    instance = _instance()
    state, _ = engine_run(instance, LearnerSpec(), Federation("fedavg", 2),
                          step_sizes("constant", 2, 2, lr=0.5), algorithm=algorithm)
    params = jax.tree.structure(state.params)
    deltas, weights, mask, agg_state = seen["aggregator"]
    assert jax.tree.structure(deltas) == params
    assert jax.tree.leaves(deltas)[0].shape == (K,) + np.shape(state.params)
    assert weights.shape == mask.shape == (K,) and agg_state == ()
    aggregate, client_params = seen["server"]
    assert jax.tree.structure(aggregate) == params
    assert jax.tree.structure(client_params) == params
    private = jax.tree.leaves((state.clients.private, state.clients.personal,
                               state.clients.opt_state))
    sent = jax.tree.leaves(seen)
    assert not any(s is p for s in sent for p in private)


# ---- bad settings --------------------------------------------------------------------------

BAD = [
    ({"dp_clip": 0.0, "dp_noise": 1.0}, "dp_clip"),
    ({"dp_clip": 1.0, "dp_noise": -0.5}, "dp_noise"),
    ({"dp_clip": 1.0, "dp_noise": 1.0, "dp_delta": 1.0}, "dp_delta"),
    ({"dp_clip": 1.0, "dp_noise": 1.0, "dp_delta": 0.0}, "dp_delta"),
    ({"dp_clip": 1.0, "dp_noise": 1.0, "sampling": "poisson", "participation_rate": 0.0},
     "participation_rate"),
    ({"dp_clip": 1.0, "dp_noise": 1.0, "sampling": "poisson", "participation_rate": 1.5},
     "participation_rate"),
    ({"dp_clip": 1.0, "dp_noise": 1.0, "participation_rate": 0.5, "dp_accountant": "pld"},
     "dp_accountant"),
    ({"dp_clip": 1.0, "target_epsilon": 1e-9}, "target_epsilon"),
    ({"dp_adaptive_clip": True, "dp_noise": 3.0}, "dp_noise"),
    ({"dp_clip": 1.0, "dp_noise": 1.0, "canaries": 10}, "canaries"),
    ({"dp_clip": 1.0}, "dp_noise"),
    ({"dp_noise": 1.0}, "dp_noise"),
    ({"canaries": 4}, "canaries"),
]


@pytest.mark.parametrize("options,name", BAD)
def test_bad_privacy_settings_get_one_clear_error_before_compilation(options, name, monkeypatch):
    from fedsim.privacy.options import PrivacyOptions
    from fedsim.tabular.config import InstanceSpec, TabularRunConfig
    import fedsim.tabular.experiment as experiment

    monkeypatch.setattr(experiment, "make_trainer", lambda *a, **k: pytest.fail("compiled"))
    config = TabularRunConfig(instance=InstanceSpec(num_clients=10), rounds=5,
                              privacy=PrivacyOptions(**options))
    with pytest.raises(ConfigError) as error:
        experiment.run_tabular(config, progress=False)
    assert error.value.name.startswith(name), str(error.value)


def test_dp_needs_an_algorithm_that_aggregates_deltas():
    with pytest.raises(ConfigError, match="algorithm"):
        Federation("local", 1, dp=DPSettings()).validate(4)
    assert dataclasses.replace(DPSettings(), noise_multiplier=0.0).validate()


def test_movielens_dp_fedavg_reports_the_accountants_epsilon_per_round():
    from fedsim.movielens.config import ModelSpec, MovieLensRunConfig
    from fedsim.movielens.experiment import run_movielens
    from fedsim.privacy.options import PrivacyOptions

    config = MovieLensRunConfig(
        dataset="synthetic", clients=8, rounds=2, local_epochs=1, num_seeds=1,
        algorithms=("fedavg", "local"), model=ModelSpec(dim=4, hidden=8, batch=8, reward_steps=20),
        privacy=PrivacyOptions(dp_clip=0.5, dp_noise=1.0, sampling="poisson",
                               participation_rate=0.5))
    out = run_movielens(config, progress=False)
    expected = accounting.epsilons(1.0, accounting.Sampling("poisson", 8, 0.5), [1, 2], 1e-5)
    assert out["summary"]["epsilon"] == pytest.approx(expected[1])
    by_round = {(r["algorithm"], r["round"]): r["epsilon"] for r in out["rows"]}
    assert by_round[("fedavg", 1)] == pytest.approx(expected[0])
    assert by_round[("local", 2)] == ""   # the baselines run without DP
    fedavg = out["summary"]["results"][0]
    assert fedavg["privacy"]["sampling"] == "poisson" and 0 <= fedavg["test"]["accuracy"][0] <= 1
    # 8 of the data's users were clients: the others are the user-level attack's non-members
    assert out["summary"]["users_not_drawn"] > 0
    for model in ("global", "personal", "user_level"):
        for attack in ("loss", "calibrated"):
            auc_mean, _ = fedavg["membership"][model][attack]["auc"]
            assert 0 <= auc_mean <= 1


def test_membership_attack_metrics_separate_what_they_should():
    from fedsim.privacy.membership import attack_scores, auc, tpr_at_fpr

    rng = np.random.default_rng(0)
    same = rng.normal(size=(2, 4000))
    assert auc(same[0], same[1]) == pytest.approx(0.5, abs=0.02)
    assert tpr_at_fpr(same[0], same[1]) == pytest.approx(0.01, abs=0.006)
    assert auc(same[0] + 10, same[1]) == 1.0 and tpr_at_fpr(same[0] + 10, same[1]) == 1.0
    # an overfitted model (members' ratings fitted, non-members' not) is caught by the loss
    # attack; the calibrated one removes a per-user offset the plain one is fooled by
    label = rng.random((50, 20)) < 0.5
    sign = np.where(label, 1.0, -1.0)
    mask = np.ones((50, 20))
    fitted = attack_scores(3 * sign, label, mask, 0.3 * sign, label, mask)
    assert auc(*fitted["loss"]) > 0.95
    offset = rng.normal(size=(50, 1)) * 5   # per-user difficulty, the same for both parts
    noisy = rng.normal(size=(50, 20))
    users = attack_scores(sign * (offset + noisy + 0.5), label, mask,
                          sign * (offset + rng.normal(size=(50, 20))), label, mask)
    assert auc(*users["calibrated"]) > auc(*users["loss"])
    # user level: 100 member users fitted a little better than 100 others, each rating 20 of
    # 300 movies of very different difficulty; the per-movie calibration removes that spread
    from fedsim.privacy.membership import user_attack_scores

    difficulty = rng.exponential(3.0, 300)
    user = np.repeat(np.arange(200), 20)
    movie = rng.integers(0, 300, user.size)
    member = np.arange(200) < 100
    loss = difficulty[movie] + 0.3 * rng.normal(size=user.size) - 0.2 * member[user]
    scored = user_attack_scores(user, movie, loss, member)
    assert [len(part) for part in scored["loss"]] == [100, 100]
    assert auc(*scored["calibrated"]) > 0.95 > 0.8 > auc(*scored["loss"]) > 0.5
    same = user_attack_scores(user, movie, loss + 0.2 * member[user], member)
    assert abs(auc(*same["calibrated"]) - 0.5) < 0.12   # no membership signal: chance


def test_the_privacy_sweeps_checkers_fail_on_violating_results():
    from sweeps.privacy import make_config, summarize

    config = make_config(True)
    n = config["audit"]["canaries"]

    def results(loud, quiet, epsilon):
        row = lambda z, bound: {"kind": "audit", "noise_multiplier": z, "epsilon": epsilon,
                                "audit_epsilon_lower": bound}
        return {"audit-z0": {"rows": [row(0.0, loud)] * 5, "info": {"epsilon": math.inf}},
                "audit-z1": {"rows": [row(1.0, quiet)] * 5, "info": {"epsilon": epsilon}}}

    ceiling = epsilon_lower_bound(n, 2 * (n // 4), 2 * (n // 4), 1e-5, 0.05 / 4)
    good, _ = summarize(config, results(ceiling, 0.5, 3.0))
    assert all(v.passed for v in good)
    blind, _ = summarize(config, results(0.5 * ceiling, 0.5, 3.0))   # the audit misses leakage
    assert not blind[0].passed and blind[1].passed
    broken, _ = summarize(config, results(ceiling, 3.5, 3.0))   # the audit beats the accountant
    assert good[1].passed and not broken[1].passed


def test_the_privacy_sweeps_task_cells_and_their_figure(tmp_path):
    """A MovieLens cell of the full sweep (small synthetic data here), then the figure and
    table drawn from rows on disk, task panels included."""
    from figures import privacy_figures
    from fedsim.results import write_csv, write_json
    from sweeps.privacy import COLUMNS, make_config, run_cell

    config = make_config(False)
    config["movielens"] |= {"seeds": 2, "count_std": 1.0,   # 4 expected participants
                            "run": {"dataset": "synthetic", "clients": 8, "local_epochs": 1}}
    private = run_cell(config, {"kind": "movielens", "rate": 0.5, "z": 1.0, "rounds": 2})
    assert [r["seed"] for r in private["rows"]] == [0, 1]
    expected = accounting.epsilons(1.0, accounting.Sampling("poisson", 8, 0.5), [2], 1e-5)[0]
    assert private["info"]["epsilon"] == pytest.approx(expected)
    assert all(0 <= r["accuracy"] <= 1 and r["regime"] == "sampled" for r in private["rows"])
    rows = private["rows"] + [r | {"noise_multiplier": "", "epsilon": "", "accuracy": 0.6}
                              for r in private["rows"]]   # as the run without DP writes
    for z, eps in ((0.0, ""), (1.0, 19.0)):
        rows += [{"kind": "audit", "noise_multiplier": z, "epsilon": eps or "inf", "seed": s,
                  "audit_epsilon_lower": 1.0 + 0.1 * s} for s in range(3)]
    for z, eps, gap in (("", "", 0.2), (1.0, 3.0, 0.3)):
        rows += [{"kind": "utility", "regime": "fedrlhf", "clients": 5, "rate": 1.0,
                  "rounds": 30, "noise_multiplier": z, "epsilon": eps, "gap": gap + 0.01 * s,
                  "seed": s} for s in range(3)]
    for z, eps, reward in (("", "", 0.4), (1.0, 12.3, 0.35)):
        rows += [{"kind": "imdb", "regime": "all", "clients": 5, "rate": 1.0, "rounds": 5,
                  "noise_multiplier": z, "epsilon": eps, "reward": reward + 0.01 * s,
                  "sentiment": 0.5, "seed": s} for s in range(3)]
    write_json(tmp_path / "summary.json", {"sweep": "privacy"})
    write_json(tmp_path / "config.json", {"delta": 1e-5})
    tabular = [{c: "" for c in COLUMNS} | r for r in rows if r["kind"] in ("audit", "utility")]
    write_csv(tmp_path / "metrics.csv", COLUMNS, tabular)   # the quick sweep: no task panels
    assert "movielens" not in privacy_figures(tmp_path, tmp_path)[-1].read_text()
    write_csv(tmp_path / "metrics.csv", COLUMNS, [{c: "" for c in COLUMNS} | r for r in rows])
    written = privacy_figures(tmp_path, tmp_path)
    table = (tmp_path / "privacy_table.md").read_text()
    assert "| movielens: K | q | T | z |" in table and "| imdb: K |" in table
    assert "| 5 | 1 | 5 | 1 | 12.3 | 0.36 ± 0.025 | 0.5 ± 0 |" in table
    assert all(p.stat().st_size > 1000 for p in written if p.suffix != ".md")
