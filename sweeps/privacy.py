"""The `privacy` sweep: DP-FedAvg's accountant against a one-run audit, and what privacy costs.

Two kinds of cell, each a tabular run with every seed vmapped (fedsim.tabular.experiment):

  audit    canary clients (fedsim.privacy.canaries) in a run whose real updates are small
           (Mei et al.'s safe step), full participation, for several noise multipliers z:
           the one-run lower bound on epsilon (fedsim.privacy.audit) against the RDP
           accountant's upper bound, per seed. With z = 0 the bound must be near the most
           that the canary count can show; with noise it must never exceed the accountant.
  utility  the final gap J* - J against epsilon for several z, in FedRLHF's regime (K = 5
           clients, all of them every round) and with many clients sampled (Poisson q):
           how sampling moves the privacy wall at the same noise.

The full sweep (not --quick) adds the two experiments of the paper, each a run of its task
with DP-FedAvg (adaptive clipping) on fedavg / fedrlhf:

  movielens  held-out accuracy against epsilon for several (q, z, T) on ml-latest-small,
             all 610 users as clients (q = 1) or Poisson-sampled;
  imdb       the reward and P(positive) against epsilon in the authors' setting (K = 5, all
             of them, 5 rounds): the wall at FedRLHF's own scale.

Their data are found as `fedsim run movielens` / `imdb` find them ($FEDSIM_DATA).
"""

from __future__ import annotations

import math

import numpy as np

from fedsim.privacy.audit import epsilon_lower_bound
from fedsim.privacy.options import PrivacyOptions
from fedsim.results import mean_ci
from fedsim.tabular.config import InstanceSpec, TabularRunConfig
from sweeps.runner import Sweep
from theory import checks

COLUMNS = ["kind", "regime", "clients", "rate", "rounds", "noise_multiplier", "seed",
           "epsilon", "gap", "audit_epsilon_lower", "audit_correct", "audit_guesses",
           "accuracy", "reward", "sentiment"]
DELTA = 1e-5


def make_config(quick: bool) -> dict:
    return {
        "quick": quick, "delta": DELTA, "seeds": 5,
        # 150 random directions need more room than 60: 2000 parameters instead of 400
        "audit": {"clients": 80 if quick else 200, "canaries": 60 if quick else 150,
                  "states": 40 if quick else 100, "actions": 10 if quick else 20,
                  "rounds": 10, "clip": 1.0,
                  "noise": [0.0, 0.5, 1.0, 2.0] if quick else [0.0, 0.5, 1.0, 2.0, 4.0]},
        "utility": {"regimes": {"fedrlhf": {"clients": 5, "rate": 1.0},
                                "sampled": {"clients": 1000 if quick else 2000,
                                            "rate": 0.05}},
                    "rounds": 30 if quick else 100, "local_steps": 5, "lr": 1.0, "clip": 1.0,
                    "noise": [0.5, 1.0, 2.0, 4.0] if quick else [0.3, 0.5, 1.0, 2.0, 4.0, 8.0]},
        # (q, z, T); z None: the same run without DP. Adaptive clipping from C = 1. "run": other
        # fields of the task's run configuration (the tests' small data)
        "movielens": None if quick else {
            "seeds": 3, "cells": [(1.0, None, 10), (1.0, 1.0, 10), (1.0, 3.0, 10),
                                  (0.2, None, 10), (0.2, 1.0, 10), (0.2, 3.0, 10),
                                  (0.2, 3.0, 30)]},
        # with 5 clients the unclipped count's noise must exceed z / 2 (sigma_b = 2.5)
        "imdb": None if quick else {
            "seeds": 3, "count_std": 2.5, "cells": [(1.0, None, 5), (1.0, 0.1, 5),
                                                    (1.0, 0.3, 5), (1.0, 1.0, 5)]},
    }


def _config(config: dict, cell: dict) -> TabularRunConfig:
    if cell["kind"] == "audit":
        a = config["audit"]
        return TabularRunConfig(
            instance=InstanceSpec(num_clients=a["clients"], num_states=a["states"],
                                  num_actions=a["actions"], seed=1),
            rounds=a["rounds"], local_steps=1, lr="mei", num_seeds=config["seeds"],
            privacy=PrivacyOptions(dp_clip=a["clip"], dp_noise=cell["z"], dp_delta=DELTA,
                                   canaries=a["canaries"]))
    u = config["utility"]
    regime = u["regimes"][cell["regime"]]
    sampled = regime["rate"] < 1
    privacy = (PrivacyOptions() if cell["z"] is None else PrivacyOptions(
        dp_clip=u["clip"], dp_noise=cell["z"], dp_delta=DELTA,
        sampling="poisson" if sampled else "fixed",
        participation_rate=regime["rate"] if sampled else None))
    if cell["z"] is None and sampled:   # the non-private baseline with the same sampling
        privacy = PrivacyOptions(sampling="poisson", participation_rate=regime["rate"])
    return TabularRunConfig(instance=InstanceSpec(num_clients=regime["clients"], seed=2),
                            rounds=u["rounds"], local_steps=u["local_steps"], lr=u["lr"],
                            num_seeds=config["seeds"], privacy=privacy)


def _task_privacy(cell: dict, count_std: float | None = None) -> PrivacyOptions:
    """DP-FedAvg with adaptive clipping at the cell's (q, z); Poisson sampling below q = 1."""
    sampled = cell["rate"] < 1
    sampling = {"sampling": "poisson", "participation_rate": cell["rate"]} if sampled else {}
    if cell["z"] is None:
        return PrivacyOptions(**sampling)
    return PrivacyOptions(dp_adaptive_clip=True, dp_noise=cell["z"], dp_delta=DELTA,
                          dp_count_std=count_std, **sampling)


def _task_row(cell: dict, clients: int, seed: int, epsilon, **measured) -> dict:
    return {column: "" for column in COLUMNS} | {
        "kind": cell["kind"], "regime": "sampled" if cell["rate"] < 1 else "all",
        "clients": clients, "rate": cell["rate"], "rounds": cell["rounds"],
        "noise_multiplier": "" if cell["z"] is None else cell["z"], "seed": seed,
        "epsilon": "" if epsilon is None else epsilon, **measured}


def run_movielens_cell(config: dict, cell: dict) -> dict:
    from fedsim.movielens.config import MovieLensRunConfig
    from fedsim.movielens.experiment import run_movielens

    m = config["movielens"]
    run = MovieLensRunConfig(algorithms=("fedavg",), rounds=cell["rounds"], num_seeds=m["seeds"],
                             privacy=_task_privacy(cell, m.get("count_std")),
                             **m.get("run", {}))
    out = run_movielens(run, progress=False)
    summary, result = out["summary"], out["summary"]["results"][0]
    accuracy = {r["seed"]: r["accuracy"] for r in out["rows"]
                if r["split"] == "test" and r["round"] == cell["rounds"]}
    rows = [_task_row(cell, summary["clients"], s, summary.get("epsilon"), accuracy=a)
            for s, a in sorted(accuracy.items())]
    return {"rows": rows, "info": {"epsilon": summary.get("epsilon"),
                                   "accuracy": result["test"]["accuracy"],
                                   "membership": result["membership"]["global"],
                                   "run_seconds": result["run_seconds"]}}


def run_imdb_cell(config: dict, cell: dict) -> dict:
    from fedsim.imdb.config import IMDbRunConfig
    from fedsim.imdb.experiment import run_imdb

    imdb = config["imdb"]
    run = IMDbRunConfig(algorithms=("fedrlhf",), rounds=cell["rounds"], num_seeds=imdb["seeds"],
                        privacy=_task_privacy(cell, imdb["count_std"]), **imdb.get("run", {}))
    out = run_imdb(run, progress=False, log=lambda *_: None)
    summary = out["summary"]
    rows = [_task_row(cell, run.clients, r["seed"], summary.get("epsilon"),
                      reward=r["reward"], sentiment=r["sentiment"])
            for r in out["rows"] if r["round"] == cell["rounds"]]
    result = summary["results"]["fedrlhf"]
    return {"rows": rows, "info": {"epsilon": summary.get("epsilon"),
                                   "reward": result["global"]["reward"],
                                   "sentiment": result["global"]["sentiment"],
                                   "pretrained_sentiment": result["pretrained"]["sentiment"]}}


def run_cell(config: dict, cell: dict) -> dict:
    from fedsim.tabular.experiment import run_tabular

    if cell["kind"] in ("movielens", "imdb"):
        return (run_movielens_cell if cell["kind"] == "movielens" else run_imdb_cell)(config, cell)
    run = _config(config, cell)
    summary = run_tabular(run, progress=False)["summary"]
    epsilon = summary.get("epsilon", math.inf if cell["z"] is not None else None)
    audit = summary.get("audit", {}).get("per_seed", {})
    rows = [{"kind": cell["kind"], "regime": cell.get("regime", "audit"),
             "clients": run.instance.num_clients,
             "rate": run.privacy.participation_rate or 1.0, "rounds": run.rounds,
             "noise_multiplier": "" if cell["z"] is None else cell["z"], "seed": int(seed),
             "epsilon": "" if epsilon is None else epsilon, "gap": gap,
             "audit_epsilon_lower": audit.get(seed, {}).get("epsilon_lower", ""),
             "audit_correct": audit.get(seed, {}).get("correct", ""),
             "audit_guesses": audit.get(seed, {}).get("guesses", ""),
             "accuracy": "", "reward": "", "sentiment": ""}
            for seed, gap in summary["final_gap"].items()]
    return {"rows": rows, "info": {"epsilon": epsilon, "gap": mean_ci(
        list(summary["final_gap"].values())), "run_seconds": summary["run_seconds"]}}


def summarize(config: dict, results: dict):
    rows = [r for res in results.values() for r in res["rows"]]
    audited = [r for r in rows if r["kind"] == "audit"]
    noisy = [r for r in audited if r["noise_multiplier"] > 0]
    loud = [r["audit_epsilon_lower"] for r in audited if r["noise_multiplier"] == 0]
    n = config["audit"]["canaries"]
    # what n canaries show when the auditor's surest half (k = n/4 each way) is all right,
    # at the audit's per-k significance (fedsim.privacy.audit)
    ceiling = epsilon_lower_bound(n, 2 * (n // 4), 2 * (n // 4), DELTA, 0.05 / 4)
    verdicts = [
        checks.Verdict("privacy: the audit detects leakage without noise (z = 0)",
                       f"lower bound {min(loud):.3g} .. {max(loud):.3g} over {len(loud)} seeds",
                       f">= 0.9 x {ceiling:.3g} (half of the {n} canaries guessed, all "
                       "right)", "-",
                       min(loud) >= 0.9 * ceiling),
        checks.all_within("privacy: the one-run audit never exceeds the accountant's epsilon",
                          [r["audit_epsilon_lower"] for r in noisy],
                          [r["epsilon"] for r in noisy], "audit lower bound vs RDP epsilon"),
    ]
    curves = {}
    for regime in config["utility"]["regimes"]:
        cells = [res["info"] | {"z": cid} for cid, res in results.items()
                 if cid.startswith(f"utility-{regime}-")]
        curves[regime] = sorted(cells, key=lambda c: -1 if c["epsilon"] is None
                                else -c["epsilon"])
    audits = {}
    for cid, res in results.items():
        if cid.startswith("audit-"):
            bounds = [r["audit_epsilon_lower"] for r in res["rows"]]
            audits[cid] = {"epsilon": res["info"]["epsilon"], "audit_max": max(bounds),
                           "audit_mean": float(np.mean(bounds))}
    tasks = {kind: {cid: res["info"] for cid, res in results.items() if cid.startswith(kind)}
             for kind in ("movielens", "imdb") if config[kind]}
    return verdicts, {"utility": curves, "audit": audits, **tasks}


def make_sweep(quick: bool) -> Sweep:
    config = make_config(quick)
    cells = [{"id": f"audit-z{z:g}", "kind": "audit", "z": z} for z in config["audit"]["noise"]]
    for regime in config["utility"]["regimes"]:
        cells += [{"id": f"utility-{regime}-{'none' if z is None else f'z{z:g}'}",
                   "kind": "utility", "regime": regime, "z": z}
                  for z in [None] + config["utility"]["noise"]]
    for kind in ("movielens", "imdb"):
        for q, z, T in (config[kind] or {"cells": []})["cells"]:
            cells.append({"id": f"{kind}-q{q:g}-{'none' if z is None else f'z{z:g}'}-T{T}",
                          "kind": kind, "rate": q, "z": z, "rounds": T})
    return Sweep("privacy", config, cells, run_cell, summarize, COLUMNS)
