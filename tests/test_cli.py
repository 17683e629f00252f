"""`fedsim run tabular`: outputs, determinism, replay, and clear errors before compilation."""

from __future__ import annotations

import csv
import json

import jax
import numpy as np
import pytest

from fedsim.cli import main
from fedsim.reference import reference_run
from fedsim.rundir import read_config
from fedsim.tabular.mdp import make_instance
from fedsim.tabular.config import InstanceSpec

SMALL = ["--clients", "3", "--states", "4", "--actions", "3", "--rounds", "6", "--local-steps", "2",
         "--quiet"]


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_run_writes_results_and_same_seed_gives_same_bytes(tmp_path, capsys):
    args = SMALL + ["--gradient", "sampled", "--batch", "2", "--participants", "2", "--num-seeds", "2"]
    assert main(["run", "tabular", "--out", str(tmp_path / "a")] + args) == 0
    assert main(["run", "tabular", "--out", str(tmp_path / "b")] + args) == 0
    a, b = tmp_path / "a", tmp_path / "b"
    for name in ("metrics.csv", "clients.csv", "instance.npz"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert read_config(a / "config.json") == read_config(b / "config.json")   # less the run ids
    rows = _rows(a / "metrics.csv")
    assert len(rows) == 2 * 6 and {"round", "J", "J_star", "gap", "seed"} <= set(rows[0])
    for row in rows:
        assert abs(float(row["J_star"]) - float(row["J"]) - float(row["gap"])) < 1e-6
    summary = json.loads((a / "summary.json").read_text())
    assert summary["compile_seconds"] > 0 and summary["run_seconds"] > 0
    timing = summary["timing_this_attempt"]   # the device's rounds apart from the host's work
    assert timing["waiting_seconds"] + timing["host_seconds"] == pytest.approx(
        summary["run_seconds"]) and timing["host_seconds"] > 0
    assert 0 < timing["host_unhidden_seconds"] <= timing["host_seconds"]
    assert timing["host_unhidden_fraction"] == pytest.approx(
        timing["host_unhidden_seconds"] / summary["run_seconds"])
    assert "compile" in capsys.readouterr().out
    # Re-running the identical config into the same folder is allowed and reproduces it.
    before = (a / "metrics.csv").read_bytes()
    assert main(["run", "tabular", "--out", str(a)] + args) == 0
    assert (a / "metrics.csv").read_bytes() == before


def test_instance_npz_replays_with_the_reference(tmp_path):
    out = tmp_path / "run"
    main(["run", "tabular", "--out", str(out), "--gradient", "sampled", "--batch", "2",
          "--horizon", "10", "--participants", "2", "--schedule", "inverse_time", "--beta", "2",
          "--lam-grid", "0.1", "0.9", "--weights", "samples", "--transition-heterogeneity", "0.3",
          "--seed", "4"] + SMALL)
    arrays = dict(np.load(out / "instance.npz"))
    assert arrays["P"].shape == (3, 4, 3, 4) and arrays["step_sizes"].shape == (6, 2)
    ref = reference_run(arrays, jax.random.key(int(arrays["seeds"][0])),
                        algorithm=str(arrays["algorithm"]), participants=int(arrays["participants"]),
                        gradient=str(arrays["gradient"]), batch=int(arrays["batch"]),
                        horizon=int(arrays["horizon"]), estimator=str(arrays["estimator"]))
    logged = np.asarray([float(r["J"]) for r in _rows(out / "metrics.csv")])
    np.testing.assert_allclose(logged, ref["J"], rtol=1e-5, atol=1e-5)


def test_more_clients_leave_existing_clients_streams_unchanged(tmp_path):
    """Client k's MDP and sampled trajectories do not depend on K (local-only isolates them)."""
    small = make_instance(InstanceSpec(num_clients=3, transition_heterogeneity=0.5, seed=2))
    large = make_instance(InstanceSpec(num_clients=5, transition_heterogeneity=0.5, seed=2))
    for name in ("P", "R0", "H", "n_samples"):
        np.testing.assert_array_equal(getattr(small, name), getattr(large, name)[:3])
    common = ["--algorithm", "local", "--gradient", "sampled", "--batch", "2", "--horizon", "8",
              "--transition-heterogeneity", "0.5", "--rounds", "3", "--quiet"]
    main(["run", "tabular", "--out", str(tmp_path / "k3"), "--clients", "3"] + common)
    main(["run", "tabular", "--out", str(tmp_path / "k5"), "--clients", "5"] + common)
    k3 = [r for r in _rows(tmp_path / "k3" / "clients.csv")]
    k5 = [r for r in _rows(tmp_path / "k5" / "clients.csv") if int(r["client"]) < 3]
    assert [r["J_personal_client"] for r in k3] == [r["J_personal_client"] for r in k5]


BAD = [
    (["--clients", "0"], "--clients (K) = 0", "integer >= 1"),
    (["--states", "0"], "--states (S) = 0", "integer >= 1"),
    (["--actions", "1"], "--actions (A) = 1", "integer >= 2"),
    (["--gamma", "1.0"], "--gamma = 1.0", "[0.0, 1.0)"),
    (["--gamma", "-0.1"], "--gamma = -0.1", "[0.0, 1.0)"),
    (["--lam", "-0.5"], "--lam = -0.5", ">= 0"),
    (["--lam", "1.5", "--reward-form", "convex"], "--lam = 1.5", "[0, 1] with the convex"),
    (["--lam-grid", "-0.2", "0.9"], "--lam-grid = [-0.2, 0.9]", "each be >= 0"),
    (["--weights", "1,-1,1"], "--weights = [1.0, -1.0, 1.0]", "non-negative"),
    (["--weights", "0,0,0"], "--weights = [0.0, 0.0, 0.0]", "not be all zero"),
    (["--weights", "1,1"], "--weights = [1.0, 1.0]", "K = 3 numbers"),
    (["--participants", "0"], "--participants (m) = 0", "[1, 3]"),
    (["--participants", "4"], "--participants (m) = 4", "[1, 3]"),
    (["--local-steps", "0"], "--local-steps (E) = 0", "integer >= 1"),
    (["--rounds", "0"], "--rounds (T) = 0", "integer >= 1"),
    (["--lr", "0"], "--lr = 0.0", "(0.0, inf]"),
    (["--lr", "-1"], "--lr = -1.0", "(0.0, inf]"),
    (["--schedule", "inverse_time", "--beta", "0"], "--beta = 0.0", "(0.0, inf]"),
    (["--schedule", "inverse_time", "--gamma0", "-1"], "--gamma0 = -1.0", "(0.0, inf]"),
    (["--server-lr", "0", "--server-opt", "sgd"], "--server-lr = 0.0", "(0.0, inf]"),
    (["--batch", "0", "--gradient", "sampled"], "--batch (B) = 0", "integer >= 1"),
    (["--horizon", "0", "--gradient", "sampled"], "--horizon (H) = 0", "integer >= 1"),
    (["--reg", "entropy"], "--tau = 0.0", "> 0 with reg = entropy"),
    (["--algorithm", "local", "--server-opt", "adam"], "--server-opt", "local algorithm"),
    (["--client-block", "0"], "--client-block = 0", "integer >= 1"),
    (["--log-points", "0"], "--log-points = 0", "integer >= 1"),
    # {n}: the devices the test's process has, its JAX backend started before the command
    # (else the command would make as many CPU devices as asked for)
    (["--devices", "0"], "--devices = 0", "[1, {n}]"),
    (["--devices", "{n+1}"], "--devices = {n+1}", "[1, {n}]"),
    (["--algorithm", "fedkl", "--kl-coef", "-1"], "beta", "[0.0, inf]"),
    (["--algorithm", "fedkl", "--self-weight", "1.5"], "alpha", "[0.0, 1.0]"),
    (["--algorithm", "fedkl", "--peer-weights", "0.5,0.6,0.2,0.3,0.3,0.4,0.3,0.3,0.4"],
     "--peer-weights", "row 0 sums to 1.3"),
    (["--algorithm", "fedkl", "--peer-weights", "1,0,0,1"], "--peer-weights", "K x K = 9"),
    (["--algorithm", "fedkl", "--peer-weights", "2,-1,0,0,1,0,0,0,1"], "--peer-weights",
     "non-negative"),
    (["--kl-coef", "0.5"], "kl-coef", "only with --algorithm fedkl"),
    (["--algorithm", "fedkl", "--peer-weights", "1,0,0,0,1,0,0,0,1", "--graph", "ring"], "graph",
     "without --peer-weights"),
    (["--algorithm", "fedkl", "--server-opt", "adam"], "--server-opt", "fedkl algorithm"),
    (["--algorithm", "fedkl", "--aggregator", "median"], "algorithm", "fedavg or fedprox"),
    (["--communicate-every", "3"], "communicate-every", "only with --algorithm fedkl"),
    (["--algorithm", "fedkl", "--communicate-every", "0"], "--communicate-every", ">= 1"),
    (["--algorithm", "fedkl", "--communicate-every", "3", "--local-steps", "2"],
     "communicate-every", "only without --local-steps"),
    (["--algorithm", "fedkl", "--return-temperature", "2"], "return-temperature",
     "with --peer-weighting returns"),
    (["--algorithm", "fedkl", "--peer-weighting", "returns", "--return-temperature", "-1"],
     "--return-temperature", "(0.0, inf]"),
]


@pytest.fixture
def no_compilation(monkeypatch):
    """Any attempt to jit fails the test: errors must come before compilation."""
    def refuse(*args, **kwargs):
        raise AssertionError("compilation started before the input was validated")

    monkeypatch.setattr(jax, "jit", refuse)


@pytest.mark.parametrize("extra,named,allowed", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_gets_one_clear_error_before_compilation(extra, named, allowed, tmp_path, capsys,
                                                           no_compilation):
    n = len(jax.devices())
    fill = lambda text: text.replace("{n+1}", str(n + 1)).replace("{n}", str(n))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "tabular", "--out", str(tmp_path / "x")] + SMALL + list(map(fill, extra)))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("fedsim: error: ")
    assert fill(named) in err and fill(allowed) in err, err
    assert not (tmp_path / "x").exists()


def test_output_folder_holding_another_run_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "tabular", "--out", str(out)] + SMALL) == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "tabular", "--out", str(out)] + SMALL + ["--lam", "0.7"])
    assert exit_info.value.code == 2
    assert "holds a different run (differs in: instance.lam)" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main(["run", "tabular", "--out", str(foreign)] + SMALL)
    assert "holds other files" in capsys.readouterr().err


def test_nonfinite_run_stops_naming_the_round(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "tabular", "--out", str(tmp_path / "nan"), "--r-max", "3e38"] + SMALL)
    assert exit_info.value.code == 3
    assert "NaN/Inf in round 1 " in capsys.readouterr().err


def test_log_points_keep_log_spaced_rounds_of_the_same_run(tmp_path):
    """--log-points evaluates only log-spaced rounds; training is unchanged."""
    args = ["--clients", "3", "--states", "4", "--actions", "3", "--rounds", "40", "--gradient",
            "sampled", "--batch", "2", "--quiet"]
    assert main(["run", "tabular", "--out", str(tmp_path / "all")] + args) == 0
    assert main(["run", "tabular", "--out", str(tmp_path / "log"), "--log-points", "6"] + args) == 0
    every = {r["round"]: float(r["J"]) for r in _rows(tmp_path / "all" / "metrics.csv")}
    sparse = {r["round"]: float(r["J"]) for r in _rows(tmp_path / "log" / "metrics.csv")}
    assert list(sparse) == ["1", "2", "4", "9", "19", "40"]
    for t, J in sparse.items():
        assert abs(J - every[t]) < 1e-6


def test_devices_on_a_cpu_makes_that_many_cpu_devices(tmp_path):
    """`--devices 2` on a CPU starts JAX with 2 CPU devices and splits the clients over them
    (a new process: the device count is fixed when JAX starts its backend), with the
    single-device run's results."""
    from fedsim.engine.sharding import host_cores

    import os
    import subprocess
    import sys

    env = os.environ | {"JAX_PLATFORMS": "cpu"}
    for devices in (1, 2):
        done = subprocess.run([sys.executable, "-m", "fedsim", "run", "tabular", "--devices",
                               str(devices), "--out", str(tmp_path / str(devices))] + SMALL,
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    one, two = (_rows(tmp_path / str(d) / "metrics.csv") for d in (1, 2))
    for a, b in zip(one, two):
        assert abs(float(a["J"]) - float(b["J"])) < 1e-5
    for devices in (1, 2):
        attempt = json.loads((tmp_path / str(devices) / "provenance.json").read_text())[
            "attempts"][-1]
        # --devices 1 also makes a spare device for the evaluation where there are 2 cores
        assert (attempt["device_platform"], attempt["device_count"]) == (
            "cpu", max(devices, min(2, host_cores())))


def test_evaluation_in_a_program_of_its_own_gives_the_same_rows(monkeypatch):
    """run_tabular evaluates a chunk's checkpoints in a program of their own where its states
    fit SNAPSHOT_BYTES, else inside the rounds' program: the same rows (float32 rounding)."""
    from fedsim.tabular import experiment
    from fedsim.tabular.config import LearnerSpec, TabularRunConfig

    config = TabularRunConfig(instance=InstanceSpec(num_clients=3, num_states=4, num_actions=3),
                              learner=LearnerSpec(), rounds=7, local_steps=2, lr=0.5,
                              num_seeds=2)
    split = experiment.run_tabular(config, progress=False)["rows"]
    monkeypatch.setattr(experiment, "SNAPSHOT_BYTES", 0)
    in_scan = experiment.run_tabular(config, progress=False)["rows"]
    assert len(split) == len(in_scan) == 14
    for a, b in zip(split, in_scan):
        assert (a["seed"], a["round"]) == (b["seed"], b["round"])
        for column in ("J", "J0", "J_personal"):
            assert abs(float(a[column]) - float(b[column])) < 1e-5
