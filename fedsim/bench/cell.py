"""One benchmark measurement in a process of its own, so that its peak memory and its
compilations are its own: `serve` forks those processes for fedsim.bench, and

    python -m fedsim.bench.cell '{"kind": "mode", "workload": "W1", "mode": "loop", "K": 100,
                                  "budget": 1.0}'

prints one cell's JSON line: the measurement and the process's peak resident memory.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback

from fedsim.bench import flops
from fedsim.bench import workloads as W
from fedsim.engine.sharding import host_cores, make_cpu_devices, make_run_devices


def measure(cell: dict) -> dict:
    if cell["kind"] == "peak":
        return {"peak_flops_per_s": flops.matmul_peak()["flops_per_s"],
                "stream_bytes_per_s": flops.stream_bandwidth()["bytes_per_s"]}
    if cell.get("mode") == "flower":
        return _flower(cell)
    # CPU devices before JAX starts its backend (the cell server has not): for the run cell
    # those `fedsim run tabular` makes, one per core for the sharded mode
    if cell["kind"] == "run":
        make_run_devices()
        return _run_path(cell)
    counts = {}   # XLA's FLOP and byte counts per client-step, where the cell has them
    if cell.get("mode") == "sharded":
        make_cpu_devices(host_cores())
    if cell["kind"] == "grid":
        m = W.time_grid(W.instance_for(cell["K"]), cell["lams"], cell["seeds"], cell["rounds"],
                        cell["seeded_init"], cell.get("cells_per_block"))
        runs = cell["lams"] * cell["seeds"]
    else:
        budget, runs = cell["budget"], 1
        if cell["mode"] == "numpy":
            m = W.time_numpy(W.instance_for(cell["K"]), budget)
        else:
            problem = (W.solve_problem(cell["K"]) if cell["mode"] == "solve"
                       else W.problem_for(cell["workload"], cell["K"]))
            if cell["mode"] in W.ROUNDS_OF_MODE:
                m = W.time_vectorized(problem, budget, mode=cell["mode"])
                # XLA does not count LAPACK's custom calls (solve), and counts a sharded
                # program per device; a cell's other processes (fedsim.bench.INTERLEAVED)
                # run the program its first one counted, and give no counts
                if cell["mode"] not in ("solve", "sharded") and not cell.get("pass"):
                    cost = flops.client_step_cost(problem, W.LOCAL_STEPS)
                    counts = {"flops_per_client_step": cost["flops"],
                              "bytes_per_client_step": cost["bytes"]}
            else:
                m = W.time_loop(problem, per_step=cell["mode"] == "loop_step", budget=budget)
    client_steps = m.rounds * W.LOCAL_STEPS * cell["K"] * runs
    return {"rounds": m.rounds, "client_steps": client_steps, "seconds": m.seconds,
            "compile_s": m.compile_seconds, "peak_rss_mb": _peak_rss_mb(), **counts}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def _run_path(cell: dict) -> dict:
    """`fedsim run tabular`'s seconds per run against its compiled rounds alone."""
    m = W.time_run_path(cell["K"], cell["rounds"], cell["log_every"], cell["repeats"])
    return {"rounds": cell["rounds"], "client_steps": cell["rounds"] * W.LOCAL_STEPS * cell["K"],
            "seconds": m["seconds"], "compile_s": m["compile_s"],
            "peak_rss_mb": _peak_rss_mb(), "run_overhead": m["overhead"],
            "note": f"fedsim run tabular, evaluated every {cell['log_every']} round(s); "
                    f"the rounds alone {m['rounds_alone_s']:.3f} s; of the run: evaluations "
                    f"and chunk calls {m['evaluation']:.0%}, rows and files the device did "
                    f"not hide {m['path']:.0%}; "
                    f"setup {m['setup_s']:.2f} s"}


# Flower's rounds at K = 10 took either about 0.105 s or 0.21 s, in runs of either (10 rounds,
# twice, 7 Dec 2026): the fastest of 3 (its first starting the actors) caught the fast kind in
# some benches and not in others, and the engine / Flower ratio doubled between them
FLOWER_ROUNDS = 10


def _flower(cell: dict) -> dict:
    """Flower's fastest round of FLOWER_ROUNDS (its first also starts the Ray actors), as
    Flower's strategy times it; the whole simulation's wall time goes in the note."""
    from fedsim.bench import flower

    out = flower.run(cell["K"], FLOWER_ROUNDS)
    return {"rounds": 1, "client_steps": W.LOCAL_STEPS * cell["K"],
            "seconds": min(out["round_seconds"]), "compile_s": 0.0,
            # the Ray workers' memory is not this process's
            "peak_rss_mb": _peak_rss_mb(),
            "note": f"fastest of {FLOWER_ROUNDS} rounds by Flower's strategy; "
                    f"run_simulation took {out['seconds']:.1f} s in all"}


def serve() -> None:
    """The bench's cell server (fedsim.bench._CellServer): for each request on stdin, one JSON
    line {"cell", "result", "log", with the cell's "timeout" if any}, it forks a process that
    measures the cell, then prints {"exit", "killed"} when that process has ended (killed
    past the timeout). JAX is imported here and its backend started in each child."""
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _measure_in_child(request)
        timeout = request["cell"].get("timeout")
        deadline = None if timeout is None else time.monotonic() + timeout
        killed = False
        while not (status := os.waitpid(pid, os.WNOHANG))[0]:
            if deadline is not None and time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                status, killed = os.waitpid(pid, 0), True
                break
            time.sleep(0.01)
        print(json.dumps({"exit": os.waitstatus_to_exitcode(status[1]), "killed": killed}),
              flush=True)


def _measure_in_child(request: dict) -> None:
    """A cell's process: its output to the log, its measurement (JSON) to the result file,
    exit code 1 with the traceback in the log if it fails. Never returns."""
    code = 1
    try:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for fd in (1, 2):
            os.dup2(log, fd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)   # the server's requests are not ours
        result = measure(request["cell"])
        with open(request["result"], "w") as f:
            json.dump(result, f)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        print(json.dumps(measure(json.loads(sys.argv[1]))))
