"""Every figure, regenerated from results on disk (metrics.csv and summary.json); nothing re-runs.

`make_figures(results, out)` finds the sweeps under `results` (a `fedsim sweep all` or
`fedsim validate` folder, or one sweep's folder) and writes PNG and PDF files to `out`.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from fedsim.errors import ConfigError
from fedsim.results import mean_ci


def _theme():
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", palette="colorblind", font_scale=1.05)
    return sns.color_palette("colorblind")


def _read(folder: Path):
    with open(folder / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((folder / "summary.json").read_text())


def _curves(rows, key_fields, x="round", y="gap"):
    """{key: (x sorted, mean, 95% half-width over seeds)} from tidy rows."""
    groups = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[tuple(r[k] for k in key_fields)][float(r[x])].append(float(r[y]))
    out = {}
    for key, by_x in groups.items():
        xs = np.array(sorted(by_x))
        vals = [np.asarray(by_x[v]) for v in xs]
        mean = np.array([v.mean() for v in vals])
        half = np.array([1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0 for v in vals])
        out[key] = (xs, mean, half)
    return out


FLOAT_RESOLUTION = 1e-5   # gaps below this are float32 noise on returns of order 1


def _band(ax, xs, mean, half, color, label, floor: float | None = None, **line):
    """Mean and its 95% band; with `floor`, the curve stops where the mean first falls below
    it (float32 resolution: lower values are rounding noise, not convergence)."""
    if floor is not None:
        below = np.flatnonzero(mean < floor)
        keep = slice(None, below[0] if len(below) else None)
        xs, mean, half = xs[keep], mean[keep], half[keep]
    ax.plot(xs, mean, color=color, label=label, lw=1.6, **line)
    lower = np.maximum(mean - half, mean * 0.05)
    ax.fill_between(xs, lower, mean + half, color=color, alpha=0.2, lw=0)


def _legend(ax, ncol: int = 1):
    """Below the axes, so that it never covers a curve or a marker."""
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol,
              frameon=False)


def _save(fig, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _fit_line(ax, fit, mean_at, color):
    t = np.array([fit["t_min"], fit["t_max"]])
    ax.plot(t, mean_at * (t / fit["t_max"]) ** fit["slope"], "--", color=color, lw=1.2,
            label=f"fit: slope {fit['slope']:.2f}, 95% CI [{fit['lo']:.2f}, {fit['hi']:.2f}]")


def _setting_label(setting: str) -> str:
    r""""beta=8.18,gamma0=53.5" -> mathtext; "eta=1/L_mei" -> $\eta = 1/L_{Mei}$."""
    names = {"eta": r"$\eta$", "beta": r"$\beta$", "gamma0": r"$\gamma_0$"}
    parts = []
    for part in setting.split(","):
        name, _, value = part.partition("=")
        value = r"$1/L_{Mei}$" if value == "1/L_mei" else value
        parts.append(f"{names.get(name, name)} = {value}" if value else part)
    return ", ".join(parts)


def rate_figures(folder: Path, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    colors = _theme()
    rows, summary = _read(folder)
    config = _config(folder)
    regimes = summary["regimes"]
    curves = _curves(rows, ("regime", "setting"))
    instances, seeds = config["exact_constant"]["instances"], config["stochastic"]["seeds"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    panels = [("exact_constant", rf"R1(a) exact PG, constant step $1/L$ ({instances} instances)"),
              ("sgd_decay", rf"R1(b) sampled PG, $\eta_t = \beta/(t+\gamma_0)$ ({seeds} seeds)"),
              ("sgd_constant", f"control: sampled PG, constant steps ({seeds} seeds)"),
              ("exact_reg", "control: exact PG + entropy / KL (linear rate)")]
    for ax, (regime, title) in zip(axes.flat, panels):
        keys = [k for k in curves if k[0] == regime or (regime == "exact_reg" and k[0].startswith("exact_")
                                                         and k[0] != "exact_constant")]
        for i, key in enumerate(sorted(keys)):
            xs, mean, half = curves[key]
            label = _setting_label(key[1]) if regime != "exact_reg" else key[0].replace(
                "exact_", "exact gradients + ")
            _band(ax, xs, mean, half, colors[i], label, FLOAT_RESOLUTION)
        if regime in ("exact_constant", "sgd_decay"):
            xs, mean, _ = curves[keys[0]]
            _fit_line(ax, regimes[regime]["fit"], mean[-1], "black")
            ref = xs >= xs[-1] / 100
            ax.plot(xs[ref], mean[-1] * xs[-1] / xs[ref], ":", color="grey", label=r"$1/T$ reference")
        if regime == "sgd_decay":
            xs, _, _ = curves[keys[0]]
            ax.plot(xs, regimes["sgd_decay"]["bound"], color=colors[3], lw=1.4,
                    label=rf"bound $\nu/(t+\gamma_0)$, $\nu$ = {regimes['sgd_decay']['nu']:.3g}")
        ax.axhline(FLOAT_RESOLUTION, color="grey", ls=":", lw=1,
                   label="float32 resolution (curves stop here)")
        ax.set(xscale="log", yscale="log", xlabel=r"round $T$",
               ylabel=r"gap $J^* - J(\theta_T)$", title=title)
        _legend(ax)
    fig.subplots_adjust(hspace=0.75, wspace=0.3)
    paths = _save(fig, out, "rate_convergence")

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, regime in enumerate(("exact_constant", "sgd_decay")):
        key = next(k for k in curves if k[0] == regime)
        xs, mean, half = curves[key]
        _band(ax, xs, xs * mean, xs * half, colors[i], regime.replace("_", " "))
    ax.set(xscale="log", yscale="log", xlabel=r"round $T$", ylabel=r"$T \times$ gap",
           title=r"$T \times$ gap: a plateau means $O(1/T)$")
    _legend(ax, ncol=2)
    return paths + _save(fig, out, "rate_t_gap")


def clients_figures(folder: Path, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    colors = _theme()
    rows, summary = _read(folder)
    config = _config(folder)
    eps, seeds = config["eps"], config["seeds"]
    scaling = summary["scaling"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 5))
    ax = axes[0]
    for i, regime in enumerate(("stochastic", "exact")):
        K, T = np.array(scaling[regime]["K"]), np.array(scaling[regime]["rounds_to_eps"])
        ax.plot(K, T, "o-", color=colors[i], label=f"{regime} gradients"
                + (f" ({seeds} seeds)" if regime == "stochastic" else " (deterministic)"))
        if regime == "stochastic":
            ax.plot(K, T[0] * K[0] / K, ":", color="grey", label=r"ideal $1/K$ (linear speedup)")
    ax.set(xscale="log", yscale="log", xlabel=r"clients $K$", ylabel=r"rounds to reach $\epsilon$",
           title=rf"R2: rounds to reach $\epsilon$ = {eps:g} against $K$")
    _legend(ax)

    ax = axes[1]
    stochastic = [r for r in rows if r["regime"] == "stochastic"]
    curves = _curves(stochastic, ("K",), x="samples")
    for i, key in enumerate(sorted(curves, key=lambda k: float(k[0]))):
        xs, mean, half = curves[key]
        keep = xs > 0
        _band(ax, xs[keep], mean[keep], half[keep], colors[i % len(colors)], f"$K$ = {key[0]}",
              FLOAT_RESOLUTION)
    ax.axhline(eps, color="grey", ls="--", lw=1, label=rf"$\epsilon$ = {eps:g}")
    ax.set(xscale="log", yscale="log", xlabel=r"total samples $K B E T$ (trajectories)",
           ylabel="gap", title=f"gap against total samples ({seeds} seeds): curves collapse")
    _legend(ax, ncol=3)

    ax = axes[2]
    drift = scaling["drift"]
    K, floor = np.array(drift["K"]), np.array(drift["floor"])
    fit = drift["floor_fit"]
    inside = np.geomspace(K.min(), K.max(), 50)
    beyond = np.geomspace(K.max(), max(K.max() * 4, min(fit["K_stop"] * 2, K.max() * 64)), 50)
    ax.plot(K, floor, "o", color=colors[0], label=f"measured floor (tail mean, {seeds} seeds)",
            zorder=3)
    ax.plot(inside, fit["a"] / inside + fit["d"], "-", color=colors[1],
            label=rf"fit $a/K + d$, $d$ = {fit['d']:.2g} [{fit['d_lo']:.2g}, {fit['d_hi']:.2g}]")
    ax.plot(beyond, fit["a"] / beyond + fit["d"], "--", color=colors[1],
            label=rf"the fit extrapolated beyond the largest $K$ measured ({K.max():.0f})")
    ax.plot(inside, floor[0] * K[0] / inside, ":", color="grey", label=r"$1/K$ (no drift)")
    extrapolated = fit["K_stop"] > K.max()
    ax.axvline(fit["K_stop"], color=colors[2], ls="--", lw=1,
               label=rf"$K_{{stop}} = a/d$ = {fit['K_stop']:.3g}"
               + (" (extrapolated)" if extrapolated else ""))
    ax.set(xscale="log", yscale="log", xlabel=r"clients $K$", ylabel="error floor (gap)",
           title=f"client drift ($E$ = {config['drift_local_steps']}, constant step): "
                 "the speedup stops")
    _legend(ax)
    fig.subplots_adjust(wspace=0.35)
    paths = _save(fig, out, "clients_scaling")

    fig, ax = plt.subplots(figsize=(5, 4))
    lam = scaling["lam_h"]
    T = np.array(lam["rounds_to_eps"], np.float64)
    x = np.array(lam["lam_h_max"])
    ax.plot(x[np.isfinite(T)], T[np.isfinite(T)], "o-", color=colors[0],
            label=rf"reached $\epsilon$ = {config['lam_eps']:g} ({seeds} seeds)")
    for j, xi in enumerate(x[~np.isfinite(T)]):
        ax.axvline(xi, color=colors[3], ls="--",
                   label=r"did not reach $\epsilon$ in the run" if j == 0 else None)
    ax.set(yscale="log", xlabel=r"$\lambda H_{max}$", ylabel=r"rounds to reach $\epsilon$",
           title=r"samples needed grow with $\lambda H_{max}$")
    _legend(ax)
    return paths + _save(fig, out, "clients_lambda")


def tradeoff_figures(folder: Path, out: Path) -> list[Path]:
    """R3: the measured loss and gain on their own scales (their growth in lambda is visible),
    the bounds as ratios bound / measured, and the per-client gains."""
    import matplotlib.pyplot as plt

    colors = _theme()
    rows, summary = _read(folder)
    config = _config(folder)
    gamma, h_max = config["instance"]["gamma"], config["instance"]["h_max"]
    instances = config["instances"]
    constant = [r for r in rows if r["regime"] == "constant"]
    per_client = [r for r in constant if int(r["client"]) >= 0]
    opt_rows = [r for r in per_client if int(r["client"]) == 0]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.6))
    curve = lambda sel, y: _curves(sel, ("regime",), x="lam", y=y)[("constant",)]

    def measured(ax, values, color, label, ylabel, title):
        _band(ax, *values, color, label)
        ax.plot(values[0], values[1], "o", color=color, ms=3)
        ax.set(xlabel=r"$\lambda$", ylabel=ylabel, title=title)
        _legend(ax)

    loss = curve(opt_rows, "intrinsic_loss")
    measured(axes[0], loss, colors[0],
             rf"$J^{{0*}} - J^0(\bar\pi^*)$ (mean, 95% CI, {instances} instances)",
             "intrinsic return lost", r"R3: global performance lost vs $\lambda$")
    gain = curve(per_client, "personal_gain")
    measured(axes[1], gain, colors[2],
             rf"$J_k(\pi_k^*) - J_k(\bar\pi^*)$ (mean over clients and {instances} instances)",
             "personalisation gain", r"R3: personalisation gain vs $\lambda$")

    ax = axes[2]
    bound = curve(opt_rows, "intrinsic_loss_bound")
    gbound = curve(per_client, "personal_gain_bound")
    positive = loss[1] > 0
    ax.plot(loss[0][positive], bound[1][positive] / loss[1][positive], "o-", color=colors[0],
            label=r"loss bound $2\|\bar r - R_0\|_\infty/(1-\gamma)$ / measured loss")
    ax.plot(loss[0][positive], 2 * loss[0][positive] * h_max / (1 - gamma) / loss[1][positive],
            "s:", color="grey", label=r"worst case $2\lambda H_{max}/(1-\gamma)$ / measured loss")
    positive = gain[1] > 0
    ax.plot(gain[0][positive], gbound[1][positive] / gain[1][positive], "^-", color=colors[2],
            label=r"gain bound $2\|r_k - \bar r\|_\infty/(1-\gamma)$ / measured gain")
    ax.axhline(1, color="black", lw=0.8)
    ax.set(yscale="log", xlabel=r"$\lambda$", ylabel="bound / measured (> 1: the bound holds)",
           title="how loose the bounds are")
    _legend(ax)

    ax = axes[3]
    seed0 = [r for r in per_client if int(r["seed"]) == 0]
    by_client = _curves(seed0, ("client",), x="lam", y="personal_gain")
    for i, key in enumerate(sorted(by_client, key=lambda k: int(k[0]))):
        xs, mean, _ = by_client[key]
        ax.plot(xs, mean, "o-", ms=3, color=colors[i % len(colors)], label=f"client {key[0]}")
    ax.set(xlabel=r"$\lambda$", ylabel="personalisation gain", title="per-client gains (instance 0)")
    _legend(ax, ncol=3)
    fig.subplots_adjust(wspace=0.35)
    return _save(fig, out, "tradeoff")


def movielens_figures(folder: Path, out: Path) -> list[Path]:
    """Like the authors' MovieLens figures: accuracy by round (with the global line), and the
    per-client accuracy and Spearman distributions by round, for FedRLHF, at the first lambda;
    with several lambdas, a fourth panel: the personalisation trade-off (accuracy on the true
    labels against accuracy on the users' taste labels, global and personal models)."""
    import matplotlib.pyplot as plt

    colors = _theme()
    rows, summary = _read(folder)
    with open(folder / "clients.csv") as f:
        clients = list(csv.DictReader(f))
    results = summary["results"]
    lams = sorted({r["lam"] for r in results})
    first = results[0]["lam"]
    rows = [r for r in rows if float(r["lam"]) == first]
    clients = [r for r in clients if float(r["lam"]) == first]
    fig, axes = plt.subplots(1, 3 + (len(lams) > 1), figsize=(13 + 4.3 * (len(lams) > 1), 3.8))
    ax = axes[0]
    for i, algorithm in enumerate(dict.fromkeys(r["algorithm"] for r in results)):
        for split, style in (("test", "-"), ("train", "--")):
            sel = [r for r in rows if r["algorithm"] == algorithm and r["split"] == split]
            (xs, mean, half), = _curves(sel, ["algorithm"], y="accuracy").values()
            _band(ax, xs, mean, half, colors[i], f"{algorithm} ({split})")
            ax.lines[-1].set_linestyle(style)
    ax.axhline(summary["user_majority_test_accuracy"], color="grey", ls=":", label="user majority")
    ax.set(xlabel="round", ylabel="accuracy (pooled over ratings)",
           title=rf"{summary['clients']} clients, $\lambda$ = {first:g}, 95% CI over "
                 f"{len({r['seed'] for r in rows})} seeds")
    _legend(ax, ncol=2)
    fed = [r for r in clients if r["algorithm"] == "fedavg" and r["seed"] == "0"]
    rounds = sorted({int(r["round"]) for r in fed})
    for ax, column, label in ((axes[1], "test_accuracy", "test accuracy"),
                              (axes[2], "test_spearman", "test Spearman(score, label)")):
        values = [[float(r[column]) for r in fed if int(r["round"]) == t and r[column] != "nan"]
                  for t in rounds]
        ax.violinplot(values, positions=rounds, showmedians=True, widths=0.8)
        ax.set(xlabel="round", ylabel=label, title="FedRLHF per client (seed 0)")
    if fed:
        weighted = [r for r in rows if r["algorithm"] == "fedavg" and r["split"] == "test"
                    and r["seed"] == "0"]
        axes[1].plot([int(r["round"]) for r in weighted], [float(r["accuracy"]) for r in weighted],
                     "k-", lw=1.2, label="global (pooled)")
        _legend(axes[1])
    if len(lams) > 1:
        ax = axes[3]
        fedavg = sorted((r for r in results if r["algorithm"] == "fedavg"), key=lambda r: r["lam"])
        for i, (model, suffix) in enumerate((("global", ""), ("personal", "_personal"))):
            x = [r[f"test{suffix}"]["accuracy"] for r in fedavg]    # (mean, CI half-width)
            y = [r[f"taste{suffix}"]["accuracy"] for r in fedavg]
            ax.errorbar([m for m, _ in x], [m for m, _ in y], xerr=[h for _, h in x],
                        yerr=[h for _, h in y], fmt="o-", ms=4, color=colors[i],
                        label=f"FedRLHF, {model} model")
            for r, (xi, _), (yi, _) in zip(fedavg, x, y):
                ax.annotate(f"{r['lam']:g}", (xi, yi), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set(xlabel="accuracy on true labels (performance)",
               ylabel="accuracy on taste labels (personalisation)",
               title=r"trade-off in $\lambda$ (labels: $\lambda$)")
        _legend(ax)
    fig.tight_layout()
    return _save(fig, out, "movielens")


def fedkl_figures(folder: Path, out: Path) -> list[Path]:
    """fedkl: the learning curves as the poster would plot them (each client's own-return gap
    against samples per client, isolated vs federated, at both heterogeneity levels), the
    beta x alpha heat maps of the fixed point, and the own-return vs consensus trade-off."""
    import matplotlib.pyplot as plt

    colors = _theme()
    rows, summary = _read(folder)
    curves = [r for r in rows if r["part"] == "curve"]
    panels = list(summary["selected"])   # "learner lambda", in the sweep's order
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.2), squeeze=False)
    fig.subplots_adjust(wspace=0.3)
    for ax, key in zip(axes[0], panels):
        learner, lam = key.split()
        shown = list(dict.fromkeys(["isolated", summary["selected"][key]["setting"],
                                    summary["config_setting"], "fedavg", "centralized"]))
        sel = [r for r in curves if r["learner"] == learner and f"{float(r['lam']):g}" == lam]
        for r in sel:
            r["setting"] = r["algorithm"] if r["algorithm"] != "fedkl" else (
                f"fedkl beta={float(r['beta']):g} alpha={float(r['alpha']):g} {r['graph']}")
        by = _curves(sel, ("setting",), x="samples", y="own_gap")
        for i, name in enumerate(n for n in shown if (n,) in by):
            xs, mean, half = by[(name,)]
            _band(ax, xs, mean, half, colors[i % len(colors)], name,
                  ls="--" if name in ("fedavg", "centralized") else "-")
        ax.set(xscale="log", yscale="log", xlabel="trajectories per client",
               ylabel=r"own-return gap $J_k^* - J_k(\pi_k)$ (mean over clients)",
               title=rf"{learner.upper()}, $\lambda$ = {lam}: isolated vs federated")
        _legend(ax, ncol=2)
    written = _save(fig, out, "fedkl_curves")

    grid = [r for r in rows if r["part"] == "fixed_point" and r["own_loss"] != ""
            and r["graph"] == "complete"]
    alphas = sorted({float(r["alpha"]) for r in grid})
    betas = sorted({float(r["beta"]) for r in grid})
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    for ax, metric, title in ((axes[0], "own_loss", "own-return loss"),
                              (axes[1], "spread", "spread (max TV to consensus)")):
        table = np.array([[np.mean([float(r[metric]) for r in grid if float(r["alpha"]) == a
                                    and float(r["beta"]) == b]) for b in betas] for a in alphas])
        image = ax.imshow(table, origin="lower", aspect="auto", cmap="viridis")
        ax.grid(False)
        fig.colorbar(image, ax=ax)
        ax.set(xticks=range(len(betas)), xticklabels=[f"{b:g}" for b in betas],
               yticks=range(len(alphas)), yticklabels=[f"{a:g}" for a in alphas],
               xlabel=r"$\beta$", ylabel=r"self-weight $\alpha$",
               title=f"fixed point (complete graph):\n{title}")
    ax = axes[2]
    points = [r for r in rows if r["part"] == "fixed_point" and r["own_loss"] != ""
              and float(r["alpha"]) < 1]
    for i, graph in enumerate(sorted({r["graph"] for r in points})):
        sel = [r for r in points if r["graph"] == graph]
        by = _curves(sel, ("graph",), x="beta_eff", y="own_loss")[(graph,)]
        spread = _curves(sel, ("graph",), x="beta_eff", y="spread")[(graph,)]
        ax.plot(spread[1], by[1], "o-", color=colors[i], ms=3, label=graph)
    ax.set(xscale="log", yscale="log", xlabel="spread (how far apart the clients stay)",
           ylabel="own-return loss", title=r"trade-off along $\beta(1-\alpha)$")
    _legend(ax, ncol=3)
    fig.subplots_adjust(wspace=0.3)
    return written + _save(fig, out, "fedkl_fixed_point")


def imdb_figures(folder: Path, out: Path) -> list[Path]:
    """Like the authors' IMDb figures: the global reward against rounds and against samples per
    algorithm (mean and 95% band over seeds; the centralized learners dashed), each client's
    reward against rounds (FedRLHF solid, isolated dotted); and the lambda_k trade-off: the
    last round's change from the pre-trained model in P(positive), fluency and the frozen
    model's perplexity of the responses, against lambda_k."""
    import matplotlib.pyplot as plt

    colors = _theme()
    rows, summary = _read(folder)
    with open(folder / "clients.csv") as f:
        clients = list(csv.DictReader(f))
    algorithms = list(summary["results"])
    seeds = len({r["seed"] for r in rows})
    style = lambda name: "--" if name.startswith("centralized") else "-"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, x, label in ((axes[0], "round", "round"),
                         (axes[1], "samples", "prompts answered (all clients)")):
        by = _curves(rows, ("algorithm",), x=x, y="reward")
        for i, name in enumerate(algorithms):
            _band(ax, *by[(name,)], colors[i % len(colors)], name, ls=style(name))
        ax.set(xlabel=label, ylabel="mean reward (clients weighted)",
               title=f"global reward, 95% CI over {seeds} seed(s)")
        _legend(ax)
    ax = axes[2]
    lams = sorted({float(r["lam"]) for r in clients})
    palette = plt.get_cmap("viridis")(np.linspace(0.1, 0.9, len(lams)))
    for name, line in (("fedrlhf", "-"), ("isolated", ":")):
        sel = [r for r in clients if r["algorithm"] == name]
        by = _curves(sel, ("lam",), y="reward")
        for lam, color in zip(lams, palette):
            key = next((k for k in by if float(k[0]) == lam), None)
            if key is not None:
                xs, mean, half = by[key]
                ax.plot(xs, mean, line, color=color, lw=1.6,
                        label=rf"$\lambda$ = {lam:.2f}" if name == "fedrlhf" else None)
    ax.set(xlabel="round", ylabel="client reward (its own lambda_k)",
           title="per client: FedRLHF (solid), isolated (dotted)")
    _legend(ax)
    fig.tight_layout()
    written = _save(fig, out, "imdb_rewards")

    last = max(int(r["round"]) for r in clients)
    start = {(r["algorithm"], r["seed"], r["client"]): r for r in clients if r["round"] == "0"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, metric, label in ((axes[0], "sentiment", "gain in P(positive)"),
                              (axes[1], "fluency", "change in fluency (reward's term)"),
                              (axes[2], "perplexity", "change in perplexity (frozen model)")):
        for i, name in enumerate(algorithms):
            change = [{"lam": r["lam"], "seed": r["seed"], "change": float(r[metric])
                       - float(start[(name, r["seed"], r["client"])][metric])}
                      for r in clients if r["algorithm"] == name and int(r["round"]) == last]
            xs, mean, half = _curves(change, (), x="lam", y="change")[()]
            ax.errorbar(xs, mean, yerr=half, fmt="o" + style(name), ms=4, capsize=2,
                        color=colors[i % len(colors)], label=name)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(xlabel=r"client's $\lambda_k$", ylabel=label,
               title=f"round {last} against the pre-trained model")
        _legend(ax)
    fig.tight_layout()
    written += _save(fig, out, "imdb_tradeoff")
    table = out / "imdb_table.md"
    table.write_text(imdb_table(summary))
    return written + [table]


def imdb_table(summary: dict) -> str:
    """The IMDb comparison as Markdown, from summary.json: per algorithm the last round's global
    figures and each client's P(positive), then the paired differences to isolated."""
    results = summary["results"]
    cell = lambda f, d=3: f"{f[0]:.{d}f} ± {f[1]:.{d}f}"
    lams = summary["lams"]
    any_result = next(iter(results.values()))
    pre = any_result["pretrained"]
    lines = ["| algorithm | reward | P(positive) | fluency | perplexity | distinct-2 | "
             "KL to pre-trained | " + " | ".join(f"P(positive), λ = {l:.2f}" for l in lams)
             + " | Spearman(gain, λ) |",
             "|---" * (8 + len(lams)) + "|",
             f"| pre-trained (round 0) | {pre['reward']:.3f} | {pre['sentiment']:.3f} | "
             f"{pre['fluency']:.3f} | {pre['perplexity']:.1f} | {pre['distinct_2']:.3f} | 0 | "
             + " | ".join(f"{v:.3f}" for v in _round0_clients(any_result)) + " | |"]
    for name, r in results.items():
        g = r["global"]
        lines.append(
            f"| {name} | {cell(g['reward'])} | {cell(g['sentiment'])} | {cell(g['fluency'])} | "
            f"{cell(g['perplexity'], 1)} | {cell(g['distinct_2'])} | "
            f"{cell(g['kl_to_pretrained'], 1)} | "
            + " | ".join(cell(c["sentiment"]) for c in r["clients"])
            + f" | {cell(r['sentiment_gain_spearman_with_lam'], 2)} |")
    paired = summary.get("versus_isolated") or {}
    if paired:
        lines += ["", "| minus isolated (paired by seed) | reward | P(positive) | fluency | "
                      "perplexity | KL to pre-trained | largest per-client difference |",
                  "|---" * 7 + "|"]
        for name, d in paired.items():
            lines.append(f"| {name} | {cell(d['reward'])} | {cell(d['sentiment'])} | "
                         f"{cell(d['fluency'])} | {cell(d['perplexity'], 1)} | "
                         f"{cell(d['kl_to_pretrained'], 1)} | "
                         f"{d['max_abs_client_difference']:.3g} |")
    return "\n".join(lines) + "\n"


def privacy_figures(folder: Path, out: Path) -> list[Path]:
    """The privacy sweep: the one-run audit's lower bound under the accountant's epsilon
    against z, and the final gap against epsilon in each participation regime."""
    import matplotlib.pyplot as plt

    colors = _theme()
    rows, summary = _read(folder)
    tasks = [kind for kind in TASK_MEASURES if any(r["kind"] == kind for r in rows)]
    fig, axes = plt.subplots(1 + bool(tasks), 2, figsize=(11, 4.4 * (1 + bool(tasks))),
                             squeeze=False)
    for ax, kind in zip(axes[-1] if tasks else [], tasks):
        _task_privacy_panel(ax, [r for r in rows if r["kind"] == kind], kind, colors)
    axes = axes[0]
    ax = axes[0]
    audit = [r for r in rows if r["kind"] == "audit"]
    zs = sorted({float(r["noise_multiplier"]) for r in audit})
    lower = _curves(audit, ("kind",), x="noise_multiplier", y="audit_epsilon_lower")[("audit",)]
    finite = [z for z in zs if z > 0]
    upper = [float(next(r["epsilon"] for r in audit if float(r["noise_multiplier"]) == z))
             for z in finite]
    ax.plot(finite, upper, "o-", color=colors[3], label="accountant (RDP): upper bound")
    _band(ax, *lower, colors[0], "one-run audit: lower bound (mean, 95% CI over seeds)")
    ax.plot(lower[0], lower[1], "s", color=colors[0], ms=4)
    delta = _config(folder).get("delta", 1e-5)
    ax.set(yscale="log", xlabel="noise multiplier z",
           ylabel=rf"$\varepsilon$ at $\delta$ = {delta:g}",
           title="the one-run audit under the accountant")
    _legend(ax)
    ax = axes[1]
    utility = [r for r in rows if r["kind"] == "utility"]
    for i, regime in enumerate(sorted({r["regime"] for r in utility})):
        sel = [r for r in utility if r["regime"] == regime and r["epsilon"] != ""]
        base = [float(r["gap"]) for r in utility if r["regime"] == regime and r["epsilon"] == ""]
        curve = _curves(sel, ("regime",), x="epsilon", y="gap")[(regime,)]
        first = sel[0]
        label = (f"{regime}: K = {first['clients']}, q = {float(first['rate']):g}, "
                 f"T = {first['rounds']}")
        _band(ax, *curve, colors[i], label)
        ax.plot(curve[0], curve[1], "o", color=colors[i], ms=3)
        if base:
            ax.axhline(np.mean(base), color=colors[i], ls=":", lw=1,
                       label=f"{regime} without DP")
    ax.set(xscale="log", xlabel=r"$\varepsilon$ (RDP, after the last round)",
           ylabel=r"final gap $J^* - J$", title="what privacy costs (DP-FedAvg, C fixed)")
    _legend(ax)
    fig.subplots_adjust(wspace=0.3, hspace=0.55)
    table = out / "privacy_table.md"
    table.write_text(privacy_table(rows))
    return _save(fig, out, "privacy") + [table]


# the privacy sweep's task cells: (measure, its axis label)
TASK_MEASURES = {"movielens": ("accuracy", "MovieLens held-out accuracy"),
                 "imdb": ("reward", "IMDb reward (global, last round)")}


def _task_privacy_panel(ax, rows: list[dict], kind: str, colors) -> None:
    """A task's measure against epsilon, one curve per (q, T), its run without DP dotted."""
    measure, label = TASK_MEASURES[kind]
    settings = sorted({(float(r["rate"]), int(r["rounds"])) for r in rows}, reverse=True)
    for i, (q, T) in enumerate(settings):
        sel = [r for r in rows if (float(r["rate"]), int(r["rounds"])) == (q, T)]
        private = [r for r in sel if r["epsilon"] != ""]
        base = [float(r[measure]) for r in sel if r["epsilon"] == ""]
        name = f"K = {sel[0]['clients']}, q = {q:g}, T = {T}"
        if private:
            xs, mean, half = _curves(private, ("kind",), x="epsilon", y=measure)[(kind,)]
            ax.errorbar(xs, mean, yerr=half, fmt="o-", color=colors[i], ms=4, capsize=3,
                        label=f"{name}: DP-FedAvg (mean, 95% CI)")
        if base:
            ax.axhline(np.mean(base), color=colors[i], ls=":", lw=1.2, label=f"{name}: no DP")
    ax.set(xscale="log", xlabel=r"$\varepsilon$ (RDP, after the last round)", ylabel=label,
           title=f"{kind}: what privacy costs (adaptive clipping)")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())   # a decade or less: no crowded labels
    _legend(ax)


def privacy_table(rows: list[dict]) -> str:
    """The privacy sweep's two tables (Markdown) from its metrics.csv rows: the audit's lower
    bound beside the accountant's epsilon, and the final gap at each epsilon."""
    def ci(values):
        mean, half = mean_ci([float(v) for v in values])
        return f"{mean:.3g} ± {half:.2g}"

    out = ["| z | accountant ε (RDP) | one-run audit: ε ≥ (mean ± 95% CI) | largest over seeds |",
           "|---|---|---|---|"]
    audit = [r for r in rows if r["kind"] == "audit"]
    for z in sorted({float(r["noise_multiplier"]) for r in audit}):
        sel = [r for r in audit if float(r["noise_multiplier"]) == z]
        out.append(f"| {z:g} | {float(sel[0]['epsilon']):.3g} | "
                   f"{ci(r['audit_epsilon_lower'] for r in sel)} | "
                   f"{max(float(r['audit_epsilon_lower']) for r in sel):.3g} |")
    out += ["", "| regime | K | q | T | z | ε (RDP) | final gap J* − J (mean ± 95% CI) |",
            "|---|---|---|---|---|---|---|"]
    utility = [r for r in rows if r["kind"] == "utility"]
    for regime in sorted({r["regime"] for r in utility}):
        sel = [r for r in utility if r["regime"] == regime]
        for z in sorted({r["noise_multiplier"] for r in sel}, key=lambda z: -1 if z == ""
                        else float(z)):
            cell = [r for r in sel if r["noise_multiplier"] == z]
            first = cell[0]
            eps = "∞ (no DP)" if z == "" else f"{float(first['epsilon']):.3g}"
            out.append(f"| {regime} | {first['clients']} | {float(first['rate']):g} | "
                       f"{first['rounds']} | {'none' if z == '' else z} | {eps} | "
                       f"{ci(r['gap'] for r in cell)} |")
    for kind, (measure, label) in TASK_MEASURES.items():
        sel = [r for r in rows if r["kind"] == kind]
        if not sel:
            continue
        extra = ["sentiment"] if kind == "imdb" else []
        out += ["", f"| {kind}: K | q | T | z | ε (RDP) | {measure} (mean ± 95% CI) |"
                + "".join(f" {e} |" for e in extra), "|---" * (6 + len(extra)) + "|"]
        for key in sorted({(float(r["rate"]), int(r["rounds"]), r["noise_multiplier"])
                           for r in sel}, key=lambda k: (-k[0], k[1], -1 if k[2] == ""
                                                         else float(k[2]))):
            cell = [r for r in sel if (float(r["rate"]), int(r["rounds"]),
                                       r["noise_multiplier"]) == key]
            q, T, z = key
            eps = "∞ (no DP)" if z == "" else f"{float(cell[0]['epsilon']):.3g}"
            out.append(f"| {cell[0]['clients']} | {q:g} | {T} | {'none' if z == '' else z} | "
                       f"{eps} | {ci(r[measure] for r in cell)} |"
                       + "".join(f" {ci(r[e] for r in cell)} |" for e in extra))
    return "\n".join(out) + "\n"


def _round0_clients(result: dict) -> list[float]:
    """Each client's P(positive) before RLHF: the last round's minus its gain."""
    return [c["sentiment"][0] - c["sentiment_gain"][0] for c in result["clients"]]


DRAWERS = {"rate": rate_figures, "clients": clients_figures, "tradeoff": tradeoff_figures,
           "fedkl": fedkl_figures, "movielens": movielens_figures, "imdb": imdb_figures,
           "privacy": privacy_figures}


class ResultsError(FileNotFoundError):
    """Results on disk that are missing, malformed or of another kind (one line to the user)."""


def _summary(path: Path) -> dict:
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultsError(f"--results: {path} is not valid JSON ({error})") from error
    if not isinstance(summary, dict):
        raise ResultsError(f"--results: {path} is not valid JSON for fedsim (not an object)")
    return summary


def make_figures(results: Path, out: Path) -> list[Path]:
    results, out = Path(results), Path(out)
    if not results.exists():
        raise ResultsError(f"no results at {results}: run `fedsim validate` or `fedsim sweep` first")
    if out.exists() and not out.is_dir():
        raise ConfigError("out", str(out), "must be a folder for the figures (it is a file)")
    found = {}
    if (results / "summary.json").exists():
        summary = _summary(results / "summary.json")
        name = summary.get("sweep") or summary.get("experiment")
        if name in DRAWERS:
            found[name] = results
    for name in DRAWERS:
        if (results / name / "summary.json").exists():
            found[name] = results / name
    if not found:
        raise ResultsError(f"no sweep results (summary.json) under {results}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, folder in found.items():
        try:
            written += DRAWERS[name](folder, out)
        except (KeyError, ValueError, IndexError, TypeError, csv.Error,
                FileNotFoundError) as error:
            raise ResultsError(f"--results: the {name} results in {folder} cannot be drawn: "
                               f"metrics.csv, summary.json or config.json is missing, malformed "
                               f"or from another version ({type(error).__name__}: {error})") from error
    return written
