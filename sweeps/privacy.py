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
           "epsilon", "gap", "audit_epsilon_lower", "audit_correct", "audit_guesses"]
DELTA = 1e-5


def make_config(quick: bool) -> dict:
    return {
        "quick": quick, "delta": DELTA, "seeds": 5,
        "audit": {"clients": 80, "canaries": 60 if quick else 150, "states": 40,
                  "actions": 10, "rounds": 10, "clip": 1.0,
                  "noise": [0.0, 0.5, 1.0, 2.0] if quick else [0.0, 0.5, 1.0, 2.0, 4.0]},
        "utility": {"regimes": {"fedrlhf": {"clients": 5, "rate": 1.0},
                                "sampled": {"clients": 1000 if quick else 2000,
                                            "rate": 0.05}},
                    "rounds": 30 if quick else 100, "local_steps": 5, "lr": 1.0, "clip": 1.0,
                    "noise": [0.5, 1.0, 2.0, 4.0] if quick else [0.3, 0.5, 1.0, 2.0, 4.0, 8.0]},
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


def run_cell(config: dict, cell: dict) -> dict:
    from fedsim.tabular.experiment import run_tabular

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
             "audit_guesses": audit.get(seed, {}).get("guesses", "")}
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
    return verdicts, {"utility": curves, "audit": audits}


def make_sweep(quick: bool) -> Sweep:
    config = make_config(quick)
    cells = [{"id": f"audit-z{z:g}", "kind": "audit", "z": z} for z in config["audit"]["noise"]]
    for regime in config["utility"]["regimes"]:
        cells += [{"id": f"utility-{regime}-{'none' if z is None else f'z{z:g}'}",
                   "kind": "utility", "regime": regime, "z": z}
                  for z in [None] + config["utility"]["noise"]]
    return Sweep("privacy", config, cells, run_cell, summarize, COLUMNS)
