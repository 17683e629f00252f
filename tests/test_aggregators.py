"""Aggregators, dropout and Byzantine clients: the engine against the plain reference (1e-5),
the reference shown to fail when a deliberate bug is put into it, bad settings refused before
compilation, and the robustness demonstration with seeds."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fedsim.reference as R
from conftest import engine_run, reference_arrays, small_instance
from fedsim.engine import Federation, step_sizes
from fedsim.engine.aggregators import coordinate_median, trimmed_mean, weighted_mean
from fedsim.errors import ConfigError
from fedsim.tabular.config import LearnerSpec

TOL = dict(rtol=1e-5, atol=1e-5)
K = 6


def _instance():
    return small_instance(num_clients=K, transition_heterogeneity=0.5,
                          reward_heterogeneity=0.5, lam_grid=(0.1, 2.0))


def _compare(fed: Federation, gradient: str, seed: int = 3, reference=R.reference_run):
    instance = _instance()
    learner = LearnerSpec(gradient=gradient, batch=2, horizon=8)
    lrs = step_sizes("constant", 3, fed.local_steps, lr=0.5)
    state, metrics = engine_run(instance, learner, fed, lrs, seed=seed)
    ref = reference(reference_arrays(instance, lrs), jax.random.key(seed),
                    algorithm=fed.algorithm, participants=fed.participants, gradient=gradient,
                    batch=2, horizon=8, aggregator=fed.aggregator, trim=fed.trim,
                    dropout=fed.dropout, byzantine=fed.byzantine, attack=fed.attack,
                    attack_scale=fed.attack_scale, stragglers=fed.stragglers, mu=fed.mu)
    return state, metrics, ref


def _close(state, metrics, ref) -> bool:
    return (np.allclose(np.asarray(state.params), ref["theta"], **TOL)
            and np.allclose(np.asarray(state.clients.params), ref["client_thetas"], **TOL)
            and np.allclose(metrics["J"], ref["J"], **TOL))


MODES = {  # participation: all, m of K sampled, dropout, both
    "all": {}, "sampled": {"participants": 4}, "dropout": {"dropout": 0.3},
    "sampled+dropout": {"participants": 4, "dropout": 0.3}}
AGGREGATORS = {"mean": {}, "median": {"aggregator": "median"},
               "trimmed_mean": {"aggregator": "trimmed_mean", "trim": 0.2}}
FAULTS = {"honest": {}, "sign_flip": {"byzantine": (1,), "attack": "sign_flip"},
          "scale": {"byzantine": (1, 4), "attack": "scale", "attack_scale": 3.0},
          "noise": {"byzantine": (4,), "attack": "noise", "attack_scale": 0.5}}


@pytest.mark.parametrize("algorithm,aggregator,mode,gradient", list(itertools.product(
    ["fedavg", "fedprox"], AGGREGATORS, MODES, ["exact", "sampled"])))
def test_engine_equals_reference_for_every_aggregator_and_participation(algorithm, aggregator,
                                                                        mode, gradient):
    fed = Federation(algorithm, 2, **AGGREGATORS[aggregator], **MODES[mode],
                     mu=0.6 if algorithm == "fedprox" else 0.0)
    state, metrics, ref = _compare(fed, gradient)
    assert _close(state, metrics, ref)
    assert not np.allclose(ref["theta"], _instance().theta0)


@pytest.mark.parametrize("fault,aggregator", [("sign_flip", "median"), ("scale", "mean"),
                                             ("noise", "trimmed_mean"), ("sign_flip", "mean")])
def test_engine_equals_reference_with_byzantine_clients(fault, aggregator):
    extra = {"trim": 0.34} if aggregator == "trimmed_mean" else {}
    fed = Federation("fedavg", 2, **{**AGGREGATORS[aggregator], **extra}, **FAULTS[fault],
                     participants=5)
    assert _close(*_compare(fed, "sampled"))


@pytest.mark.parametrize("algorithm,participants,gradient", [
    ("fedavg", None, "exact"), ("fedavg", 4, "sampled"), ("local", None, "sampled"),
    ("local", 4, "exact"), ("fedprox", 4, "sampled")])
def test_engine_equals_reference_with_stragglers(algorithm, participants, gradient):
    fed = Federation(algorithm, 4, participants=participants, stragglers=0.5,
                     mu=0.5 if algorithm == "fedprox" else 0.0)
    assert _close(*_compare(fed, gradient))


@pytest.mark.parametrize("aggregator,mode", [("median", "sampled+dropout"),
                                             ("trimmed_mean", "dropout")])
def test_fedprox_equals_reference_with_robust_aggregation_and_faults(aggregator, mode):
    fed = Federation("fedprox", 2, **AGGREGATORS[aggregator], **MODES[mode], mu=0.6,
                     byzantine=(4,), attack="scale", attack_scale=2.0)
    assert _close(*_compare(fed, "exact"))


def _buggy(**bugs):
    """The reference with one deliberate bug."""
    def run(arrays, key, **kwargs):
        saved = R.aggregate, R.attacked
        if "trim_count" in bugs:   # trims one value too many on each side
            def aggregate(deltas, weights, arrived, aggregator="mean", trim=0.0):
                if aggregator == "trimmed_mean":
                    kept = np.sort(np.stack([d for d, a in zip(deltas, arrived) if a]), axis=0)
                    cut = int(np.floor(trim * len(kept))) + 1
                    return kept[cut:len(kept) - cut].mean(axis=0)
                return saved[0](deltas, weights, arrived, aggregator, trim)
            R.aggregate = aggregate
        if "median_weighted" in bugs:   # a weighted mean where the median belongs
            R.aggregate = lambda d, w, a, aggregator="mean", trim=0.0: saved[0](d, w, a, "mean")
        if "dropout_ignored" in bugs:
            R.aggregate = lambda d, w, a, aggregator="mean", trim=0.0: saved[0](
                d, w, np.ones_like(a), aggregator, trim)
        if "attack_sign" in bugs:   # sends +c instead of -c times the honest delta
            R.attacked = lambda delta, attack, scale, key: scale * delta
        if "stragglers_ignored" in bugs:
            kwargs = {**kwargs, "stragglers": 0.0}
        try:
            return R.reference_run(arrays, key, **kwargs)
        finally:
            R.aggregate, R.attacked = saved

    return run


@pytest.mark.parametrize("bug,fed", [
    ("trim_count", Federation("fedavg", 2, aggregator="trimmed_mean", trim=0.2)),
    ("median_weighted", Federation("fedavg", 2, aggregator="median")),
    ("dropout_ignored", Federation("fedavg", 2, dropout=0.3)),
    ("attack_sign", Federation("fedavg", 2, byzantine=(1,))),
    ("stragglers_ignored", Federation("fedavg", 4, stragglers=0.5)),
])
def test_each_deliberate_bug_in_the_reference_breaks_the_comparison(bug, fed):
    assert _close(*_compare(fed, "exact"))
    assert not _close(*_compare(fed, "exact", reference=_buggy(**{bug: True})))


def test_aggregators_on_known_values():
    deltas = {"x": jnp.asarray([[1.0], [2.0], [3.0], [100.0], [-50.0]])}
    w, key = jnp.full(5, 0.2), jax.random.key(0)
    every, some = jnp.ones(5), jnp.asarray([1.0, 1, 1, 0, 0])
    value = lambda agg, mask: float(agg.apply(deltas, w, mask, key, ())[0]["x"][0])
    assert value(weighted_mean(), every) == pytest.approx(11.2)
    assert value(weighted_mean(), some) == pytest.approx(2.0)   # renormalised to the arrived
    assert value(coordinate_median(), every) == pytest.approx(2.0)
    assert value(coordinate_median(), jnp.asarray([1.0, 1, 1, 1, 0])) == pytest.approx(2.5)
    assert value(trimmed_mean(0.2), every) == pytest.approx(2.0)   # drops 100 and -50
    assert value(trimmed_mean(0.0), every) == pytest.approx(11.2)
    for agg in (weighted_mean(), coordinate_median(), trimmed_mean(0.2)):
        assert value(agg, jnp.zeros(5)) == 0.0   # nobody arrived: the parameters stay
    # Too few arrived to trim: floor(0.45 n) < n / 2 always leaves at least one value, so
    # with 1 or 2 arrivals nothing is cut and the trimmed mean is their plain mean.
    assert value(trimmed_mean(0.45), jnp.asarray([0.0, 0, 1, 0, 0])) == pytest.approx(3.0)
    assert value(trimmed_mean(0.45), jnp.asarray([1.0, 0, 0, 1, 0])) == pytest.approx(50.5)
    assert value(trimmed_mean(0.45), jnp.asarray([1.0, 1, 1, 0, 0])) == pytest.approx(2.0)


def test_a_round_where_every_client_drops_leaves_the_parameters_and_is_counted():
    instance = _instance()
    lrs = step_sizes("constant", 6, 2, lr=0.5)
    state, _ = engine_run(instance, LearnerSpec(), Federation("fedavg", 2, dropout=0.999), lrs)
    assert int(state.empty_rounds) >= 5
    ref = R.reference_run(reference_arrays(instance, lrs), jax.random.key(0), dropout=0.999)
    np.testing.assert_allclose(np.asarray(state.params), ref["theta"], **TOL)


@pytest.mark.parametrize("fed,named", [
    (Federation("fedavg", 2, aggregator="trimmed_mean", trim=0.5), "trim"),
    (Federation("fedavg", 2, aggregator="trimmed_mean", trim=-0.1), "trim"),
    (Federation("fedavg", 2, aggregator="geometric"), "aggregator"),
    (Federation("fedavg", 2, dropout=1.0), "dropout"),
    (Federation("fedavg", 2, dropout=-0.1), "dropout"),
    (Federation("fedavg", 2, aggregator="median", byzantine=(0, 1, 2)), "byzantine"),
    (Federation("fedavg", 2, aggregator="trimmed_mean", trim=0.1, byzantine=(0, 1)), "trim"),
    (Federation("fedavg", 2, byzantine=(9,)), "byzantine"),
    (Federation("fedavg", 2, byzantine=(0,), attack="swap"), "attack"),
    (Federation("fedavg", 2, byzantine=(0,), attack="scale", attack_scale=1.0), "attack_scale"),
    (Federation("fedavg", 2, byzantine=(0,), attack_scale=-2.0), "attack_scale"),
    (Federation("centralized", 2, aggregator="median"), "algorithm"),
    (Federation("local", 2, dropout=0.2), "algorithm"),
    (Federation("fedavg", 1, stragglers=0.5), "stragglers"),
    (Federation("fedavg", 2, stragglers=1.5), "stragglers"),
    (Federation("centralized", 2, stragglers=0.5), "algorithm"),
    (Federation("fedprox", 2, mu=-0.1), "mu"),
    (Federation("fedprox", 2, mu=float("nan")), "mu"),
    (Federation("fedavg", 2, mu=0.5), "mu"),
])
def test_bad_robustness_settings_are_refused_before_compilation(fed, named):
    with pytest.raises(ConfigError) as error:
        fed.validate(K)
    assert error.value.name == named


ROBUST = {"mean": {}, "median": {"aggregator": "median"},
          "trimmed_mean": {"aggregator": "trimmed_mean", "trim": 0.2}}


def robustness_gaps(seeds=(0, 1, 2), rounds: int = 200) -> dict:
    """Final gaps J* - J(theta_T) on 10-client instances (seeds: instance seeds; exact
    gradients, E = 2, step 1, lambda = 0.05), honest and with 20% sign-flipping clients
    (c = 2.5, FedPG-BR's attack), for each aggregator: {(f, aggregator): (seeds,)}."""
    from fedsim.engine.faults import byzantine_clients
    from fedsim.tabular import oracles
    from fedsim.tabular.task import regularizer

    learner, lrs = LearnerSpec(), step_sizes("constant", rounds, 2, lr=1.0)
    gaps = {}
    for seed in seeds:
        instance = small_instance(num_clients=10, num_states=5, num_actions=3, lam=0.05,
                                  lam_grid=None, weights="uniform", init="zero", seed=seed)
        J_star = oracles.optimal_value(instance, regularizer(learner, instance)).J_star
        attackers = tuple(int(k) for k in np.flatnonzero(byzantine_clients(10, 0.2, seed)))
        for f, byzantine in ((0.0, ()), (0.2, attackers)):
            for name, extra in ROBUST.items():
                fed = Federation("fedavg", 2, byzantine=byzantine, **extra)
                J = engine_run(instance, learner, fed, lrs, seed=seed)[1]["J"][-1]
                gaps.setdefault((f, name), []).append(J_star - float(J))
    return {key: np.asarray(value) for key, value in gaps.items()}


def test_median_and_trimmed_mean_resist_sign_flipping_clients():
    """With 20% sign-flipping clients FedAvg's final gap is far worse than the median's and
    the trimmed mean's; with f = 0 all three agree closely (means over 3 instance seeds)."""
    gaps = {key: value.mean() for key, value in robustness_gaps().items()}
    for name in ("median", "trimmed_mean"):
        assert gaps[0.2, "mean"] > 3 * gaps[0.2, name], gaps
        assert abs(gaps[0.0, name] - gaps[0.0, "mean"]) < 0.25 * gaps[0.0, "mean"], gaps


def test_robust_cli_run_replays_from_instance_npz(tmp_path):
    """instance.npz records the aggregator, the trim, the Byzantine mask, the attack and the
    realised per-round masks; the reference replays the run from them alone."""
    from fedsim.cli import main

    out = tmp_path / "robust"
    assert main(["run", "tabular", "--out", str(out), "--clients", "6", "--states", "4",
                 "--actions", "3", "--rounds", "5", "--local-steps", "2", "--gradient", "sampled",
                 "--batch", "2", "--horizon", "8", "--aggregator", "trimmed_mean", "--trim",
                 "0.34", "--byzantine", "0.3", "--attack", "noise", "--attack-scale", "0.5",
                 "--dropout", "0.3", "--stragglers", "0.5", "--participants", "5",
                 "--quiet"]) == 0
    a = dict(np.load(out / "instance.npz"))
    assert a["byzantine"].dtype == bool and a["byzantine"].sum() == 2
    assert a["arrived"].shape == (1, 5, 6) and (a["arrived"].sum(-1) <= 5).all()
    assert a["steps_done"].shape == (1, 5, 6) and set(np.unique(a["steps_done"])) <= {0, 1, 2}
    assert ((a["steps_done"] > 0).sum(-1) == 5).all() and (a["steps_done"] == 1).any()
    ref = R.reference_run(a, jax.random.key(int(a["seeds"][0])), participants=int(a["participants"]),
                          gradient=str(a["gradient"]), batch=int(a["batch"]),
                          horizon=int(a["horizon"]), estimator=str(a["estimator"]),
                          aggregator=str(a["aggregator"]), trim=float(a["trim"]),
                          byzantine=tuple(int(k) for k in np.flatnonzero(a["byzantine"])),
                          attack=str(a["attack"]), attack_scale=float(a["attack_scale"]),
                          arrived=a["arrived"][0], steps_done=a["steps_done"][0])
    import csv
    with open(out / "metrics.csv") as f:
        logged = [float(r["J"]) for r in csv.DictReader(f)]
    np.testing.assert_allclose(logged, ref["J"], **TOL)
