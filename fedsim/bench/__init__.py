"""`fedsim bench`: the engine against per-client baselines, in one run, on this machine.

Every (workload, mode, K) cell runs in its own process (compile time and peak memory are
per cell); throughput ratios compare cells of the same run. See `workloads` for what each
mode is. Writes bench.csv (one row per cell), summary.json (the ratios and the acceptance
checks of issue 4) and config.json to the output folder, and prints the table.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from fedsim.bench import workloads as W
from fedsim.errors import ConfigError, check_choice
from fedsim.interrupt import stop_if_requested
from fedsim.results import write_csv, write_json
from fedsim.rundir import RunFolder

COLUMNS = ["workload", "mode", "K", "client_block", "rounds", "client_steps", "seconds", "client_steps_per_s",
           "env_steps_per_s", "compile_s", "peak_rss_mb", "vectorized_speedup"]


# --device: the JAX platforms a cell's process may use (JAX_PLATFORMS); None: what JAX sees
DEVICES = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}


def make_config(quick: bool, device: str | None = None) -> dict:
    return {
        "quick": quick, "device": device,
        "clients": [1, 10, 100, 1000] if quick else [1, 10, 100, 1000, 10000],
        "neural_clients": [10, 100] if quick else [10, 100, 1000],   # W3
        "large_clients": [] if quick else [100000],   # vectorized W1 only: memory at scale
        "budget_s": 0.3 if quick else 1.0,            # timed seconds per cell (at least a round)
        "grid": {"K": 100, "lams": 8, "seeds": 16, "rounds": 20 if quick else 100},
        "local_steps": W.LOCAL_STEPS, "step_size": W.STEP_SIZE,
        "neural_step_size": W.NEURAL_STEP_SIZE,
    }


def plan(config: dict) -> list[dict]:
    cells = []
    for workload in list(W.WORKLOADS) + [W.NEURAL]:
        for K in config["clients"] if workload != W.NEURAL else config["neural_clients"]:
            for mode in W.modes_for(workload):
                cells.append({"kind": "mode", "workload": workload, "mode": mode, "K": K,
                              "budget": config["budget_s"]})
    cells += [{"kind": "mode", "workload": "W1", "mode": "vectorized", "K": K,
               "budget": config["budget_s"]} for K in config["large_clients"]]
    g = config["grid"]
    for lams, seeds, seeded_init in ((1, 1, False), (g["lams"], g["seeds"], False),
                                     (g["lams"], g["seeds"], True)):
        cells.append({"kind": "grid", "workload": "W1", "K": g["K"], "lams": lams, "seeds": seeds,
                      "rounds": g["rounds"], "seeded_init": seeded_init,
                      "mode": grid_mode(lams, seeds, seeded_init)})
    return cells


def grid_mode(lams: int, seeds: int, seeded_init: bool) -> str:
    """grid_LxS: seeds are run keys, which W1 does not use (workloads.time_grid);
    grid_LxS_init: each seed also draws the initial policy, so every cell is distinct work."""
    return f"grid_{lams}x{seeds}" + ("_init" if seeded_init else "")


def run_cell(cell: dict) -> dict:
    # A session of its own: Ctrl-C in the terminal reaches only this process, which stops
    # after the cell in progress, instead of killing the measurement half-way.
    done = subprocess.run([sys.executable, "-m", "fedsim.bench.cell", json.dumps(cell)],
                          capture_output=True, text=True, start_new_session=True,
                          env=_device_env(cell.get("device")))
    if done.returncode != 0:
        raise RuntimeError(f"benchmark cell {cell} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    row = {"workload": cell["workload"], "mode": cell["mode"], "K": cell["K"],
           "client_block": ((W.client_block_for(cell["K"]) or "")
                          if cell["mode"] in ("vectorized", "minimal") else ""),
           **result}
    row["client_steps_per_s"] = row["client_steps"] / row["seconds"]
    env = W.env_steps_per_client_step(cell["workload"])
    row["env_steps_per_s"] = row["client_steps_per_s"] * env if env else ""
    return row


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
        r["vectorized_speedup"] = (base / r["client_steps_per_s"]
                                   if base and not r["mode"].startswith("grid") else "")


def acceptance(rows: list[dict], config: dict) -> list[dict]:
    """The measured figures issue 4 asks for, each with its threshold and verdict."""
    def find(workload, mode, K):
        hits = [r for r in rows if (r["workload"], r["mode"], r["K"]) == (workload, mode, K)]
        return hits[0] if hits else None

    checks = []

    def check(claim, value, threshold, passed):
        checks.append({"claim": claim, "measured": value, "threshold": threshold,
                       "passed": bool(passed)})

    for workload in W.WORKLOADS:   # the acceptance concerns W1 and W2
        for mode in W.modes_for(workload)[1:]:
            r = find(workload, mode, 1000)
            if r:   # the engine against a hand-written vmap: at least 0.9 of its speed
                need = {"numpy": 10.0, "minimal": 0.9}.get(mode, 30.0)
                check(f"{workload} K=1000: vectorized / {mode} client-steps per second",
                      r["vectorized_speedup"], f">= {need:g}", r["vectorized_speedup"] >= need)
        big, ref = find(workload, "vectorized", 10000), find(workload, "vectorized", 1000)
        if big and ref:
            ratio = ref["client_steps_per_s"] / big["client_steps_per_s"]
            check(f"{workload}: time per client-step at K=10000 / at K=1000", ratio, "<= 2",
                  ratio <= 2)
    for K in config["large_clients"]:
        r = find("W1", "vectorized", K)
        check(f"W1 K={K} completes; peak resident memory (MB)", r["peak_rss_mb"],
              "completes on the 24 GB machine", r["peak_rss_mb"] < 24 * 1024)
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
                  f"K={g['K']} T={g['rounds']}: {label} seconds", ratio, "<= 3", ratio <= 3)
    return checks


def format_table(rows: list[dict]) -> str:
    head = (f"{'workload':<8} {'mode':<14} {'K':>7} {'client-steps/s':>15} {'env-steps/s':>12} "
            f"{'compile s':>9} {'peak MB':>8} {'vec speedup':>11}")
    lines = [head, "-" * len(head)]
    for r in rows:
        env = f"{r['env_steps_per_s']:.3g}" if r["env_steps_per_s"] != "" else "-"
        speed = f"{r['vectorized_speedup']:.1f}x" if r["vectorized_speedup"] != "" else "-"
        lines.append(f"{r['workload']:<8} {r['mode']:<14} {r['K']:>7} "
                     f"{r['client_steps_per_s']:>15.4g} {env:>12} {r['compile_s']:>9.2f} "
                     f"{r['peak_rss_mb']:>8.0f} {speed:>11}")
    return "\n".join(lines)


def run_bench(quick: bool, out: Path, progress: bool = True, config: dict | None = None) -> dict:
    """config: `make_config(quick)` unless given (tests pass a tiny plan)."""
    from tqdm.auto import tqdm

    config = config or make_config(quick)
    device = check_device(config.get("device"))
    with RunFolder(out, config) as folder:
        out, rows = folder.path, []
        cells = [cell | {"device": config.get("device")} for cell in plan(config)]
        with tqdm(cells, desc="bench", unit="cell", disable=not progress) as bar:
            for cell in bar:
                rows.append(run_cell(cell))
                add_speedups(rows)
                write_csv(out / "bench.csv", COLUMNS, rows)   # partial results survive
                stop_if_requested(f"bench stopped after {len(rows)} of {len(cells)} cells; "
                                  f"those are in {out / 'bench.csv'}")
        checks = acceptance(rows, config)
        summary = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                               "python": platform.python_version()},
                   # where the cells ran: JAX's platform and device kind, and its version
                   "device": device,
                   "checks": checks, "passed": all(c["passed"] for c in checks)}
        write_json(out / "summary.json", summary)
    return {"rows": rows, "summary": summary}
