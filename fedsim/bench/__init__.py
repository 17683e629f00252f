"""`fedsim bench`: the engine against per-client baselines, in one run, on this machine.

Every (workload, mode, K) cell runs in its own process (compile time and peak memory are
per cell); throughput ratios compare cells of the same run, and the cells whose ratios are
judged run in several processes, interleaved (INTERLEAVED). See `workloads` for what each
mode is. Writes bench.csv (one row per cell), summary.json (the ratios and the acceptance
checks of issues 4 and 17) and config.json to the output folder, and prints the table.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from fedsim.bench import workloads as W
from fedsim.errors import ConfigError, check_choice
from fedsim.interrupt import stop_if_requested
from fedsim.results import atomic_write_bytes, read_csv_rows, read_json, write_csv, write_json
from fedsim.rundir import RunFolder

COLUMNS = ["workload", "mode", "K", "client_block", "rounds", "client_steps", "seconds",
           "client_steps_per_s", "env_steps_per_s", "compile_s", "peak_rss_mb",
           "vectorized_speedup", "flops_per_client_step", "gflops_per_s", "fraction_of_peak",
           "bytes_per_client_step", "gbytes_per_s", "fraction_of_stream", "run_overhead",
           "cell_s", "note"]


# --device: the JAX platforms a cell's process may use (JAX_PLATFORMS); None: what JAX sees
DEVICES = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}


def make_config(quick: bool, device: str | None = None) -> dict:
    return {
        "quick": quick, "device": device,
        # --quick: fewer cells (each takes 3-10 s: compilation, the FLOP count, the repeats)
        "clients": [10, 1000] if quick else [1, 10, 100, 1000, 10000],
        "neural_clients": [10] if quick else [10, 100, 1000],   # W3
        "large_clients": [] if quick else [100000],   # vectorized W1 only: memory at scale
        "flower_clients": [10] if quick else [10, 100],   # W1 in Flower (seconds per round)
        "largest_k": QUICK_LARGEST_K if quick else LARGEST_K,   # the loops' largest K
        "solve_timeout_s": 10 if quick else 30,       # the jnp.linalg.solve cells' limit
        "budget_s": 0.3 if quick else 0.7,            # timed seconds per cell (at least a round)
        "passes": 1 if quick else 3,                  # processes per judged cell (INTERLEAVED)
        "grid": {"K": 100, "lams": 8, "seeds": 16, "rounds": 4 if quick else 10},
        # `fedsim run tabular` on W1 (about a second of rounds), evaluated every N rounds, and
        # the run and its rounds alone each timed this many times (3.5 s a run)
        "run": {"K": 100, "rounds": 400, "log_every": [1], "repeats": 3 if quick else 5},
        "local_steps": W.LOCAL_STEPS, "step_size": W.STEP_SIZE,
        "neural_step_size": W.NEURAL_STEP_SIZE,
    }


# The engine (on one device and sharded) and the hand-written JAX programs it is judged against
# (NEEDS) run in config["passes"] processes each where their ratio is judged, interleaved
# (engine, sharded engine, minimal, drjax, solve, engine, ...), and each keeps its fastest: one
# process against the next varied by 20-30% on a shared 2-core machine, more than the
# differences being judged.
INTERLEAVED = ("vectorized", "sharded", "minimal", "drjax", "solve")


# Modes not run above this K: Python loops over clients (and steps), whose time per
# client-step does not depend much on K (at K = 1000 and 10 000: 1.9e4 and 1.2e4 for W1's
# loop_step, 1.05e4 and 1.17e4 for numpy, 6 December; 4.6e4 and 3.2e4 for W1's loop, 7.2e3
# and 8.6e3 for W2's, 7 December), at 14 s to a minute a cell at K = 10 000
LARGEST_K = {"loop": 1000, "loop_step": 1000, "numpy": 1000}
# --quick: the loops only at K = 10, their targets at K = 1000 being issue 4's that issue 17
# replaced (SUPERSEDED_MODES); 20 s of its 5 minutes
QUICK_LARGEST_K = LARGEST_K | {"loop": 10, "loop_step": 10}


def interleaved_at(workload: str, K: int) -> tuple[str, ...]:
    """The modes that run in several processes at K: every INTERLEAVED one where the engine
    is judged against one of them, the engine alone where it is judged only against another
    mode (Flower at K = 10), none where nothing is judged: W3, which has no checks, and targets
    issue 17 replaced (SUPERSEDED_MODES), which are judged but not counted."""
    if workload not in W.WORKLOADS:
        return ()
    judged = [m for m in W.modes_for(workload)
              if m in NEEDS and K in NEEDS[m].Ks and m not in SUPERSEDED_MODES]
    if any(m in INTERLEAVED for m in judged):
        return INTERLEAVED
    return ("vectorized",) if judged else ()


def plan(config: dict) -> list[dict]:
    cells = []
    for workload in list(W.WORKLOADS) + [W.NEURAL]:
        for K in config["clients"] if workload != W.NEURAL else config["neural_clients"]:
            here = [{"kind": "mode", "workload": workload, "mode": mode, "K": K,
                     "budget": config["budget_s"]}
                    | ({"timeout": config["solve_timeout_s"]} if mode == "solve" else {})
                    for mode in W.modes_for(workload)
                    if (mode != "flower" or K in config.get("flower_clients", ()))
                    and K <= config.get("largest_k", LARGEST_K).get(mode, K)]
            cells += here
            again = interleaved_at(workload, K)
            cells += [cell | {"pass": i} for i in range(1, config.get("passes", 1))
                      for cell in here if cell["mode"] in again]
    cells += [{"kind": "mode", "workload": "W1", "mode": "vectorized", "K": K,
               "budget": config["budget_s"]} for K in config["large_clients"]]
    r = config.get("run", NO_RUN_CELLS)
    cells += [{"kind": "run", "workload": "W1", "mode": run_mode(every), "K": r["K"],
               "rounds": r["rounds"], "log_every": every, "repeats": r["repeats"]}
              for every in r["log_every"]]
    g = config["grid"]
    for lams, seeds, seeded_init in ((1, 1, False), (g["lams"], g["seeds"], False),
                                     (g["lams"], g["seeds"], True)):
        cells.append({"kind": "grid", "workload": "W1", "K": g["K"], "lams": lams, "seeds": seeds,
                      "rounds": g["rounds"], "seeded_init": seeded_init,
                      "mode": grid_mode(lams, seeds, seeded_init)})
    # The distinct cells in blocks of CLIENT_BLOCK clients, against one run of all their
    # clients in blocks of the same size
    cells_per_block = max(1, W.CLIENT_BLOCK // g["K"])
    cells.append({"kind": "grid", "workload": "W1", "K": g["K"], "lams": g["lams"],
                  "seeds": g["seeds"], "rounds": g["rounds"], "seeded_init": True,
                  "cells_per_block": cells_per_block,
                  "mode": grid_mode(g["lams"], g["seeds"], True, cells_per_block)})
    cells.append({"kind": "grid", "workload": "W1", "K": g["K"] * g["lams"] * g["seeds"],
                  "lams": 1, "seeds": 1, "rounds": g["rounds"], "seeded_init": False,
                  "mode": grid_mode(1, 1, False)})
    return cells


def grid_mode(lams: int, seeds: int, seeded_init: bool, cells_per_block: int | None = None) -> str:
    """grid_LxS: seeds are run keys, which W1 does not use (workloads.time_grid);
    grid_LxS_init: each seed also draws the initial policy, so every cell is distinct work;
    ..._blocksB: the cells run B at a time."""
    return (f"grid_{lams}x{seeds}" + ("_init" if seeded_init else "")
            + (f"_blocks{cells_per_block}" if cells_per_block else ""))


NO_RUN_CELLS = {"log_every": []}   # a config without "run" (tests' tiny plans)


def run_mode(log_every: int) -> str:
    """run: `fedsim run tabular` as it runs by default (every round evaluated and written);
    run_everyN: with --log-every N."""
    return "run" if log_every == 1 else f"run_every{log_every}"


def missing_package(mode: str) -> str | None:
    """The package an optional mode needs, if it is not installed here."""
    module = W.OPTIONAL_MODES.get(mode)
    return module.split(".")[0] if module and importlib.util.find_spec(
        module.split(".")[0]) is None else None


def run_cell(cell: dict) -> dict:
    """One measurement in its own process. A mode whose package is missing, or a cell that
    runs past its time limit (cell["timeout"]), gives a row that says so, with no figures."""
    row = {"workload": cell["workload"], "mode": cell["mode"], "K": cell["K"],
           "client_block": ((W.client_block_for(cell["K"]) or "")
                            if cell["mode"] in ("vectorized", "minimal", "solve") else "")}
    if missing := missing_package(cell["mode"]):
        return _no_figures(row, f"skipped: {missing} is not installed "
                                "(pip install -e \".[bench]\")")
    start = time.perf_counter()
    result = _in_own_process(cell)
    if result is None:
        return _no_figures(row, f"did not finish in {cell['timeout']} s (killed)") | {
            "cell_s": time.perf_counter() - start}
    row["cell_s"] = time.perf_counter() - start   # the process's wall time, start-up included
    row.update(result)
    if cell["kind"] == "peak":
        return row
    row["client_steps_per_s"] = row["client_steps"] / row["seconds"]
    env = W.env_steps_per_client_step(cell["workload"])
    row["env_steps_per_s"] = row["client_steps_per_s"] * env if env else ""
    return row


class _CellServer:
    """The process that forks each cell's process (fedsim.bench.cell.serve): it has imported
    JAX and fedsim, with JAX_PLATFORMS set for --device, and started no JAX backend, so a
    cell's process starts in milliseconds instead of 3-4 s, its compilations and peak memory
    still its own. It runs in a session of its own: Ctrl-C in the terminal reaches only the
    bench, which stops after the cell in progress instead of killing it half-way."""

    def __init__(self, device: str | None):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fedsim.bench.cell", "--serve"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, start_new_session=True, env=_device_env(device))

    def measure(self, cell: dict) -> dict | None:
        """The cell's measurement, or None when it ran past cell["timeout"] (killed)."""
        with tempfile.TemporaryDirectory() as folder:
            result, log = Path(folder) / "result.json", Path(folder) / "output.log"
            self.process.stdin.write(json.dumps({"cell": cell, "result": str(result),
                                                 "log": str(log)}) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"the bench's cell server ended (exit code "
                                   f"{self.process.wait()}) before cell {cell}")
            ended = json.loads(line)
            if ended["killed"]:
                return None
            if ended["exit"] != 0 or not result.exists():
                raise _failed(cell, ended["exit"], log.read_text() if log.exists() else "")
            return json.loads(result.read_text())


_SERVERS: dict = {}   # device -> its _CellServer, for the life of this process

# Modes whose cells start a new interpreter instead: forked, the LAPACK and BLAS they call
# ran slower (W1 solve at K = 10: 5.5-6.9e4 client-steps/s forked, 8.0-9.6e4 in a new
# process, interleaved; numpy 8-11% slower), which would flatter the engine
NEW_INTERPRETER = ("solve", "numpy", "flower")


def _in_own_process(cell: dict) -> dict | None:
    """fedsim.bench.cell.measure(cell) in a process of its own, or None when it ran past
    cell["timeout"] (then it was killed)."""
    if cell["mode"] in NEW_INTERPRETER:
        return _in_new_interpreter(cell)
    device = cell.get("device")
    if device not in _SERVERS or _SERVERS[device].process.poll() is not None:
        _SERVERS[device] = _CellServer(device)
    return _SERVERS[device].measure(cell)


def _in_new_interpreter(cell: dict) -> dict | None:
    # a session of its own, for the reason _CellServer gives
    try:
        done = subprocess.run([sys.executable, "-m", "fedsim.bench.cell", json.dumps(cell)],
                              capture_output=True, text=True, start_new_session=True,
                              env=_device_env(cell.get("device")), timeout=cell.get("timeout"))
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        raise _failed(cell, done.returncode, done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _failed(cell: dict, exit_code: int, output: str) -> RuntimeError:
    """A cell's process that failed: its exit code and the end of its output."""
    return RuntimeError(f"benchmark cell {cell} failed (exit code {exit_code}):\n"
                        f"{output[-3000:]}")


def _not_run_after(cell: dict, rows: list[dict]) -> dict | None:
    """A cell with a time limit is not run at a K above one where its mode did not finish."""
    if "timeout" not in cell:
        return None
    stuck = [r["K"] for r in rows if (r["workload"], r["mode"]) == (cell["workload"], cell["mode"])
             and r["note"].startswith("did not finish") and r["K"] < cell["K"]]
    row = {"workload": cell["workload"], "mode": cell["mode"], "K": cell["K"], "client_block": ""}
    return _no_figures(row, f"not run: did not finish at K={stuck[0]}") if stuck else None


def keep_fastest(rows: list[dict], cell: dict) -> None:
    """Another process of a cell already in rows: its row keeps the faster of the two
    measurements, the note counts the processes and cell_s adds up their wall time. A cell
    that did not finish is not run again."""
    i = next(i for i, r in enumerate(rows) if (r["workload"], r["mode"], r["K"])
             == (cell["workload"], cell["mode"], cell["K"]))
    if not measured(rows[i]):
        return
    new, old = run_cell(cell), rows[i]
    # a later process's row has no FLOP and byte counts (fedsim.bench.cell): `old | new`
    # keeps the first process's, which counted the same program
    rows[i] = (old if old["client_steps_per_s"] >= new["client_steps_per_s"] else old | new) | {
        "cell_s": old["cell_s"] + new["cell_s"], "note": f"fastest of {cell['pass'] + 1} processes"}


def _no_figures(row: dict, note: str) -> dict:
    return row | {c: "" for c in COLUMNS if c not in row} | {"note": note}


def measured(row: dict) -> bool:
    return row.get("client_steps_per_s", "") != ""


def add_peak_fractions(rows: list[dict], limits: dict) -> None:
    """Achieved FLOP/s and bytes/s from XLA's counts per client-step, as fractions of the
    matmul peak and of the in-cache stream bandwidth (limits: the "peak" cell's). The sharded
    engine's client-steps are the one-device engine's (XLA counts a partitioned program per
    device, so its cell counts none): it takes the vectorized cell's counts at its K."""
    one_device = {(r["workload"], r["K"]): r for r in rows if r["mode"] == "vectorized"}
    for r in rows:
        counted = one_device.get((r["workload"], r["K"]), {}) if r["mode"] == "sharded" else r
        if measured(r) and counted.get("flops_per_client_step", "") != "":
            r["gflops_per_s"] = counted["flops_per_client_step"] * r["client_steps_per_s"] / 1e9
            r["fraction_of_peak"] = r["gflops_per_s"] * 1e9 / limits["peak_flops_per_s"]
            r["gbytes_per_s"] = counted["bytes_per_client_step"] * r["client_steps_per_s"] / 1e9
            r["fraction_of_stream"] = r["gbytes_per_s"] * 1e9 / limits["stream_bytes_per_s"]


def measure_limits(device: str | None) -> dict:
    """The device's limits in a cell of their own: LIMITS' names and values."""
    row = run_cell({"kind": "peak", "workload": "-", "mode": "limits", "K": 0, "device": device})
    return {name: row[name] for name in LIMITS}


def roofline(row: dict, limits: dict) -> dict:
    """What bounds a cell's FLOP/s (Williams et al., Roofline, CACM 2009): its arithmetic
    intensity (XLA's flops per byte of its fusions' traffic) times the in-cache bandwidth,
    or the matmul peak, whichever is lower; and the cell's FLOP/s as a fraction of that."""
    intensity = row["flops_per_client_step"] / row["bytes_per_client_step"]
    bound = min(limits["peak_flops_per_s"], intensity * limits["stream_bytes_per_s"])
    return {"flops_per_byte": intensity, "bound_flops_per_s": bound,
            "bound_fraction_of_peak": bound / limits["peak_flops_per_s"],
            "achieved_fraction_of_bound": row["gflops_per_s"] * 1e9 / bound}


def _device_env(device: str | None) -> dict:
    env = dict(os.environ)
    if device is not None:
        env["JAX_PLATFORMS"] = DEVICES[device]
    return env


def check_device(device: str | None) -> dict:
    """{"platform", "device", "jax"} of the device the cells will run on, from a process of
    their kind; a --device that JAX cannot find here is refused before anything runs."""
    if device is not None:
        check_choice("device", device, tuple(DEVICES))
    probe = ("import json, jax; d = jax.devices()[0]; print(json.dumps({'platform': "
             "d.platform, 'device': d.device_kind, 'count': jax.device_count(), "
             "'jax': jax.__version__}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=_device_env(device))
    if done.returncode != 0:
        raise ConfigError("device", device, "is not available to JAX on this machine ("
                          + (done.stderr.strip().splitlines() or ["no error text"])[-1][:200]
                          + "); omit --device to use what JAX sees")
    return json.loads(done.stdout.strip().splitlines()[-1])


def add_speedups(rows: list[dict]) -> None:
    vec = {(r["workload"], r["K"]): r["client_steps_per_s"] for r in rows
           if r["mode"] == "vectorized"}
    for r in rows:
        base = vec.get((r["workload"], r["K"]))
        r["vectorized_speedup"] = (base / r["client_steps_per_s"] if base and measured(r)
                                   and not r["mode"].startswith("grid") else "")


class Need(NamedTuple):
    """The engine against another mode: the K it is judged at, the least vectorized / mode
    ratio of client-steps per second, and the issue that set it."""

    Ks: tuple[int, ...]
    ratio: float
    issue: int


NEEDS = {"minimal": Need((1000, 10000), 0.9, 17), "drjax": Need((1000, 10000), 1.0, 17),
         "solve": Need((100,), 2.0, 17), "flower": Need((10, 100), 1000.0, 17),
         "numpy": Need((1000,), 10.0, 4), "loop": Need((1000,), 30.0, 4),
         "loop_step": Need((1000,), 30.0, 4)}
# Issue 4's targets that issue 17 replaced: 30x the per-client loops (set against a prototype
# loop 14x slower than the engine's own; replaced by the peers, hand-written and real) and a
# 128-cell grid in 3x one cell's time (its cells are 8 or 128 cells of work; replaced by the
# grid in blocks against one run of as many clients). Still measured and shown, with their
# verdicts; summary.json's "passed" leaves them out.
SUPERSEDED_MODES = ("loop", "loop_step")
PEAK_FRACTION = 0.10   # W1 at K = 1000: the least fraction of the matmul peak
LIMITS = ("peak_flops_per_s", "stream_bytes_per_s")   # what the "peak" cell measures
RUN_OVERHEAD = 0.20    # fedsim run tabular: the most of its time beyond the compiled rounds


def acceptance(rows: list[dict], config: dict) -> list[dict]:
    """The measured figures issues 4 and 17 ask for, each with its threshold, its verdict,
    the issue that set it and, for those issue 17 replaced, "superseded_by": 17. A check on a
    mode that was skipped or did not finish has passed None (not judged) and says why in
    "measured"."""
    def find(workload, mode, K):
        hits = [r for r in rows if (r["workload"], r["mode"], r["K"]) == (workload, mode, K)]
        return hits[0] if hits else None

    checks = []

    def check(claim, value, threshold, passed, issue=17, superseded=False):
        checks.append({"claim": claim, "measured": value, "threshold": threshold,
                       "passed": None if passed is None else bool(passed), "issue": issue,
                       "superseded_by": 17 if superseded else None})

    for workload in W.WORKLOADS:   # the acceptance concerns W1 and W2
        for mode in (m for m in W.modes_for(workload) if m in NEEDS):
            need = NEEDS[mode]
            for K in need.Ks:
                r = find(workload, mode, K)
                if r is None:
                    continue
                claim = f"{workload} K={K}: vectorized / {mode} client-steps per second"
                value, passed = ((r["vectorized_speedup"], r["vectorized_speedup"] >= need.ratio)
                                 if measured(r) else (r["note"], None))
                check(claim, value, f">= {need.ratio:g}", passed, need.issue,
                      mode in SUPERSEDED_MODES)
        sharded, solve = find(workload, "sharded", 100), find(workload, "solve", 100)
        if sharded and solve and measured(sharded) and measured(solve):
            ratio = sharded["client_steps_per_s"] / solve["client_steps_per_s"]
            check(f"{workload} K=100: sharded (the engine's clients over the host's cores as "
                  "devices, --devices) / solve client-steps per second", ratio,
                  f">= {NEEDS['solve'].ratio:g}", ratio >= NEEDS["solve"].ratio)
        big, ref = find(workload, "vectorized", 10000), find(workload, "vectorized", 1000)
        if big and ref:
            ratio = ref["client_steps_per_s"] / big["client_steps_per_s"]
            check(f"{workload}: time per client-step at K=10000 / at K=1000", ratio, "<= 2",
                  ratio <= 2, issue=4)
    # the matmul peak uses every core; so does the sharded engine, one device per core
    for mode, label in (("vectorized", ""), ("sharded", " sharded over the host's cores")):
        r = find("W1", mode, 1000)
        if r and r.get("fraction_of_peak", "") != "":
            check(f"W1 K=1000{label}: achieved FLOP/s (XLA's count) / matmul peak",
                  r["fraction_of_peak"], f">= {PEAK_FRACTION:g}",
                  r["fraction_of_peak"] >= PEAK_FRACTION)
    for K in config["large_clients"]:
        r = find("W1", "vectorized", K)
        check(f"W1 K={K} completes; peak resident memory (MB)", r["peak_rss_mb"],
              "completes on the 24 GB machine", r["peak_rss_mb"] < 24 * 1024, issue=4)
    r = config.get("run", NO_RUN_CELLS)
    for every in r["log_every"]:
        run = find("W1", run_mode(every), r["K"])
        if run and measured(run):
            check(f"fedsim run tabular, W1 K={r['K']} T={r['rounds']}, --log-every {every}: "
                  "fraction of the run beyond its compiled training rounds (evaluation, "
                  "transfer, rows, files)", run["run_overhead"], f"<= {RUN_OVERHEAD:g}",
                  run["run_overhead"] <= RUN_OVERHEAD)
    g = config["grid"]
    single = find("W1", "grid_1x1", g["K"])
    for seeded_init, seeds in ((False, "seeds (run keys, unused by W1)"),
                               (True, "seeds (each its own initial policy)")):
        grid = find("W1", grid_mode(g["lams"], g["seeds"], seeded_init), g["K"])
        for label, with_compile in (("run", False), ("compile + run", True)):
            seconds = [r["seconds"] + (r["compile_s"] if with_compile else 0.0)
                       for r in (grid, single)]
            ratio = seconds[0] / seconds[1]
            check(f"{g['lams']} lambda x {g['seeds']} {seeds} grid / single cell, W1 "
                  f"K={g['K']} T={g['rounds']}: {label} seconds", ratio, "<= 3", ratio <= 3,
                  issue=4, superseded=True)
    cells, per_block = g["lams"] * g["seeds"], max(1, W.CLIENT_BLOCK // g["K"])
    blocks = find("W1", grid_mode(g["lams"], g["seeds"], True, per_block), g["K"])
    one_run = find("W1", grid_mode(1, 1, False), g["K"] * cells)
    if blocks and one_run:
        ratio = blocks["seconds"] / one_run["seconds"]
        check(f"{cells} distinct W1 cells of K={g['K']} in blocks of {per_block} / one run of "
              f"{g['K'] * cells} clients in blocks of {W.CLIENT_BLOCK}, T={g['rounds']}: seconds",
              ratio, "<= 1.2", ratio <= 1.2)
    return checks


def current(checks: list[dict]) -> list[dict]:
    """The checks no later issue replaced."""
    return [c for c in checks if not c.get("superseded_by")]


def issue_label(check: dict) -> str:
    """"17", or "4, superseded by 17"."""
    later = check.get("superseded_by")
    return f"{check['issue']}" + (f", superseded by {later}" if later else "")


def _figure(value, fmt: str) -> str:
    return "-" if value == "" else format(value, fmt)


def format_table(rows: list[dict]) -> str:
    head = (f"{'workload':<8} {'mode':<14} {'K':>7} {'client-steps/s':>15} {'env-steps/s':>12} "
            f"{'compile s':>9} {'peak MB':>8} {'vec speedup':>11} {'% of peak':>9}  note")
    lines = [head, "-" * len(head)]
    for r in rows:
        speed = _figure(r["vectorized_speedup"], ".1f") + ("x" if measured(r) and
                                                           r["vectorized_speedup"] != "" else "")
        peak = _figure(r.get("fraction_of_peak", "") and 100 * r["fraction_of_peak"], ".1f")
        lines.append(f"{r['workload']:<8} {r['mode']:<14} {r['K']:>7} "
                     f"{_figure(r['client_steps_per_s'], '.4g'):>15} "
                     f"{_figure(r['env_steps_per_s'], '.3g'):>12} "
                     f"{_figure(r['compile_s'], '.2f'):>9} {_figure(r['peak_rss_mb'], '.0f'):>8} "
                     f"{speed:>11} {peak:>9}  {r.get('note', '')}")
    return "\n".join(lines)


def versions() -> dict:
    """The versions of what the modes ran on (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("jax", "jaxlib", "numpy", "drjax", "flwr", "ray"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def write_table(folder: Path) -> Path:
    """bench_table.md, regenerated from the folder's bench.csv and summary.json (the README's
    table is this file)."""
    path = Path(folder) / "bench_table.md"
    table = markdown_table(read_csv_rows(path.parent / "bench.csv"),
                           read_json(path.parent / "summary.json"))
    atomic_write_bytes(path, table.encode())
    return path


def markdown_table(rows: list[dict], summary: dict) -> str:
    dev, machine = summary["device"], summary["machine"]
    pkgs = ", ".join(f"{k} {v}" for k, v in summary["versions"].items() if v)
    lines = [f"Machine: {machine['platform']} ({machine['processor'] or 'processor not reported'}),"
             f" {dev['count']} {dev['platform']} device(s) ({dev['device']}); {pkgs}. Matmul peak "
             f"{summary['peak_flops_per_s'] / 1e9:.0f} GFLOP/s (2048² float32), in-cache stream "
             f"{summary['stream_bytes_per_s'] / 1e9:.0f} GB/s. The bench took "
             f"{summary['bench_seconds'] / 60:.1f} minutes, each cell in a process of its own "
             "(forked from one that has imported JAX, or for solve, numpy and flower a new "
             "interpreter), its start-up included.", "",
             "| workload | mode | K | client-steps/s | engine × | GFLOP/s | % of peak | GB/s | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["workload"], r["mode"], str(r["K"]), _figure(r["client_steps_per_s"], ".3g"),
                 _figure(r["vectorized_speedup"], ".3g"), _figure(r["gflops_per_s"], ".3g"),
                 _figure(r["fraction_of_peak"] and 100 * r["fraction_of_peak"], ".1f"),
                 _figure(r["gbytes_per_s"], ".3g"), r.get("note", "")]
        lines.append("| " + " | ".join(cells) + " |")
    for cell, bound in summary["roofline"].items():
        lines += ["", f"Roofline of {cell}: {bound['flops_per_byte']:.2f} FLOP per byte of its "
                  "fusions' traffic (XLA's counts), so the in-cache bandwidth bounds it at "
                  f"{bound['bound_flops_per_s'] / 1e9:.1f} GFLOP/s "
                  f"({100 * bound['bound_fraction_of_peak']:.0f}% of the matmul peak); it ran at "
                  f"{100 * bound['achieved_fraction_of_bound']:.0f}% of that bound."]
    lines += ["", "| check | measured | wanted | verdict | issue |", "|---|---|---|---|---|"]
    for c in summary["checks"]:
        value = c["measured"] if isinstance(c["measured"], str) else format(c["measured"], ".3g")
        verdict = {True: "pass", False: "FAIL", None: "not judged"}[c["passed"]]
        lines.append(f"| {c['claim']} | {value} | {c['threshold']} | {verdict} | "
                     f"{issue_label(c)} |")
    return "\n".join(lines) + "\n"


def run_bench(quick: bool, out: Path, progress: bool = True, config: dict | None = None) -> dict:
    """config: `make_config(quick)` unless given (tests pass a tiny plan)."""
    from tqdm.auto import tqdm

    config = config or make_config(quick)
    device = check_device(config.get("device"))
    with RunFolder(out, config) as folder:
        out, rows, start = folder.path, [], time.perf_counter()
        cells = [cell | {"device": config.get("device")} for cell in plan(config)]
        limits = measure_limits(config.get("device"))
        with tqdm(cells, desc="bench", unit="cell", disable=not progress) as bar:
            for cell in bar:
                if cell.get("pass"):
                    keep_fastest(rows, cell)
                else:
                    rows.append({c: "" for c in COLUMNS} | (_not_run_after(cell, rows)
                                                            or run_cell(cell)))
                add_speedups(rows)
                add_peak_fractions(rows, limits)
                write_csv(out / "bench.csv", COLUMNS, rows)   # partial results survive
                stop_if_requested(f"bench stopped after {len(rows)} of {len(cells)} cells; "
                                  f"those are in {out / 'bench.csv'}")
        # the limits again, at the end: each is the best seen (a slow spell of this shared
        # machine once measured the matmul at 79 GFLOP/s, against 126-139 in other runs)
        limits = {name: max(value, limits[name])
                  for name, value in measure_limits(config.get("device")).items()}
        add_peak_fractions(rows, limits)
        write_csv(out / "bench.csv", COLUMNS, rows)
        checks = acceptance(rows, config)
        summary = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                               "python": platform.python_version()},
                   # where the cells ran: JAX's platform and device kind, and its version
                   "device": device, "versions": versions(),
                   # the device's limits: a 2048^2 float32 matmul's FLOP/s, fastest of 5,
                   # and an in-cache stream's bytes/s (fedsim.bench.flops), the best of their
                   # measurements before and after the cells
                   **limits,
                   # what bounds the FLOP/s of the cell judged against the peak
                   "roofline": {f"{r['workload']} {r['mode']} K={r['K']}": roofline(r, limits)
                                for r in rows if (r["workload"], r["mode"], r["K"])
                                == ("W1", "vectorized", 1000) and r["gflops_per_s"] != ""},
                   "checks": checks,
                   "bench_seconds": time.perf_counter() - start,   # every cell, start-up included
                   # over the checks judged (a skipped mode's are not) and not superseded
                   "passed": all(c["passed"] for c in current(checks)
                                 if c["passed"] is not None),
                   "not_judged": [c["claim"] for c in checks if c["passed"] is None],
                   "superseded": [c["claim"] for c in checks if c["superseded_by"]]}
        write_json(out / "summary.json", summary)
        write_table(out)
    return {"rows": rows, "summary": summary}
