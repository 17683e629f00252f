"""One benchmark measurement in a fresh process, so that its peak memory is its own.

    python -m fedsim.bench.cell '{"kind": "mode", "workload": "W1", "mode": "loop", "K": 100,
                                  "budget": 1.0}'

prints one JSON line: the measurement and the process's peak resident memory.
"""

from __future__ import annotations

import json
import resource
import sys

from fedsim.bench import workloads as W


def measure(cell: dict) -> dict:
    if cell["kind"] == "grid":
        m = W.time_grid(W.instance_for(cell["K"]), cell["lams"], cell["seeds"], cell["rounds"],
                        cell["seeded_init"])
        runs = cell["lams"] * cell["seeds"]
    else:
        budget, runs = cell["budget"], 1
        if cell["mode"] == "numpy":
            m = W.time_numpy(W.instance_for(cell["K"]), budget)
        else:
            problem = W.problem_for(cell["workload"], cell["K"])
            if cell["mode"] in ("vectorized", "minimal"):
                m = W.time_vectorized(problem, budget, minimal=cell["mode"] == "minimal")
            else:
                m = W.time_loop(problem, per_step=cell["mode"] == "loop_step", budget=budget)
    client_steps = m.rounds * W.LOCAL_STEPS * cell["K"] * runs
    return {"rounds": m.rounds, "client_steps": client_steps, "seconds": m.seconds,
            "compile_s": m.compile_seconds,
            # ru_maxrss is in KiB on Linux
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
