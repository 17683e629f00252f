"""The `tradeoff` sweep: R3, personalisation against global (intrinsic) performance in lambda.

Clients share dynamics and intrinsic reward R0 and differ in feedback H_k. For each lambda
(constant, or the authors' per-client grid scaled by s) and each instance seed:

  intrinsic loss   J0* - J0(pi_bar*), pi_bar* the optimum of the shaped global objective;
                   bound 2 ||r_bar - R0||_inf / (1 - gamma) <= 2 lam h_max / (1 - gamma)
  personal gain    J_k(pi_k*) - J_k(pi_bar*), pi_k* client k's own optimum;
                   bound 2 ||r_k - r_bar||_inf / (1 - gamma)
  federated policy FedAvg (exact gradients, E local steps) after T rounds: its intrinsic loss,
                   bound 2 ||r_bar - R0||_inf / (1 - gamma) + its gap on the shaped objective,
                   and the rounds it needed to reach gap eps (its step is 1 / reward span,
                   the 1/L scaling, which shrinks as lam h_max widens the span).
"""

from __future__ import annotations

import numpy as np

from fedsim.engine import Federation, log_checkpoints, step_sizes
from fedsim.reference import policy_values
from fedsim.tabular import oracles
from fedsim.tabular.mdp import TabularInstance, make_instance
from fedsim.tabular.config import InstanceSpec
from fedsim.tabular.config import LearnerSpec
from sweeps.runner import Sweep
from sweeps.simulate import simulate_grid
from theory import bounds, checks, constants, rates

COLUMNS = ["regime", "lam", "seed", "client", "round", "gap", "intrinsic_loss",
           "intrinsic_loss_bound", "personal_gain", "personal_gain_bound"]


def make_config(quick: bool) -> dict:
    return {
        "quick": quick,
        "instance": dict(num_clients=6, num_states=6, num_actions=3, gamma=0.7, h_max=1.0),
        "lams": [0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0],
        "grid_scales": [0.0, 0.5, 1.0, 2.0],     # lam_k = s (0.1 + 0.8 k / (K - 1))
        "instances": 4 if quick else 8,
        "rounds": 300 if quick else 2000,
        "local_steps": 5,
        "eps": 0.05,
        "checkpoints": 30 if quick else 50,
    }


def _greedy_logits(instance: TabularInstance, reward) -> np.ndarray:
    """Logits of a deterministic optimal policy for `reward` (shared dynamics): 50 * onehot."""
    V = oracles.optimal_values(instance.P[0], reward, instance.gamma)
    Q = reward + instance.gamma * instance.P[0].astype(np.float64) @ V
    return 50.0 * (Q >= Q.max(axis=1, keepdims=True) - 1e-12)


def _return(instance, theta, reward) -> float:
    """Exact float64 return of softmax(theta) for `reward` on the shared dynamics."""
    return policy_values(np.asarray(theta, np.float64), instance.P[0].astype(np.float64),
                         np.asarray(reward, np.float64), instance.rho.astype(np.float64),
                         instance.gamma)[0]


def _exact_tradeoff(instance: TabularInstance) -> dict:
    """Intrinsic loss and personal gains of the exact optima, with their bounds."""
    r = instance.shaped_reward().astype(np.float64)
    p = instance.p.astype(np.float64)
    r_bar = np.tensordot(p, r, axes=1)
    R0 = instance.R0[0].astype(np.float64)
    global_opt = _greedy_logits(instance, r_bar)
    J0_star = instance.rho @ oracles.optimal_values(instance.P[0], R0, instance.gamma)
    dev = constants.reward_deviations(instance)
    gains = [instance.rho @ oracles.optimal_values(instance.P[0], r[k], instance.gamma)
             - _return(instance, global_opt, r[k]) for k in range(instance.num_clients)]
    return {"intrinsic_loss": J0_star - _return(instance, global_opt, R0),
            "intrinsic_loss_bound": bounds.optimum_loss_bound(dev["global"], instance.gamma),
            "personal_gain": np.asarray(gains),
            "personal_gain_bound": np.array([bounds.optimum_loss_bound(d, instance.gamma)
                                             for d in dev["client"]]),
            "J0_star": float(J0_star)}


def _lam_kwargs(regime: str, value: float) -> dict:
    return {"lam": value} if regime == "constant" else {"lam_grid": (0.1 * value, 0.9 * value)}


def run_cell(config: dict, cell: dict) -> dict:
    """One regime: every lambda value x instance seed as one compiled program (a grid), then
    the exact optima of each (lambda, instance) in float64."""
    spec, regime = config["instance"], cell["regime"]
    K, T, E = spec["num_clients"], config["rounds"], config["local_steps"]
    grid = [[make_instance(InstanceSpec(**spec, **_lam_kwargs(regime, value), seed=s))
             for s in range(config["instances"])] for value in cell["values"]]
    # Instance draws do not depend on lambda: the grid shares each seed's arrays.
    base = grid[0]
    # Step 1/span: the 1/L scaling of theory (L grows linearly with the reward span) without
    # Mei's (1-gamma)^3/8 factor, which at gamma = 0.7 leaves the runs far from eps.
    lrs = np.stack([[step_sizes("constant", T, E, lr=1 / max(constants.reward_span(inst), 1e-12))
                     for inst in row] for row in grid])
    ckpt = log_checkpoints(T, config["checkpoints"])
    m = simulate_grid(base, [0], LearnerSpec(), Federation("fedavg", E), lrs, ckpt,
                      lams=np.stack([row[0].lam for row in grid]), step_axes=("lam", "instance"),
                      keep_params=True)

    parts = {}
    for i, row in enumerate(grid):
        rows, info = [], {"rounds_to_eps": [], "fed_intrinsic_loss": [], "fed_bound": []}
        for s, inst in enumerate(row):
            ex = _exact_tradeoff(inst)
            J_star = oracles.optimal_value(inst).J_star
            gap = J_star - m["J"][i, s, 0].astype(np.float64)
            fed_loss = ex["J0_star"] - _return(inst, m["theta"][i, s, 0, -1], inst.R0[0])
            info["rounds_to_eps"].append(rates.rounds_to_eps(ckpt, gap, config["eps"]))
            info["fed_intrinsic_loss"].append(fed_loss)
            info["fed_bound"].append(ex["intrinsic_loss_bound"] + gap[-1])
            common = {"regime": regime, "seed": s, "intrinsic_loss": ex["intrinsic_loss"],
                      "intrinsic_loss_bound": ex["intrinsic_loss_bound"]}
            for t, g in zip(ckpt, gap):
                rows.append({**common, "lam": float(np.mean(inst.lam)), "client": -1,
                             "round": int(t), "gap": g,
                             "personal_gain": float(ex["personal_gain"].mean()),
                             "personal_gain_bound": float(ex["personal_gain_bound"].mean())})
            for k in range(K):
                rows.append({**common, "lam": float(inst.lam[k]), "client": k, "round": T,
                             "gap": gap[-1], "personal_gain": float(ex["personal_gain"][k]),
                             "personal_gain_bound": float(ex["personal_gain_bound"][k])})
        value = cell["values"][i]
        info["lam_h_max"] = value * spec["h_max"]
        info["worst_case_bounds"] = bounds.tradeoff_bounds(value, spec["h_max"],
                                                           2 * spec["h_max"], spec["gamma"])
        parts[f"{regime}-{i}"] = {"rows": rows, "info": info}
    return {"rows": [r for part in parts.values() for r in part["rows"]], "parts": parts}


def summarize(config: dict, results: dict):
    results = {name: part for cell in results.values() for name, part in cell["parts"].items()}

    def collect(regime):
        cells = [c for c in results if c.startswith(regime + "-")]
        rows = [r for c in cells for r in results[c]["rows"]]
        return cells, rows

    verdicts, trends = [], {}
    for regime in ("constant", "grid"):
        cells, rows = collect(regime)
        per_client = [r for r in rows if r["client"] >= 0]
        opt = [r for r in per_client if r["client"] == 0]   # one row per (lam, seed)
        label = "lam" if regime == "constant" else "scaled lam_k grid"
        verdicts.append(checks.all_within(
            f"R3 ({label}) intrinsic loss of the shaped optimum <= 2 d / (1 - gamma)",
            [r["intrinsic_loss"] for r in opt], [r["intrinsic_loss_bound"] for r in opt],
            "2 ||r_bar - R0|| / (1 - gamma)"))
        verdicts.append(checks.all_within(
            f"R3 ({label}) personal gain <= 2 ||r_k - r_bar|| / (1 - gamma)",
            [r["personal_gain"] for r in per_client], [r["personal_gain_bound"] for r in per_client],
            "2 ||r_k - r_bar|| / (1 - gamma)"))
        scale = [results[c]["info"]["lam_h_max"] for c in cells]
        gain = [np.mean([r["personal_gain"] for r in results[c]["rows"] if r["client"] >= 0])
                for c in cells]
        loss = [np.mean([r["intrinsic_loss"] for r in results[c]["rows"] if r["client"] == 0])
                for c in cells]
        trends[regime] = {"lam_h_max": scale, "mean_gain": gain, "mean_intrinsic_loss": loss}
        verdicts.append(checks.monotone_trend(f"R3 ({label}) personalisation gain grows with lam",
                                              scale, gain, "lam, mean gain"))
        verdicts.append(checks.monotone_trend(f"R3 ({label}) intrinsic loss grows with lam",
                                              scale, loss, "lam, mean intrinsic loss", min_rho=0.8))
    cells, _ = collect("constant")
    fed_loss = [x for c in cells for x in results[c]["info"]["fed_intrinsic_loss"]]
    fed_bound = [x for c in cells for x in results[c]["info"]["fed_bound"]]
    verdicts.append(checks.all_within("R3 federated policy: intrinsic loss <= 2 d/(1-gamma) + gap_T",
                                      fed_loss, fed_bound, "2 d / (1 - gamma) + gap_T"))
    positive = [c for c in cells if results[c]["info"]["lam_h_max"] > 0]
    t_eps = [float(np.mean(results[c]["info"]["rounds_to_eps"])) for c in positive]
    verdicts.append(checks.monotone_trend("rounds to eps grow with lam h_max (sample requirement)",
                                          [results[c]["info"]["lam_h_max"] for c in positive], t_eps,
                                          "lam h_max, rounds to eps"))
    trends["rounds_to_eps"] = {"lam_h_max": [results[c]["info"]["lam_h_max"] for c in positive],
                               "rounds": t_eps}
    return verdicts, {"trends": trends}


def make_sweep(quick: bool) -> Sweep:
    config = make_config(quick)
    cells = [{"id": "constant", "regime": "constant", "values": config["lams"]},
             {"id": "grid", "regime": "grid", "values": config["grid_scales"]}]
    return Sweep("tradeoff", config, cells, run_cell, summarize, COLUMNS)
