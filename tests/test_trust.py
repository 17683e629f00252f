"""Results you can trust: explicit paths are never replaced, a folder belongs to one run, caches
know the code that filled them, killed or interrupted runs resume to the same bytes, oversize
runs are refused before allocation, and every failure is one line."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from fedsim import provenance
from fedsim.cli import VERDICT_WIDTHS, _print_verdicts, main
from fedsim.config import load_config
from fedsim.results import append_csv, concat_tables, write_csv
from fedsim.rundir import read_config

SMALL = ["--clients", "3", "--states", "4", "--actions", "3", "--rounds", "6", "--local-steps",
         "2", "--quiet"]
# A run of a few seconds in 50 chunks: long enough to be killed in the middle.
LONG = ["run", "tabular", "--clients", "3", "--states", "4", "--actions", "3", "--rounds",
        "20000", "--log-every", "100", "--gradient", "sampled", "--batch", "2", "--horizon",
        "10", "--quiet"]
OUTPUTS = ("metrics.csv", "clients.csv", "instance.npz")


def fedsim(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "fedsim", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def one_line_error(capsys, code, exit_info, *fragments):
    assert exit_info.value.code == code
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("fedsim"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture
def no_compilation(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("compilation started before the input was validated")

    monkeypatch.setattr(jax, "jit", refuse)


# ---------------------------------------------------------------- explicit choices are kept

def test_a_data_path_the_user_gave_is_never_replaced(tmp_path, capsys, monkeypatch):
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    for data in ("/nonexistent/ml.zip", str(tmp_path)):   # missing; a folder without ratings
        with pytest.raises(SystemExit) as info:
            main(["run", "movielens", "--data", data, "--out", str(tmp_path / "x"), "--quiet"])
        one_line_error(capsys, 2, info, f"--data = {data}", "not found")
        assert not (tmp_path / "x").exists()
    monkeypatch.setenv("FEDSIM_DATA", "/nowhere")   # the environment variable is explicit too
    with pytest.raises(SystemExit) as info:
        main(["run", "movielens", "--out", str(tmp_path / "y"), "--quiet"])
    one_line_error(capsys, 2, info, "FEDSIM_DATA = /nowhere")
    if shared.exists():   # the fall-back exists here, and still was not used
        assert not (tmp_path / "y").exists()


def test_an_option_the_configuration_ignores_is_refused(tmp_path, capsys, no_compilation):
    cases = [(["--beta", "2"], "--beta = 2.0", "only with --schedule inverse_time"),
             (["--tau", "0.1"], "--tau = 0.1", "only with --reg entropy or kl"),
             (["--batch", "4"], "--batch = 4", "only with --gradient sampled"),
             (["--lam", "0.3", "--lam-grid", "0.1", "0.9"], "--lam = 0.3", "without --lam-grid"),
             (["--server-lr", "0.5"], "--server-lr = 0.5", "only with --server-opt"),
             (["--instance-seed", "-5"], "--instance-seed = -5", "integer >= 0")]
    for extra, named, allowed in cases:
        with pytest.raises(SystemExit) as info:
            main(["run", "tabular", "--out", str(tmp_path / "x")] + SMALL + extra)
        one_line_error(capsys, 2, info, named, allowed)
    with pytest.raises(SystemExit) as info:
        main(["run", "movielens", "--dataset", "synthetic", "--temperature", "2", "--out",
              str(tmp_path / "m")])
    one_line_error(capsys, 2, info, "--temperature = 2.0", "only with --update soft_q")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- a folder belongs to one run

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The LONG run, uninterrupted: what every interrupted or contested run must end as."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(LONG[:2] + ["--out", str(out)] + LONG[2:]) == 0
    return out


def test_a_second_run_on_a_folder_in_use_is_refused_and_the_first_is_intact(tmp_path, reference):
    out = tmp_path / "shared"
    first = fedsim(*LONG, "--out", out)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "config.json").exists():
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGSTOP)   # still running, however fast it would have finished
    try:
        for extra in ([], ["--seed", "1"]):   # the same configuration, and another one
            second = subprocess.run([sys.executable, "-m", "fedsim", *LONG, "--out", str(out),
                                     *extra], capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stderr
            assert ("is in use by another run (pid" in second.stderr
                    and str(first.pid) in second.stderr)
            assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    record = json.loads((out / "provenance.json").read_text())
    assert [a["status"] for a in record["attempts"]] == ["complete"]


def test_provenance_and_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        assert main(["run", "tabular", "--out", str(tmp_path / "run")] + SMALL) == 0
    finally:
        os.umask(old)
    out = tmp_path / "run"
    for name in ("config.json", "provenance.json", "metrics.csv", "summary.json", "instance.npz",
                 "state.npz"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    record = json.loads((out / "provenance.json").read_text())
    assert record["run_id"] == json.loads((out / "config.json").read_text())["run_id"]
    assert record["versions"]["jax"] == jax.__version__ and record["python"]
    assert {"git_commit", "git_dirty"} <= set(record)
    attempt = record["attempts"][0]
    assert attempt["device_kind"] and attempt["device_count"] == len(jax.devices())
    assert attempt["started"] <= attempt["ended"] and attempt["status"] == "complete"


def test_a_saved_configuration_reruns_exactly(tmp_path):
    args = SMALL + ["--gradient", "sampled", "--batch", "2", "--lam-grid", "0.1", "0.9",
                    "--weights", "1,2,3", "--lr", "mei"]
    assert main(["run", "tabular", "--out", str(tmp_path / "a")] + args) == 0
    saved = tmp_path / "a" / "config.json"
    assert main(["run", "--config", str(saved), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    config = load_config(saved)
    assert config.instance.weights == (1.0, 2.0, 3.0) and config.lr == "mei"
    assert read_config(tmp_path / "b" / "config.json") == read_config(saved)


# ---------------------------------------------------------------- caches know the code

def test_code_fingerprint_follows_the_source(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "other.py").write_text("y = 1\n")
    monkeypatch.setattr(provenance, "PROJECT_ROOT", tmp_path)
    fingerprint = provenance.code_fingerprint.__wrapped__
    before = fingerprint(("pkg",))
    (tmp_path / "other.py").write_text("y = 2\n")          # not a dependency
    assert fingerprint(("pkg",)) == before
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")      # a dependency
    assert fingerprint(("pkg",)) != before


def _toy_sweep():
    from sweeps.runner import Sweep
    from theory.checks import Verdict

    return Sweep("toy", {"n": 4}, [{"id": f"c{i}"} for i in range(4)],
                 lambda config, cell: {"rows": [{"cell": cell["id"]}], "info": {}},
                 lambda config, results: ([Verdict("toy", str(len(results)), "-", "-", True)], {}),
                 ["cell"])


def test_cells_computed_by_other_code_are_recomputed_and_counted(tmp_path, monkeypatch, capsys):
    import sweeps.runner as runner

    out = tmp_path / "toy"
    first = runner.run_sweep(_toy_sweep(), out, progress=False)
    assert (first["cells_computed_this_run"], first["cells_reused"]) == (4, 0)
    again = runner.run_sweep(_toy_sweep(), out, progress=False)
    assert (again["cells_computed_this_run"], again["cells_reused"]) == (0, 4)
    monkeypatch.setattr(runner, "code_fingerprint", lambda parts: "edited code")
    edited = runner.run_sweep(_toy_sweep(), out, progress=False)
    assert (edited["cells_computed_this_run"], edited["cells_reused_from_other_code"]) == (4, 0)
    monkeypatch.setattr(runner, "code_fingerprint", lambda parts: "edited again")
    reused = runner.run_sweep(_toy_sweep(), out, progress=False, reuse_cells=True)
    assert (reused["cells_computed_this_run"], reused["cells_reused_from_other_code"]) == (0, 4)
    _print_verdicts({"toy": edited})
    assert "cells: toy 4 computed, 0 reused" in capsys.readouterr().out
    _print_verdicts({"toy": reused})
    printed = capsys.readouterr().out
    assert "cells: toy 0 computed, 4 reused" in printed and "4 reused cell(s) were computed by other code" in printed


def test_verdict_table_wraps_instead_of_cutting(capsys):
    claim = "a claim whose statement is much longer than its column " * 3
    summary = {"claims": [{"claim": claim, "measured": "1.0", "expected": "2.0", "passed": True}],
               "cells_computed_this_run": 1, "cells_reused": 0, "cells_reused_from_other_code": 0}
    _print_verdicts({"s": summary})
    lines = capsys.readouterr().out.splitlines()[1:-1]   # less the header and the cell counts
    start, width = len("sweep") + 2, VERDICT_WIDTHS[1]     # where the claim column lies
    column = " ".join(line[start:start + width].strip() for line in lines)
    assert column == " ".join(claim.split()) and len(lines) > 1


# ---------------------------------------------------------------- kill -9 and Ctrl-C resume

def _interrupt_mid_run(out: Path, signum: int):
    run = fedsim(*LONG, "--out", out)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "state.npz").exists():   # a chunk is saved
        time.sleep(0.02)
    time.sleep(0.2)
    os.kill(run.pid, signum)
    code = run.wait(timeout=120)
    return code, run.stderr.read()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_an_interrupted_run_resumes_to_the_same_bytes(tmp_path, signum, reference):
    out = tmp_path / "run"
    code, err = _interrupt_mid_run(out, signum)
    assert not (out / "summary.json").exists(), "the run ended before it was interrupted"
    done = int(np.load(out / "state.npz")["__meta__"].item().split('"chunks_done": ')[1].split(",")[0])
    assert 0 < done < 50
    if signum == signal.SIGINT:   # one line, exit 130, no traceback
        assert code == 130 and err.count("\n") == 1, err
        assert err.startswith("fedsim: interrupted: stopped after round ") and "resume" in err
    else:
        assert code == -signal.SIGKILL
    resumed = subprocess.run([sys.executable, "-m", "fedsim", *LONG, "--out", str(out)],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    if signum == signal.SIGKILL:   # the dead run's lock is reported, not silently taken
        assert "stopped without finishing" in resumed.stderr
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    statuses = [a["status"] for a in json.loads((out / "provenance.json").read_text())["attempts"]]
    assert statuses == (["running", "complete"] if signum == signal.SIGKILL
                        else ["interrupted", "complete"])


def test_csv_columns_write_the_same_bytes_as_rows(tmp_path):
    """clients.csv is written from columns (the fast path): its bytes must be the rows' path's."""
    rng = np.random.default_rng(0)
    table = {"seed": np.repeat(np.arange(3), 4), "round": np.arange(12, dtype=np.int64),
             "J": rng.normal(size=12).astype(np.float32), "gap": rng.normal(size=12) * 1e-7,
             "ok": rng.normal(size=12) > 0}
    table["gap"][[2, 5]] = [np.nan, np.inf]
    rows = [{c: table[c][i] for c in table} for i in range(12)]
    columns = list(table)
    write_csv(tmp_path / "rows.csv", columns, rows)
    write_csv(tmp_path / "columns.csv", columns, table)
    assert (tmp_path / "rows.csv").read_bytes() == (tmp_path / "columns.csv").read_bytes()
    halves = [{c: v[:5] for c, v in table.items()}, {c: v[5:] for c, v in table.items()}]
    keep = append_csv(tmp_path / "appended.csv", columns, halves[0], 0)
    append_csv(tmp_path / "appended.csv", columns, concat_tables(halves[1:]), keep)
    assert (tmp_path / "appended.csv").read_bytes() == (tmp_path / "rows.csv").read_bytes()
    with pytest.raises(TypeError, match="'name': numeric arrays only"):
        write_csv(tmp_path / "bad.csv", ["name"], {"name": np.array(["a", "b"])})


def test_ctrl_c_at_random_moments_never_gives_a_traceback_or_a_crash(tmp_path):
    """12 runs, each sent SIGINT at a moment drawn uniformly over a whole run (start-up,
    compilation, rounds, writing); each exits cleanly (0 if it had finished, else 130 with one
    line); two of the interrupted ones then resume to the uninterrupted run's bytes."""
    args = ["run", "tabular", "--clients", "3", "--states", "4", "--actions", "3", "--rounds",
            "3000", "--log-every", "20", "--quiet"]
    assert fedsim(*args, "--out", tmp_path / "timing").wait(timeout=300) == 0
    start = time.time()   # timed once its programs are in the tests' compilation cache
    assert fedsim(*args, "--out", tmp_path / "timed").wait(timeout=300) == 0
    duration = time.time() - start
    rng = random.Random(0)
    outcomes = []
    for pair in range(6):   # two at a time (CI has 2 cores)
        runs = []
        for i in range(2):
            out = tmp_path / f"run{2 * pair + i}"
            runs.append((fedsim(*args, "--out", out), rng.uniform(0.25, duration), out))
        begun = time.time()
        for run, moment, _ in sorted(runs, key=lambda r: r[1]):
            time.sleep(max(0.0, begun + moment - time.time()))
            run.send_signal(signal.SIGINT)
        for run, moment, out in runs:
            code, err = run.wait(timeout=300), run.stderr.read()
            assert "Traceback" not in err and "Segmentation" not in err, err
            assert code in (0, 130), (moment, code, err)
            if code == 130:
                assert err.count("\n") == 1 and err.startswith("fedsim: interrupted: "), err
            outcomes.append((round(moment, 2), code, out))
    interrupted = [o for o in outcomes if o[1] == 130]
    assert len(interrupted) >= 3, outcomes   # the moments did land inside the runs
    for _, _, out in interrupted[::max(1, len(interrupted) // 2)][:2]:
        again = subprocess.run([sys.executable, "-m", "fedsim", *args, "--out", str(out)],
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert ((out / "metrics.csv").read_bytes()
                == (tmp_path / "timing" / "metrics.csv").read_bytes())


# ---------------------------------------------------------------- sizes, failures, help

@pytest.mark.parametrize("extra", [["--states", "30000"], ["--clients", "1e8"],
                                   ["--rounds", "1e10"], ["--num-seeds", "1e8"],
                                   ["--clients", "1e5", "--states", "200"]],
                         ids=lambda e: " ".join(e))
def test_an_oversize_run_is_refused_before_allocation(extra, tmp_path, capsys, no_compilation):
    args = ["--clients", "3", "--states", "4", "--actions", "3", "--quiet"]
    with pytest.raises(SystemExit) as info:
        main(["run", "tabular", "--out", str(tmp_path / "x")] + args + extra)
    err = one_line_error(capsys, 2, info, "the run needs about", "this machine", "reduce")
    assert extra[0] in err
    assert not (tmp_path / "x").exists()


def test_movielens_oversize_is_refused_before_the_device(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "movielens", "--dataset", "synthetic", "--num-seeds", "1e7", "--out",
              str(tmp_path / "m"), "--quiet"])
    one_line_error(capsys, 2, info, "the run needs about", "--num-seeds")


def test_movielens_parameter_count_matches_flax():
    from fedsim.movielens import data as D
    from fedsim.movielens.task import init_params, make_task, num_params
    from fedsim.movielens.config import ModelSpec

    ratings = D.synthetic()
    for spec in (ModelSpec(), ModelSpec(dim=5, hidden=7, year=True)):
        _, net = make_task(ratings.num_movies, ratings.genres, spec, ratings.year)
        inputs_dim = spec.inputs_dim(ratings.genres.shape[1])
        params = init_params(net, jax.random.key(0), inputs_dim, spec.dim)
        assert num_params(ratings.num_movies, inputs_dim, spec) == sum(
            x.size for x in jax.tree.leaves(params))


def _malformed_results(tmp_path):
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "summary.json").write_text("{not json")
    bad_csv = tmp_path / "bad_csv"
    bad_csv.mkdir()
    (bad_csv / "summary.json").write_text(json.dumps({"sweep": "rate", "regimes": {}}))
    (bad_csv / "metrics.csv").write_text("regime,setting\nexact_constant\n\x00\x00,")
    return bad_json, bad_csv


def test_every_failure_is_one_line(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    bad_json, bad_csv = _malformed_results(tmp_path)
    results = tmp_path / "empty"
    results.mkdir()
    bad_zip = tmp_path / "ml-latest-small.zip"
    bad_zip.write_bytes(b"not a zip")
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "ratings.csv").write_text("userId,movieId,rating\n1,2,three\n")
    (folder / "movies.csv").write_text("movieId,title,genres\n2,A (1999),Drama\n")
    unparsable = tmp_path / "unparsable.json"
    unparsable.write_text("[1, 2")

    import urllib.request
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    cases = [
        (["run", "tabular", "--out", str(a_file)] + SMALL, "--out", "must be a folder"),
        (["run", "tabular", "--out", "/proc/fedsim/x"] + SMALL, "--out", "cannot be created"),
        (["run", "tabular", "--out", str(a_file / "x")] + SMALL, "--out", "cannot be created"),
        (["figures", "--results", str(tmp_path / "none")], "no results at", ""),
        (["figures", "--results", str(results)], "no sweep results", ""),
        (["figures", "--results", str(bad_json)], "summary.json", "not valid JSON"),
        (["figures", "--results", str(bad_csv)], "cannot be drawn", "metrics.csv"),
        (["figures", "--results", str(bad_json), "--out", str(a_file)], "--out", "a file"),
        (["run", "movielens", "--data", str(bad_zip), "--out", str(tmp_path / "m1")], "sha256",
         "corrupt"),
        (["run", "movielens", "--data", str(folder), "--out", str(tmp_path / "m2")],
         "could not be read", "ValueError"),
        (["run", "movielens", "--download", str(tmp_path / "dl"), "--out", str(tmp_path / "m3")],
         "--download: could not fetch", "no route to host"),
        (["run", "--config", str(tmp_path / "missing.json"), "--out", str(tmp_path / "c")],
         "--config", "readable config.json"),
        (["run", "--config", str(unparsable), "--out", str(tmp_path / "c")], "--config",
         "readable config.json"),
        (["run", "--config", str(a_file)], "--out", "must be given with --config"),
        (["run"], "give a task", "--help"),
        (["run", "tabular", "--out", str(tmp_path / "r"), "--rounds", "many"], "--rounds",
         "invalid integer value"),
        (["sweep", "rate", "--quick", "--out", str(a_file)], "--out", "must be a folder"),
    ]
    for argv, *fragments in cases:
        with pytest.raises(SystemExit) as info:
            main(argv)
        one_line_error(capsys, 2, info, *[f for f in fragments if f])


def test_help_is_plain_and_needs_no_jax():
    code = ("import sys, contextlib, io\nfrom fedsim.cli import main\n"
            "commands = [[], ['run'], ['run', 'tabular'], ['run', 'movielens'], ['sweep'],"
            " ['bench'], ['figures'], ['validate']]\n"
            "for c in commands:\n"
            "    text = io.StringIO()\n"
            "    with contextlib.redirect_stdout(text):\n"
            "        try: main(c + ['--help'])\n"
            "        except SystemExit: pass\n"
            "    out = text.getvalue()\n"
            "    assert 'default: None' not in out and '%%' not in out, (c, out)\n"
            "print('jax' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    version = subprocess.run([sys.executable, "-m", "fedsim", "--version"], capture_output=True,
                             text=True, timeout=120)
    assert version.stdout.strip() == f"fedsim {provenance.version('fedsim')}"


def test_bench_exits_nonzero_when_a_check_fails(tmp_path, monkeypatch):
    import fedsim.bench as bench

    for passed in (True, False):
        summary = {"checks": [{"claim": "c", "measured": 1.0, "threshold": ">= 2",
                               "passed": passed, "issue": 17, "superseded_by": None}],
                   "passed": passed}
        monkeypatch.setattr(bench, "run_bench", lambda *a, **k: {"rows": [], "summary": summary})
        assert main(["bench", "--out", str(tmp_path / "b"), "--quiet"]) == (0 if passed else 1)


def test_optimum_near_gamma_one_is_exact_by_policy_iteration():
    from fedsim.tabular import oracles

    rng = np.random.default_rng(0)
    P = rng.random((6, 3, 6))
    P /= P.sum(-1, keepdims=True)
    r = rng.random((6, 3))
    for tau in (0.0, 0.1):
        assert not oracles.needs_policy_iteration(r, 0.9, tau)
        by_vi = oracles.optimal_values(P, r, 0.9, tau)
        by_pi = oracles._policy_iteration(P, r, 0.9, tau, np.zeros_like(r), 1e-12)
        np.testing.assert_allclose(by_pi, by_vi, atol=1e-10)
        assert oracles.needs_policy_iteration(r, 0.99999, tau)
        V = oracles.optimal_values(P, r, 0.99999, tau)
        assert oracles.bellman_residual(P, r, 0.99999, tau, None, V) < 1e-8 * np.abs(V).max()


@contextlib.contextmanager
def deferred_interrupts():
    """Ctrl-C handled as the command line handles it, for the length of the block."""
    from fedsim import interrupt

    previous = interrupt.install()
    try:
        yield
    finally:
        interrupt.restore(previous)


def test_ctrl_c_in_a_sweep_stops_after_the_cell_and_resumes(tmp_path):
    import sweeps.runner as runner
    from fedsim import interrupt

    calls = []

    def run_cell(config, cell):
        calls.append(cell["id"])
        if cell["id"] == "c1":
            os.kill(os.getpid(), signal.SIGINT)   # lands while the cell runs
        return {"rows": [{"cell": cell["id"]}], "info": {}}

    sweep = dataclasses.replace(_toy_sweep(), run_cell=run_cell)
    with deferred_interrupts(), pytest.raises(interrupt.Interrupted, match="stopped after cell c1"):
        runner.run_sweep(sweep, tmp_path / "s", progress=False)
    assert calls == ["c0", "c1"] and len(list((tmp_path / "s" / "cells").glob("*.json"))) == 2
    resumed = runner.run_sweep(sweep, tmp_path / "s", progress=False)
    assert resumed["cells_computed_this_run"] == 2 and calls[2:] == ["c2", "c3"]


def test_movielens_interrupted_between_cells_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    import fedsim.movielens.experiment as E
    from fedsim import interrupt
    from fedsim.movielens.config import ModelSpec

    config = E.MovieLensRunConfig(dataset="synthetic", clients=6, rounds=2, local_epochs=1,
                                  num_seeds=2, algorithms=("fedavg",), lam=(0.0, 0.5),
                                  model=ModelSpec(dim=4, hidden=8, batch=8, reward_steps=10))
    E.run_movielens(config, tmp_path / "reference", progress=False)
    real = E._run_cell

    def interrupted_cell(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)   # during the first cell's computation
        monkeypatch.setattr(E, "_run_cell", real)
        return real(*args, **kwargs)

    monkeypatch.setattr(E, "_run_cell", interrupted_cell)
    with deferred_interrupts(), pytest.raises(interrupt.Interrupted, match="stopped after 1 of 2"):
        E.run_movielens(config, tmp_path / "run", progress=False)
    summary = E.run_movielens(config, tmp_path / "run", progress=False)["summary"]
    assert (summary["cells_computed_this_run"], summary["cells_reused"]) == (1, 1)
    for name in ("metrics.csv", "clients.csv"):
        assert ((tmp_path / "run" / name).read_bytes()
                == (tmp_path / "reference" / name).read_bytes()), name
