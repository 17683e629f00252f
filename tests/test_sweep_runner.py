"""The sweep runner: resumes after kill -9 with nothing lost or duplicated; refuses mixing."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from fedsim.cli import main

TOY = textwrap.dedent("""
    import sys, time
    from sweeps.runner import Sweep, run_sweep
    from theory.checks import Verdict

    def run_cell(config, cell):
        time.sleep(config["delay"])
        return {"rows": [{"cell": cell["id"], "i": i} for i in range(3)], "info": {}}

    def summarize(config, results):
        return [Verdict("toy", str(len(results)), "-", "-", True)], {}

    cells = [{"id": f"c{i:02d}"} for i in range(8)]
    sweep = Sweep("toy", {"delay": float(sys.argv[2])}, cells, run_cell, summarize, ["cell", "i"])
    print(run_sweep(sweep, sys.argv[1], progress=False)["cells_computed_this_run"])
""")


def test_sweep_resumes_after_kill_without_loss_or_duplication(tmp_path):
    out = tmp_path / "toy"
    script = tmp_path / "toy.py"
    script.write_text(TOY)
    proc = subprocess.Popen([sys.executable, str(script), str(out), "0.4"],
                            stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out / "cells").glob("*.json"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list((out / "cells").glob("*.json")))
    assert 3 <= done_before < 8, done_before
    assert not (out / "metrics.csv").exists()
    resumed = subprocess.run([sys.executable, str(script), str(out), "0.4"], capture_output=True,
                             text=True, check=True)
    assert int(resumed.stdout.strip()) == 8 - done_before   # only the missing cells ran
    with open(out / "metrics.csv") as f:
        rows = [(r["cell"], r["i"]) for r in csv.DictReader(f)]
    assert rows == [(f"c{c:02d}", str(i)) for c in range(8) for i in range(3)]
    assert json.loads((out / "summary.json").read_text())["passed"]
    assert not list(out.glob("**/*.tmp"))          # no half-written files left behind
    # A sweep with another config is refused in the same folder.
    refused = subprocess.run([sys.executable, str(script), str(out), "0.1"], capture_output=True,
                             text=True)
    assert refused.returncode != 0 and "holds a different run" in refused.stderr


def test_bad_sweep_options_get_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["sweep", "nonsense"])
    assert info.value.code == 2 and "invalid choice: 'nonsense'" in capsys.readouterr().err
    out = tmp_path / "s"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"sweep": "rate", "quick": False}))
    with pytest.raises(SystemExit) as info:
        main(["sweep", "rate", "--quick", "--out", str(out), "--quiet"])
    assert info.value.code == 2
    assert "--out" in capsys.readouterr().err
