"""`fedsim run movielens`: FedRLHF, centralized RLHF and local-only training on MovieLens.

Several lambdas run in one call (one compilation per algorithm): the personalisation
trade-off. Writes config.json, metrics.csv (algorithm, lam, seed, round, split: accuracy,
AUC, mean and median per-client figures), clients.csv (per client and round: accuracy,
Spearman, the personal model's accuracy and its gain) and summary.json ("results": final
figures per algorithm and lambda with 95% confidence intervals over seeds, membership
inference on the last round's models (fedsim.privacy.membership: per rating, and per user
when --clients leaves some of the data's users out); the user-majority baseline; timings).

Splits: "test", each user's held-out test ratings; "train", the training ratings, for
comparison with the authors, who measured on the training split; "val", for model
selection; "taste", the test ratings against the users' taste-biased labels (how far the
model follows the clients' feedback). "_personal" splits use each client's locally updated
model instead of the global one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from fedsim.engine import (Federation, HParams, log_checkpoints, make_train,
                           raise_if_nonfinite, step_sizes)
from fedsim.interrupt import stop_if_requested
from fedsim.memory import FLOAT, check_fits
from fedsim.movielens import data as D
from fedsim.movielens.clients import ClientData, group_users, make_clients, select_users
from fedsim.movielens.config import MovieLensRunConfig
from fedsim.movielens.metrics import evaluate_scores
from fedsim.movielens.task import (MovieLensHParams, init_params, make_task, movie_inputs,
                                   num_params, public_scores)
from fedsim.privacy.membership import (attack_scores, evaluate_attacks, rating_losses,
                                       user_attack_scores)
from fedsim.privacy.settings import epsilon_by_round, privacy_record
from fedsim.provenance import MOVIELENS, code_fingerprint
from fedsim.results import mean_ci, read_json, write_csv, write_json
from fedsim.rundir import RunFolder

# The models whose scores the rating-level membership attacks read, (members' scores,
# non-members'): the released global parameters alone (no private user embedding), and each
# client's own personal model. The user-level attack reads the global one (_user_level).
MEMBERSHIP_MODELS = {"global": ("train_score_public", "test_score_public"),
                     "personal": ("train_score_personal", "test_score_personal")}
# Reported splits: (model scores, the part of the ratings, its labels). "taste": the test
# ratings labelled by the users' taste-biased preference (clients.py), the personalisation
# side of the trade-off.
SPLITS = {
    "test": ("test_score", "test", "label"),
    "test_personal": ("test_score_personal", "test", "label"),
    "taste": ("test_score", "test", "taste_label"),
    "taste_personal": ("test_score_personal", "test", "taste_label"),
    "train": ("train_score", "train", "label"),
    "val": ("val_score", "val", "label"),
}


def load_ratings(config: MovieLensRunConfig) -> D.Ratings:
    if config.dataset == "synthetic":
        return D.synthetic(seed=config.seed)
    if config.hub is not None:
        return D.load_hub(config.hub)
    return D.load(D.locate(config.data, config.dataset), config.dataset)


def user_majority_accuracy(clients: ClientData) -> float:
    """Each user's majority training label, predicted for its test ratings (ties: positive)."""
    members = clients.member_mask.shape[1]
    user = lambda part: (np.arange(part.mask.shape[0])[:, None] * members
                         + part.member)   # (client, member) as one index
    size = clients.member_mask.size
    train, test = clients.train, clients.test
    weights = train.mask.ravel()
    pos = np.bincount(user(train).ravel(), train.label.ravel() * weights, size)
    count = np.bincount(user(train).ravel(), weights, size)
    majority = (pos >= count / 2).astype(np.float32)[user(test)]
    correct = (test.label == majority) * test.mask
    return float(correct.sum() / test.mask.sum())


def _compile(task, fed: Federation, params0, keys, data, weights, hparams, lrs, checkpoints):
    """The whole run (init, rounds, logged evaluations), vmapped over training seeds and
    compiled once; client data, weights and hyperparameters (lambda) are arguments, so other
    lambdas reuse it."""
    train = make_train(task, fed.algorithm_parts(None, weights.shape[0]), fed)

    def one(params0, key, data, weights, hparams):
        state, metrics = train(params0, data, weights, hparams, key, lrs, jnp.asarray(checkpoints))
        return state.nonfinite_round, metrics, state.params

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None, None, None))).lower(
        params0, keys, data, weights, hparams).compile()


def estimate_memory(config: MovieLensRunConfig, clients: dict, num_params: int,
                    checkpoints: int) -> list[tuple[str, float, str]]:
    """(what, bytes, options) of the run's largest allocations (fedsim.memory.check_fits)."""
    K, seeds = clients.member_mask.shape[0], config.num_seeds
    scores = (sum(clients.part(part).mask.size for _, part, _ in SPLITS.values())
              + 2 * clients.train.mask.size + clients.test.mask.size)   # the attacks' scores
    return [
        # each client holds the shared parameters and its optimiser's two moments
        ("the parameters each client holds (seeds x clients x parameters, with Adam moments)",
         4.0 * FLOAT * seeds * (K + 2) * num_params,
         "--num-seeds, --clients, --dim, --hidden"),
        ("the logged scores of every rating (seeds x logged rounds x ratings, device and host)",
         2.0 * FLOAT * seeds * checkpoints * scores, "--num-seeds, --rounds"),
        ("the clients' data", 8.0 * sum(v.size for v in jax.tree.leaves(clients)), "--clients"),
    ]


def run_movielens(config: MovieLensRunConfig, out: Path | None = None,
                  progress: bool = True) -> dict:
    """Run every (algorithm, lambda) cell of `config`. With `out`, each finished cell is saved
    under out/cells/ as it ends, and a run killed or interrupted there resumes with the
    cells it has not finished. The data are loaded and the sizes checked first, so that bad
    data or an oversize run is refused before the folder is taken."""
    config.validate()
    wall = time.perf_counter()
    problem = _prepare(config)
    if out is None:
        return _run(config, problem, None, progress, wall)
    with RunFolder(out, {"task": "movielens", **dataclasses.asdict(config)}) as folder:
        return _run(config, problem, folder.path, progress, wall)


class _Problem(NamedTuple):
    ratings: D.Ratings
    groups: list
    clients: ClientData    # numpy arrays with a leading client axis (make_clients)
    local_steps: int       # E: local epochs x steps per epoch
    steps_per_epoch: int
    task: object
    init: object           # key -> the Q-network's initial parameters
    checkpoints: np.ndarray
    public_score: object   # (seeds' global parameters, movies) -> (seeds, movies) scores


def _prepare(config: MovieLensRunConfig) -> _Problem:
    """Load and split the data, build the clients and the task, and check that the run fits
    in memory; nothing is on the device yet."""
    ratings = load_ratings(config)
    split = D.split_per_user(ratings, seed=config.seed)
    groups = group_users(select_users(ratings, config.clients, config.seed,
                                      config.users_per_client),
                         config.users_per_client, config.seed)
    clients = make_clients(ratings, split, groups, config.feedback, config.seed)
    steps_per_epoch = math.ceil(float(clients.train.count.mean()) / config.model.batch)
    task, net = make_task(ratings.num_movies, ratings.genres, config.model, ratings.year)
    inputs_dim = config.model.inputs_dim(ratings.genres.shape[1])
    init = lambda key: init_params(net, key, inputs_dim, config.model.dim)
    checkpoints = (np.arange(1, config.rounds + 1, dtype=np.int32) if config.rounds <= 20
                   else log_checkpoints(config.rounds, 20))
    if config.privacy.dp_enabled:   # DP's settings (and a target epsilon) checked for K now
        config.federation("fedavg", 1, len(groups)).validate(len(groups))
    check_fits(estimate_memory(config, clients,
                               num_params(ratings.num_movies, inputs_dim, config.model),
                               len(checkpoints)))
    inputs = jnp.asarray(movie_inputs(ratings.genres, ratings.year, config.model))
    # every seed's released parameters scored at once (jitted in _run, once for all cells)
    public_score = jax.vmap(lambda params, movie: public_scores(net, inputs, params, movie),
                            (0, None))
    return _Problem(ratings, groups, clients, config.local_epochs * steps_per_epoch,
                    steps_per_epoch, task, init, checkpoints, public_score)


def _run(config: MovieLensRunConfig, problem: _Problem, out: Path | None, progress: bool,
         wall: float) -> dict:
    problem = problem._replace(public_score=jax.jit(problem.public_score))
    ratings, groups, clients, E = problem.ratings, problem.groups, problem.clients, problem.local_steps
    data = jax.tree.map(jnp.asarray, clients)
    counts = clients.train.count
    weights = jnp.asarray(counts / counts.sum())   # the authors' FedAvg weights
    keys = jax.vmap(jax.random.key)(jnp.arange(config.num_seeds, dtype=jnp.uint32) + 1000 * config.seed)
    params0 = jax.vmap(problem.init)(keys)
    lrs = jnp.asarray(step_sizes(config.schedule, config.rounds, E, lr=config.lr))

    cells = [(a, lam) for a in config.algorithms for lam in config.lams]
    cache = _Cells(out)
    compiled, done = {}, []
    with tqdm(cells, desc="algorithm x lambda", disable=not progress) as bar:
        for algorithm, lam in bar:
            cell = cache.load(algorithm, lam)
            if cell is None:
                cell = _run_cell(config, problem, algorithm, lam, compiled, params0, keys,
                                 data, weights, lrs)
                cache.save(cell)
            done.append(cell)
            if out is not None:   # what is finished is readable as it goes
                _write_tables(out, done)
                stop_if_requested(f"stopped after {len(done)} of {len(cells)} algorithm x "
                                  f"lambda cells; saved in {out}; run the same command to "
                                  f"resume")
    summary = {"experiment": "movielens", "results": [c["result"] for c in done]}
    summary.update({
        "clients": len(groups), "users": int(sum(len(g) for g in groups)),
        # the data's users who were never clients: the user-level attack's non-members
        "users_not_drawn": ratings.num_users - int(sum(len(g) for g in groups)),
        "local_steps_per_round": E, "steps_per_epoch": problem.steps_per_epoch,
        "user_majority_test_accuracy": user_majority_accuracy(clients),
        "ratings": int(len(ratings.user)), "source": ratings.source,
        "data_sha256": D.file_digest(Path(ratings.source)) if Path(ratings.source).is_file() else None,
        "cells_computed_this_run": cache.computed, "cells_reused": len(cells) - cache.computed,
        "wall_seconds": time.perf_counter() - wall,
        "note": "(mean, 95% CI half-width) over training seeds; test = held-out 20% per user"})
    private = [c["result"] for c in done if "epsilon" in c["result"]]
    if private:   # the DP-FedAvg cells' final epsilon (one accountant for all of them)
        summary |= {"epsilon": private[0]["epsilon"], "privacy": private[0]["privacy"]}
    if out is not None:
        write_json(out / "summary.json", summary)
    return {"rows": [r for c in done for r in c["rows"]],
            "client_rows": [r for c in done for r in c["client_rows"]], "summary": summary}


METRICS_COLUMNS = ["algorithm", "lam", "seed", "round", "split", "accuracy", "auc",
                   "mean_client_accuracy", "median_client_spearman", "epsilon"]
CLIENT_COLUMNS = ["algorithm", "lam", "seed", "round", "client", "users", "test_accuracy",
                  "test_spearman", "personal_test_accuracy", "personalization_gain"]


def _write_tables(out: Path, cells: list[dict]) -> None:
    write_csv(out / "metrics.csv", METRICS_COLUMNS, [r for c in cells for r in c["rows"]])
    write_csv(out / "clients.csv", CLIENT_COLUMNS, [r for c in cells for r in c["client_rows"]])


def _user_level(problem: _Problem, final_params) -> list[dict] | None:
    """Per seed, the user-level attack's scores (fedsim.privacy.membership.user_attack_scores)
    on the released global parameters: members are the clients' users, non-members the
    data's users who were not drawn (none without --clients below the data's users)."""
    ratings = problem.ratings
    member = np.zeros(ratings.num_users, bool)
    member[np.concatenate(problem.groups)] = True
    if member.all():
        return None
    score = problem.public_score(final_params, jnp.asarray(ratings.movie))
    losses = rating_losses(np.asarray(score), ratings.label)
    return [user_attack_scores(ratings.user, ratings.movie, loss, member) for loss in losses]


class _Cells:
    """Finished (algorithm, lambda) cells under out/cells/, each stamped with the code that
    computed it; one computed by other code is computed again."""

    def __init__(self, out: Path | None):
        self.dir = None if out is None else out / "cells"
        self.code, self.computed = code_fingerprint(MOVIELENS), 0
        if self.dir is not None:
            self.dir.mkdir(exist_ok=True)

    def _path(self, algorithm, lam) -> Path:
        return self.dir / f"{algorithm}-lam{lam:g}.json"

    def load(self, algorithm, lam) -> dict | None:
        if self.dir is None or not self._path(algorithm, lam).exists():
            return None
        cell = read_json(self._path(algorithm, lam))
        return cell if cell.get("code") == self.code else None

    def save(self, cell: dict) -> None:
        self.computed += 1
        if self.dir is not None:
            write_json(self._path(cell["result"]["algorithm"], cell["result"]["lam"]),
                       {**cell, "code": self.code})


def _run_cell(config, problem: _Problem, algorithm, lam, compiled, params0, keys, data, weights,
              lrs) -> dict:
    """One algorithm at one lambda, all training seeds: rows, client rows and the result."""
    clients, groups, checkpoints = problem.clients, problem.groups, problem.checkpoints
    start = time.perf_counter()
    hparams = HParams(MovieLensHParams(jnp.full(weights.shape, lam, jnp.float32)))
    fed = config.federation(algorithm, problem.local_steps, weights.shape[0])
    epsilon = epsilon_by_round(fed, weights.shape[0], checkpoints)
    if algorithm not in compiled:   # one compilation per algorithm serves every lambda
        compiled[algorithm] = _compile(problem.task, fed, params0, keys, data, weights, hparams,
                                       lrs, checkpoints)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    nonfinite, metrics, final_params = jax.block_until_ready(
        compiled[algorithm](params0, keys, data, weights, hparams))
    run_s = time.perf_counter() - start
    raise_if_nonfinite(nonfinite)
    metrics = jax.device_get(metrics).clients
    users = _user_level(problem, final_params)
    cell = {"algorithm": algorithm, "lam": lam}
    rows, client_rows, final, selected, membership = [], [], {}, [], {}
    for s in range(config.num_seeds):
        best_val = (-1.0, 0.0, 0)   # (validation accuracy, test accuracy, round)
        for c, t in enumerate(checkpoints):
            figures = {}
            for name, (score, part, label) in SPLITS.items():
                ratings = clients.part(part)
                figures[name] = evaluate_scores(metrics[score][s, c], getattr(ratings, label),
                                                ratings.mask)
                f = figures[name]
                rows.append({**cell, "seed": s, "round": int(t), "split": name,
                             "accuracy": f["accuracy"], "auc": f["auc"],
                             "mean_client_accuracy": float(np.nanmean(f["client_accuracy"])),
                             "median_client_spearman": float(np.nanmedian(f["client_spearman"])),
                             "epsilon": "" if epsilon is None else epsilon[int(t)]})
            test, personal = figures["test"], figures["test_personal"]
            for k, group in enumerate(groups):
                client_rows.append({
                    **cell, "seed": s, "round": int(t), "client": k,
                    "users": " ".join(map(str, group)),
                    "test_accuracy": test["client_accuracy"][k],
                    "test_spearman": test["client_spearman"][k],
                    "personal_test_accuracy": personal["client_accuracy"][k],
                    "personalization_gain": personal["client_accuracy"][k]
                    - test["client_accuracy"][k]})
            if figures["val"]["accuracy"] > best_val[0]:
                best_val = (figures["val"]["accuracy"], figures["test"]["accuracy"], int(t))
            if c == len(checkpoints) - 1:
                for name, f in figures.items():
                    final.setdefault(name, []).append(f)
        selected.append(best_val)
        last, scored = len(checkpoints) - 1, {}
        for model, (train_score, test_score) in MEMBERSHIP_MODELS.items():
            scored[model] = attack_scores(
                metrics[train_score][s, last], clients.train.label, clients.train.mask,
                metrics[test_score][s, last], clients.test.label, clients.test.mask)
        if users is not None:   # was this user a client at all?
            scored["user_level"] = users[s]
        for model, scores in scored.items():
            for attack, figures in evaluate_attacks(scores).items():
                for name, value in figures.items():
                    membership.setdefault(model, {}).setdefault(attack, {}).setdefault(
                        name, []).append(value)
    result = cell | {
        name: {"accuracy": mean_ci([f["accuracy"] for f in fs]), "auc": mean_ci([f["auc"] for f in fs]),
               "median_client_spearman": mean_ci([np.nanmedian(f["client_spearman"]) for f in fs])}
        for name, fs in final.items()} | {
        # Model selection on the validation split: the logged round with the best
        # validation accuracy, per seed, and the test accuracy there.
        "val_selected": {"test_accuracy": mean_ci([t for _, t, _ in selected]),
                         "rounds": [r for _, _, r in selected]},
        "compile_seconds": compile_s, "run_seconds": run_s,
        # membership inference on the last round's models (fedsim.privacy.membership)
        "membership": {model: {attack: {name: mean_ci(v) for name, v in figures.items()}
                               for attack, figures in attacks.items()}
                       for model, attacks in membership.items()}}
    if fed.dp is not None:   # the accountant's epsilon after the last round, and its inputs
        result |= {"epsilon": epsilon[int(checkpoints[-1])], "privacy": privacy_record(
            fed, weights.shape[0], config.rounds)}
    return {"rows": rows, "client_rows": client_rows, "result": result}
