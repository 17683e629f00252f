"""CI checks of the theoretical bounds on small instances (the sweeps run the large versions).

Each check runs in well under 30 s on a 2-core CPU; the checkers' power to fail is shown in
test_theory_tools.py.
"""

from __future__ import annotations

import copy

import numpy as np

from sweeps import clients, rate, tradeoff


def _rate_config(**changes):
    config = rate.make_config(quick=True)
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    return config


def test_r1a_exact_pg_slope_is_minus_one():
    config = _rate_config(exact_constant={"rounds": 10_000, "instances": 4}, checkpoints=30)
    info = rate.run_cell(config, {"regime": "exact_constant"})["info"]
    assert -1.15 <= info["fit"]["slope"] <= -0.85, info["fit"]
    assert info["mei_bound_ratio_max"] <= 1


def test_r1b_sgd_gap_under_bound_and_slope_minus_one():
    config = _rate_config(stochastic={"rounds": 2000, "seeds": 24}, checkpoints=30)
    result = rate.run_cell(config, {"regime": "sgd_decay"})
    info = result["info"]
    assert all(info["conditions"].values()), info["conditions"]
    rounds = sorted({r["round"] for r in result["rows"]})
    mean_gap = [np.mean([r["gap"] for r in result["rows"] if r["round"] == t]) for t in rounds]
    assert np.all(np.asarray(mean_gap) <= np.asarray(info["bound"]))
    assert -1.2 <= info["fit"]["slope"] <= -0.8, info["fit"]


def test_constant_step_floor_grows_with_eta():
    config = _rate_config(stochastic={"rounds": 500, "seeds": 8}, checkpoints=20)
    floors = [rate.run_cell(config, {"regime": "sgd_constant", "multiplier": m})["info"]["floor"]
              for m in (0.05, 0.8)]
    assert floors[0] < floors[1]


def test_r2_linear_speedup_stochastic_and_flat_exact():
    config = clients.make_config(quick=True)
    config.update(seeds=8, client_steps=12_000, eps=5e-4, checkpoints=40)
    Ks = [1, 4, 16]
    t_sgd = [clients.run_cell(config, {"regime": "stochastic", "K": K})["info"]["rounds_to_eps"]
             for K in Ks]
    t_exact = [clients.run_cell(config, {"regime": "exact", "K": K})["info"]["rounds_to_eps"]
               for K in Ks]
    slope = np.polyfit(np.log(Ks), np.log(t_sgd), 1)[0]
    assert -1.25 <= slope <= -0.75, (t_sgd, slope)
    assert abs(np.polyfit(np.log(Ks), np.log(t_exact), 1)[0]) < 0.05, t_exact


def test_r3_bounds_hold_and_trends_are_monotone():
    config = copy.deepcopy(tradeoff.make_config(quick=True))
    config.update(instances=2, rounds=60, checkpoints=10)
    results = {regime: tradeoff.run_cell(config, {"regime": regime, "values": values})
               for regime, values in (("constant", [0.0, 0.5, 1.0, 2.0]), ("grid", [0.0, 1.0, 2.0]))}
    verdicts, _ = tradeoff.summarize(config, results)
    by_claim = {v.claim: v for v in verdicts}
    for claim, verdict in by_claim.items():
        if "rounds to eps" not in claim:   # 60 rounds are too few to reach eps
            assert verdict.passed, verdict
