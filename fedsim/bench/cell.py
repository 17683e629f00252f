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
    instance = W.instance_for(cell["K"])
    if cell["kind"] == "grid":
        m = W.time_grid(instance, cell["lams"], cell["seeds"], cell["rounds"])
        runs = cell["lams"] * cell["seeds"]
    else:
        learner, budget = W.WORKLOADS[cell["workload"]], cell["budget"]
        if cell["mode"] == "vectorized":
            m = W.time_vectorized(instance, learner, budget)
        elif cell["mode"] in ("loop", "loop_step"):
            m = W.time_loop(instance, learner, per_step=cell["mode"] == "loop_step", budget=budget)
        else:
            m = W.time_numpy(instance, learner, budget)
        runs = 1
    client_steps = m.rounds * W.LOCAL_STEPS * cell["K"] * runs
    return {"rounds": m.rounds, "client_steps": client_steps, "seconds": m.seconds,
            "compile_s": m.compile_seconds,
            # ru_maxrss is in KiB on Linux
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
