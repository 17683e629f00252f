"""Every bad input we know of ends in one line naming what is wrong, exit status 2, before any
compilation, and without creating the results folder.

`python tests/test_bad_inputs.py` prints each input with its message (a table for notes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

T = ["run", "tabular", "--clients", "3", "--states", "4", "--actions", "3", "--quiet"]
M = ["run", "movielens", "--dataset", "synthetic", "--quiet"]
SAMPLED = ["--gradient", "sampled"]

# (arguments, a fragment the message must hold); OUT stands for a fresh folder, and FILE,
# FOREIGN, OTHER_RUN, BAD_JSON, BAD_ZIP, BAD_FOLDER for the fixtures made below.
CASES = [
    # tabular: the instance
    (T + ["--clients", "0"], "--clients (K) = 0"),
    (T + ["--clients", "-1"], "--clients (K) = -1"),
    (T + ["--clients", "1.5"], "invalid integer value: '1.5'"),
    (T + ["--clients", "abc"], "invalid integer value: 'abc'"),
    (T + ["--clients", ""], "invalid integer value: ''"),
    (T + ["--states", "0"], "--states (S) = 0"),
    (T + ["--states", "x"], "invalid integer value: 'x'"),
    (T + ["--actions", "1"], "--actions (A) = 1"),
    (T + ["--actions", "0"], "--actions (A) = 0"),
    (T + ["--gamma", "1"], "--gamma = 1.0"),
    (T + ["--gamma", "1.5"], "--gamma = 1.5"),
    (T + ["--gamma", "-0.1"], "--gamma = -0.1"),
    (T + ["--gamma", "nan"], "--gamma = nan"),
    (T + ["--gamma", "inf"], "--gamma = inf"),
    (T + ["--gamma", "0.9x"], "invalid float value: '0.9x'"),
    (T + ["--transition-heterogeneity", "-0.1"], "--transition-heterogeneity = -0.1"),
    (T + ["--transition-heterogeneity", "1.1"], "--transition-heterogeneity = 1.1"),
    (T + ["--transition-heterogeneity", "nan"], "--transition-heterogeneity = nan"),
    (T + ["--reward-heterogeneity", "2"], "--reward-heterogeneity = 2.0"),
    (T + ["--branching", "0"], "--branching = 0"),
    (T + ["--branching", "30"], "--branching = 30"),
    (T + ["--r-max", "-1"], "--r-max = -1.0"),
    (T + ["--r-max", "nan"], "--r-max = nan"),
    (T + ["--h-max", "-1"], "--h-max = -1.0"),
    (T + ["--h-max", "inf"], "--h-max = inf"),
    (T + ["--lam", "-0.5"], "--lam = -0.5"),
    (T + ["--lam", "nan"], "--lam = nan"),
    (T + ["--lam", "inf"], "--lam = inf"),
    (T + ["--lam-grid", "-0.2", "0.9"], "--lam-grid = [-0.2, 0.9]"),
    (T + ["--lam-grid", "0.1"], "--lam-grid: expected 2 arguments"),
    (T + ["--lam-grid", "0.1", "1.5", "--reward-form", "convex"], "--lam-grid = [0.1, 1.5]"),
    (T + ["--lam", "1.5", "--reward-form", "convex"], "--lam = 1.5"),
    (T + ["--reward-form", "multiplicative"], "invalid choice: 'multiplicative'"),
    (T + ["--weights", "1,-1,1"], "--weights = [1.0, -1.0, 1.0]"),
    (T + ["--weights", "0,0,0"], "--weights = [0.0, 0.0, 0.0]"),
    (T + ["--weights", "1,1"], "must hold K = 3 numbers"),
    (T + ["--weights", "a,b,c"], "invalid list of numbers value: 'a,b,c'"),
    (T + ["--weights", "nan,1,1"], "must be finite and non-negative"),
    (T + ["--weights", "inf,1,1"], "must be finite and non-negative"),
    (T + ["--start", "corner"], "invalid choice: 'corner'"),
    (T + ["--init", "ones"], "invalid choice: 'ones'"),
    (T + ["--instance-seed", "-5"], "--instance-seed = -5"),
    (T + ["--instance-seed", "x"], "invalid integer value: 'x'"),
    # tabular: the learner
    (T + ["--gradient", "natural"], "invalid choice: 'natural'"),
    (T + SAMPLED + ["--batch", "0"], "--batch (B) = 0"),
    (T + SAMPLED + ["--batch", "-3"], "--batch (B) = -3"),
    (T + SAMPLED + ["--horizon", "0"], "--horizon (H) = 0"),
    (T + SAMPLED + ["--estimator", "ppo"], "invalid choice: 'ppo'"),
    (T + ["--reg", "l2"], "invalid choice: 'l2'"),
    (T + ["--reg", "entropy"], "--tau = 0.0"),
    (T + ["--reg", "kl", "--tau", "-1"], "--tau = -1.0"),
    (T + ["--reg", "entropy", "--tau", "nan"], "--tau = nan"),
    # tabular: federation and schedule
    (T + ["--algorithm", "scaffold"], "invalid choice: 'scaffold'"),
    (T + ["--algorithm", "fedprox", "--mu", "-1"], "--mu = -1.0"),
    (T + ["--algorithm", "fedprox", "--mu", "nan"], "--mu = nan"),
    (T + ["--mu", "0.5"], "--mu = 0.5 is not allowed: only with --algorithm fedprox"),
    (T + ["--rounds", "0"], "--rounds (T) = 0"),
    (T + ["--rounds", "-5"], "--rounds (T) = -5"),
    (T + ["--rounds", "1.5"], "invalid integer value: '1.5'"),
    (T + ["--local-steps", "0"], "--local-steps (E) = 0"),
    (T + ["--participants", "0"], "--participants (m) = 0"),
    (T + ["--participants", "4"], "--participants (m) = 4"),
    (T + ["--participants", "-1"], "--participants (m) = -1"),
    (T + ["--schedule", "linear"], "invalid choice: 'linear'"),
    (T + ["--lr", "0"], "--lr = 0.0"),
    (T + ["--lr", "-1"], "--lr = -1.0"),
    (T + ["--lr", "nan"], "--lr = nan"),
    (T + ["--lr", "inf"], "--lr = inf"),
    (T + ["--lr", "fast"], "invalid number or \"mei\" value: 'fast'"),
    (T + ["--schedule", "inverse_time", "--beta", "0"], "--beta = 0.0"),
    (T + ["--schedule", "inverse_time", "--beta=-inf"], "--beta = -inf"),
    (T + ["--schedule", "inverse_time", "--gamma0", "-1"], "--gamma0 = -1.0"),
    (T + ["--schedule", "cosine", "--lr", "-2"], "--lr = -2.0"),
    (T + ["--server-opt", "lamb"], "invalid choice: 'lamb'"),
    (T + ["--server-opt", "sgd", "--server-lr", "0"], "--server-lr = 0.0"),
    (T + ["--server-opt", "adam", "--server-lr", "-1"], "--server-lr = -1.0"),
    (T + ["--algorithm", "local", "--server-opt", "adam"], "local algorithm"),
    # tabular: the run
    (T + ["--seed", "-1"], "--seed = -1"),
    (T + ["--seed", "x"], "invalid integer value: 'x'"),
    (T + ["--num-seeds", "0"], "--num-seeds = 0"),
    (T + ["--num-seeds", "-2"], "--num-seeds = -2"),
    (T + ["--log-every", "0"], "--log-every = 0"),
    (T + ["--log-points", "0"], "--log-points = 0"),
    (T + ["--log-points", "-1"], "--log-points = -1"),
    (T + ["--devices", "0"], "--devices = 0"),
    (T + ["--devices", "2"], "--devices = 2"),
    (T + ["--devices", "100"], "--devices = 100"),
    (T + ["--client-block", "0"], "--client-block = 0"),
    (T + ["--client-block", "-1"], "--client-block = -1"),
    # tabular: robustness (aggregators and faults)
    (T + ["--aggregator", "geometric"], "invalid choice: 'geometric'"),
    (T + ["--aggregator", "trimmed_mean", "--trim", "0.5"], "--trim = 0.5"),
    (T + ["--aggregator", "trimmed_mean", "--trim", "-0.1"], "--trim = -0.1"),
    (T + ["--dropout", "1"], "--dropout = 1.0"),
    (T + ["--dropout", "-0.1"], "--dropout = -0.1"),
    (T + ["--byzantine", "1.5"], "--byzantine = 1.5"),
    (T + ["--stragglers", "1.5"], "--stragglers = 1.5"),
    (T + ["--stragglers", "0.5", "--local-steps", "1"], "--stragglers = 0.5"),
    (T + ["--stragglers", "0.5", "--algorithm", "centralized"], "--algorithm = 'centralized'"),
    (T + ["--byzantine", "0.7", "--aggregator", "median"], "must be a fraction below 1/2"),
    (T + ["--byzantine", "0.34", "--aggregator", "trimmed_mean", "--trim", "0.1"],
     "at least the Byzantine fraction"),
    (T + ["--byzantine", "0.34", "--attack", "scale", "--attack-scale", "1"],
     "--attack-scale = 1.0"),
    (T + ["--byzantine", "0.34", "--attack-scale=-2"], "--attack-scale = -2.0"),
    (T + ["--algorithm", "centralized", "--aggregator", "median"], "--algorithm = 'centralized'"),
    (T + ["--algorithm", "local", "--dropout", "0.2"], "--algorithm = 'local'"),
    # tabular: options the configuration would ignore
    (T + ["--trim", "0.2"], "--trim = 0.2 is not allowed: only with --aggregator trimmed_mean"),
    (T + ["--attack", "noise"], "--attack = 'noise' is not allowed: only with --byzantine"),
    (T + ["--attack-scale", "3"], "--attack-scale = 3.0 is not allowed: only with --byzantine"),
    (T + ["--beta", "2"], "--beta = 2.0 is not allowed: only with --schedule inverse_time"),
    (T + ["--gamma0", "5"], "--gamma0 = 5.0 is not allowed: only with --schedule inverse_time"),
    (T + ["--schedule", "inverse_time", "--lr", "0.5"], "--lr = 0.5 is not allowed: only with"),
    (T + ["--tau", "0.1"], "--tau = 0.1 is not allowed: only with --reg"),
    (T + ["--batch", "4"], "--batch = 4 is not allowed: only with --gradient sampled"),
    (T + ["-B", "4"], "--batch = 4 is not allowed"),
    (T + ["--horizon", "5"], "--horizon = 5 is not allowed: only with --gradient sampled"),
    (T + ["--estimator", "reinforce"], "--estimator = 'reinforce' is not allowed"),
    (T + ["--lam", "0.3", "--lam-grid", "0.1", "0.9"], "--lam = 0.3 is not allowed"),
    (T + ["--server-lr", "0.5"], "--server-lr = 0.5 is not allowed: only with --server-opt"),
    (T + ["--log-every", "2", "--log-points", "5"], "--log-every = 2 is not allowed"),
    (T + ["--coordinator", "host:1"], "--coordinator = 'host:1' is not allowed"),
    (T + ["--num-processes", "2"], "--num-processes = 2 is not allowed"),
    (T + ["--process-id", "0"], "--process-id = 0 is not allowed"),
    # tabular: sizes (refused before allocation)
    (T + ["--states", "30000"], "the transition tensors P"),
    (T + ["--clients", "1e8"], "the run needs about"),
    (T + ["--rounds", "1e10"], "the step sizes"),
    (T + ["--num-seeds", "1e8"], "--num-seeds"),
    (T + ["--clients", "1e5", "--states", "200"], "reduce --clients, --states"),
    (T + SAMPLED + ["--batch", "1e9"], "sampled trajectories"),
    (T + SAMPLED + ["--horizon", "1e9"], "sampled trajectories"),
    (T + ["--rounds", "1e9", "--local-steps", "100"], "the step sizes"),
    # tabular: the command line itself and the output folder
    (T + ["--foo"], "unrecognized arguments: --foo"),
    (T + ["extra"], "unrecognized arguments: extra"),
    (["run", "tabular", "--quiet", "NO_OUT"], "the following arguments are required: --out"),
    (T + ["--ou", "x"], "unrecognized arguments: --ou"),   # no abbreviations
    (T + ["--out", "FILE"], "must be a folder"),
    (T + ["--out", "/proc/fedsim-cannot/x"], "cannot be created"),
    (T + ["--out", "FILE/x"], "cannot be created"),
    (T + ["--out", "FOREIGN"], "holds other files (notes.txt)"),
    (T + ["--out", "OTHER_RUN"], "holds a different run (differs in: aggregator, algorithm, "),
    # movielens
    (M + ["--dataset", "ml-25m"], "invalid choice: 'ml-25m'"),
    (M + ["--clients", "0"], "--clients (K) = 0"),
    (M + ["--clients", "-1"], "--clients (K) = -1"),
    (M + ["--clients", "100000"], "--clients (K) = 100000"),
    (M + ["--users-per-client", "0"], "--users-per-client = 0"),
    (M + ["--users-per-client", "1000"], "--users-per-client = 1000"),
    (M + ["--lam", "-1"], "--lam = -1.0"),
    (M + ["--lam", "0.5,-1"], "--lam = -1.0"),
    (M + ["--lam", "a,b"], "invalid list of numbers value: 'a,b'"),
    (M + ["--lam", "nan"], "--lam = nan"),
    (M + ["--noise", "-1"], "--noise = -1.0"),
    (M + ["--band", "-1"], "--band = -1.0"),
    (M + ["--taste", "-1"], "--taste = -1.0"),
    (M + ["--pairs", "0"], "--pairs = 0"),
    (M + ["--algorithm", "fedsgd"], "invalid choice: 'fedsgd'"),
    (M + ["--algorithm", "fedprox"], "invalid choice: 'fedprox'"),
    (M + ["--update", "ppo"], "invalid choice: 'ppo'"),
    (M + ["--update", "soft_q", "--temperature", "0"], "--temperature = 0.0"),
    (M + ["--update", "soft_q", "--temperature", "-1"], "--temperature = -1.0"),
    (M + ["--temperature", "2"], "--temperature = 2.0 is not allowed: only with --update soft_q"),
    (M + ["--gamma", "1"], "--gamma = 1.0"),
    (M + ["--gamma", "-0.1"], "--gamma = -0.1"),
    (M + ["--rounds", "0"], "--rounds (T) = 0"),
    (M + ["--local-epochs", "0"], "--local-epochs = 0"),
    (M + ["--lr", "0"], "--lr = 0.0"),
    (M + ["--lr", "-1"], "--lr = -1.0"),
    (M + ["--schedule", "inverse_time"], "invalid choice: 'inverse_time'"),
    (M + ["--private-lr", "-1"], "--private-lr = -1.0"),
    (M + ["--embedding-scale", "-1"], "--embedding-scale = -1.0"),
    (M + ["--dim", "0"], "--dim = 0"),
    (M + ["--hidden", "0"], "--hidden = 0"),
    (M + ["--batch", "0"], "--batch = 0"),
    (M + ["--seed", "-1"], "--seed = -1"),
    (M + ["--num-seeds", "0"], "--num-seeds = 0"),
    (M + ["--num-seeds", "1e7"], "the run needs about"),
    (M + ["--data", "/nonexistent"], "--data = '/nonexistent' is not allowed: only with a GroupLens"),
    (["run", "movielens", "--quiet", "--hub", "HUB", "--data", "/x"], "--data = '/x' is not allowed"),
    (["run", "movielens", "--quiet", "--data", "/nonexistent/ml.zip"], "--data = /nonexistent/ml.zip"),
    (["run", "movielens", "--quiet", "--data", "EMPTY"], "not found (--data = "),
    (["run", "movielens", "--quiet", "--data", "BAD_ZIP"], "sha256"),
    (["run", "movielens", "--quiet", "--data", "BAD_FOLDER"], "could not be read"),
    (["run", "movielens", "--quiet", "--data", "BAD_FOLDER", "--download", "/tmp"],
     "--download = '/tmp' is not allowed"),
    (["run", "movielens", "--quiet", "--dataset", "ml-100k", "--data", "BAD_FOLDER"],
     "MovieLens ml-100k not found"),
    (["run", "movielens", "--quiet", "--hub", "EMPTY"], "not a folder written by Dataset.save_to_disk"),
    (["run", "movielens", "--quiet", "--hub", "/nonexistent/saved"], "no such folder"),
    (["run", "movielens", "--quiet", "--out", "FILE", "--dataset", "synthetic"], "must be a folder"),
    (["run", "movielens", "--dataset", "synthetic", "NO_OUT"],
     "the following arguments are required: --out"),
    # run --config
    (["run", "--config", "MISSING", "--out", "OUT"], "--config"),
    (["run", "--config", "BAD_JSON", "--out", "OUT"], "readable config.json"),
    (["run", "--config", "LIST_JSON", "--out", "OUT"], "must hold a JSON object"),
    (["run", "--config", "UNKNOWN_TASK", "--out", "OUT"], "it has task 'nbody'"),
    (["run", "--config", "EXTRA_FIELD", "--out", "OUT"], "are not fields of TabularRunConfig"),
    (["run", "--config", "ZERO_ROUNDS", "--out", "OUT"], "--rounds (T) = 0"),
    (["run", "--config", "ZERO_ROUNDS"], "must be given with --config"),
    (["run"], "give a task"),
    (["run", "nbody"], "invalid choice: 'nbody'"),
    # sweeps, validate, figures, bench, and the command itself
    (["sweep"], "the following arguments are required: name"),
    (["sweep", "nonsense"], "invalid choice: 'nonsense'"),
    (["sweep", "rate", "--quick", "--out", "FILE"], "must be a folder"),
    (["sweep", "rate", "--quick", "--out", "FOREIGN"], "holds other files"),
    (["sweep", "rate", "--quick", "--out", "OTHER_SWEEP"], "holds a different run (differs in: checkpoints, "),
    (["sweep", "rate", "--quick", "--fast"], "unrecognized arguments: --fast"),
    (["validate", "--out", "FILE"], "must be a folder"),
    (["validate", "--out", "FOREIGN"], "holds other files"),
    (["figures", "--results", "/nonexistent"], "no results at /nonexistent"),
    (["figures", "--results", "EMPTY"], "no sweep results"),
    (["figures", "--results", "BAD_SUMMARY"], "not valid JSON"),
    (["figures", "--results", "BAD_METRICS"], "cannot be drawn"),
    (["figures", "--results", "BAD_SUMMARY", "--out", "FILE"], "--out"),
    (["bench", "--out", "FILE"], "must be a folder"),
    (["bench", "--out", "FOREIGN"], "holds other files"),
    (["bench", "--quick", "--budget", "1"], "unrecognized arguments: --budget"),
    ([], "the following arguments are required: COMMAND"),
    (["simulate"], "invalid choice: 'simulate'"),
]


def make_fixtures(root: Path) -> dict:
    import zipfile

    paths = {name: root / name.lower() for name in (
        "FILE", "FOREIGN", "OTHER_RUN", "OTHER_SWEEP", "BAD_JSON", "LIST_JSON", "UNKNOWN_TASK",
        "EXTRA_FIELD", "ZERO_ROUNDS", "EMPTY", "BAD_ZIP", "BAD_FOLDER", "BAD_SUMMARY",
        "BAD_METRICS", "MISSING", "OUT", "HUB")}
    paths["FILE"].write_text("x")
    paths["FOREIGN"].mkdir()
    (paths["FOREIGN"] / "notes.txt").write_text("mine")
    paths["OTHER_RUN"].mkdir()
    (paths["OTHER_RUN"] / "config.json").write_text(json.dumps(
        {"task": "tabular", "instance": {"num_states": 99}}))
    paths["OTHER_SWEEP"].mkdir()
    (paths["OTHER_SWEEP"] / "config.json").write_text(json.dumps({"sweep": "rate", "quick": False}))
    paths["BAD_JSON"].write_text("{not json")
    paths["LIST_JSON"].write_text("[1, 2]")
    paths["UNKNOWN_TASK"].write_text(json.dumps({"task": "nbody"}))
    paths["EXTRA_FIELD"].write_text(json.dumps({"task": "tabular", "warp": 9}))
    paths["ZERO_ROUNDS"].write_text(json.dumps({"task": "tabular", "rounds": 0}))
    paths["EMPTY"].mkdir()
    paths["BAD_ZIP"] = root / "ml-latest-small.zip"
    with zipfile.ZipFile(paths["BAD_ZIP"], "w") as z:
        z.writestr("ratings.csv", "userId,movieId,rating\n")
    paths["BAD_FOLDER"].mkdir()
    (paths["BAD_FOLDER"] / "ratings.csv").write_text("userId,movieId,rating\n1,2,three\n")
    (paths["BAD_FOLDER"] / "movies.csv").write_text("movieId,title,genres\n2,A (1999),Drama\n")
    paths["BAD_SUMMARY"].mkdir()
    (paths["BAD_SUMMARY"] / "summary.json").write_text("{oops")
    paths["BAD_METRICS"].mkdir()
    (paths["BAD_METRICS"] / "summary.json").write_text(json.dumps({"sweep": "tradeoff"}))
    (paths["BAD_METRICS"] / "metrics.csv").write_text("regime\nconstant\n")
    (paths["BAD_METRICS"] / "config.json").write_text("{}")
    paths["HUB"].mkdir()
    return paths


def resolve(argv: list[str], paths: dict, out: Path) -> list[str]:
    """Fixture names replaced by their paths; a fresh --out added to runs unless NO_OUT."""
    add_out = argv[:1] == ["run"] and argv[1:2] in (["tabular"], ["movielens"]) and \
        "--out" not in argv and "NO_OUT" not in argv
    argv = [str(paths[a]) if a in paths else a.replace("FILE/", str(paths["FILE"]) + "/")
            for a in argv if a != "NO_OUT"]
    return argv + ["--out", str(out)] if add_out else argv


def _id(argv: list[str]) -> str:
    for prefix, name in ((T, "tabular"), (M, "movielens")):
        if argv[:len(prefix)] == prefix:
            return " ".join([name] + argv[len(prefix):])
    return " ".join(argv) or "(nothing)"


@pytest.mark.parametrize("argv,fragment", CASES, ids=[_id(c[0]) for c in CASES])
def test_bad_input_is_one_line_exit_2_before_compilation(argv, fragment, tmp_path, capsys,
                                                          monkeypatch):
    import jax

    from fedsim.cli import main

    monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled before validating"))
    monkeypatch.delenv("FEDSIM_DATA", raising=False)
    out = tmp_path / "out-fresh"
    with pytest.raises(SystemExit) as stop:
        main(resolve(argv, make_fixtures(tmp_path), out))
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2, err
    assert err.count("\n") == 0 and err.startswith("fedsim") and "Traceback" not in err, err
    assert fragment in err, err
    assert not out.exists()


if __name__ == "__main__":   # the inputs and their messages, as a markdown table
    import contextlib
    import io
    import tempfile

    from fedsim.cli import main

    print("| # | input | exit | message |\n|---|---|---|---|")
    for i, (argv, _) in enumerate(CASES, 1):
        with tempfile.TemporaryDirectory() as tmp:
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = main(resolve(argv, make_fixtures(Path(tmp)), Path(tmp) / "out"))
                except SystemExit as stop:
                    code = stop.code
            message = err.getvalue().strip().replace(tmp, "TMP").replace("|", "\\|")
        shown = " ".join(argv).replace("|", "\\|")
        print(f"| {i} | `fedsim {shown}` | {code} | {message} |")
    sys.exit(0)
