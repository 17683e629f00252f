"""One benchmark measurement in a fresh process, so that its peak memory is its own.

    python -m fedsim.bench.cell '{"kind": "mode", "workload": "W1", "mode": "loop", "K": 100,
                                  "budget": 1.0}'

prints one JSON line: the measurement and the process's peak resident memory.
"""

from __future__ import annotations

import json
import resource
import sys

from fedsim.bench import flops
from fedsim.bench import workloads as W


def measure(cell: dict) -> dict:
    if cell["kind"] == "peak":
        return {"peak_flops_per_s": flops.matmul_peak()["flops_per_s"]}
    if cell.get("mode") == "flower":
        return _flower(cell)
    if cell["kind"] == "run":
        return _run_path(cell)
    flops_per_step = ""
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
                if cell["mode"] != "solve":   # XLA does not count LAPACK's custom calls
                    flops_per_step = flops.client_step_flops(problem, W.LOCAL_STEPS)
            else:
                m = W.time_loop(problem, per_step=cell["mode"] == "loop_step", budget=budget)
    client_steps = m.rounds * W.LOCAL_STEPS * cell["K"] * runs
    return {"rounds": m.rounds, "client_steps": client_steps, "seconds": m.seconds,
            "compile_s": m.compile_seconds, "flops_per_client_step": flops_per_step,
            "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def _run_path(cell: dict) -> dict:
    """`fedsim run tabular`'s seconds per run against its compiled rounds alone."""
    m = W.time_run_path(cell["K"], cell["rounds"], cell["log_every"])
    return {"rounds": cell["rounds"], "client_steps": cell["rounds"] * W.LOCAL_STEPS * cell["K"],
            "seconds": m["seconds"], "compile_s": m["compile_s"], "flops_per_client_step": "",
            "peak_rss_mb": _peak_rss_mb(), "run_overhead": m["overhead"],
            "note": f"fedsim run tabular, evaluated every {cell['log_every']} round(s); "
                    f"the rounds alone {m['rounds_alone_s']:.3f} s; of the run: evaluation "
                    f"{m['evaluation']:.0%}, transfer + rows + files {m['path']:.0%}; "
                    f"setup {m['setup_s']:.2f} s"}


FLOWER_ROUNDS = 3


def _flower(cell: dict) -> dict:
    """Flower's fastest round of FLOWER_ROUNDS (its first also starts the Ray actors), as
    Flower's strategy times it; the whole simulation's wall time goes in the note."""
    from fedsim.bench import flower

    out = flower.run(cell["K"], FLOWER_ROUNDS)
    return {"rounds": 1, "client_steps": W.LOCAL_STEPS * cell["K"],
            "seconds": min(out["round_seconds"]), "compile_s": 0.0,
            "flops_per_client_step": "",
            # the Ray workers' memory is not this process's
            "peak_rss_mb": _peak_rss_mb(),
            "note": f"fastest of {FLOWER_ROUNDS} rounds by Flower's strategy; "
                    f"run_simulation took {out['seconds']:.1f} s in all"}


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
