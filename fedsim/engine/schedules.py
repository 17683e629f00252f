"""Local step-size schedules, materialised as a (rounds, local steps) array.

The step index is global, t = round * E + e, as in the decaying-step analysis of FedAvg
(Li et al. 2020, Thm 1: eta_t = beta / (t + gamma0)); "cosine" anneals lr towards 0 over
the whole run (Loshchilov & Hutter 2017, SGDR: one cycle, no restarts). The array is an input
of the compiled run, so step-size grids need no recompilation, and it is saved with the
results.
"""

from __future__ import annotations

import numpy as np

from fedsim.choices import SCHEDULES
from fedsim.errors import check_choice, check_int, check_real



def step_sizes(schedule: str, num_rounds: int, local_steps: int, *, lr: float | None = None,
               beta: float | None = None, gamma0: float | None = None) -> np.ndarray:
    """eta[t, e]: lr (constant), beta / (t * E + e + gamma0) (inverse_time) or
    lr (1 + cos(pi s / N)) / 2 with s = t * E + e, N = rounds * E (cosine); float32."""
    check_choice("schedule", schedule, SCHEDULES)
    check_int("rounds (T)", num_rounds, 1)
    check_int("local_steps (E)", local_steps, 1)
    t = np.arange(num_rounds * local_steps, dtype=np.float64).reshape(num_rounds, local_steps)
    if schedule == "inverse_time":
        check_real("beta", beta, 0.0, lo_open=True)
        check_real("gamma0", gamma0, 0.0, lo_open=True)
        return (beta / (t + gamma0)).astype(np.float32)
    check_real("lr", lr, 0.0, lo_open=True)
    if schedule == "constant":
        return np.full((num_rounds, local_steps), lr, dtype=np.float32)
    return (lr * 0.5 * (1.0 + np.cos(np.pi * t / t.size))).astype(np.float32)
