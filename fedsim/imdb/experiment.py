"""`fedsim run imdb`: FedRLHF's IMDb experiment, run correctly and as the authors released it.

Preparation (once per run, nothing on the device yet): load and split the reviews, build the
tokenizer, pre-train the policy (or read it from the cache), fit the sentiment classifier,
cut every client's prompts. Then each algorithm is one compiled program: make_train vmapped
over the training seeds. Round 0 is the pre-trained model, evaluated once.

Writes config.json, tokenizer.json, metrics.csv (algorithm, seed, round, samples: the
federation's weighted means), clients.csv (per client, with each client's own PPO value
loss, policy loss, KL to the round's start and clip fraction), samples.jsonl (every evaluation
response) and summary.json (the final round per algorithm, per client and global, with 95%
confidence intervals over seeds; the sentiment gain's Spearman correlation with lambda_k;
paired differences to isolated; pre-training and classifier reports; timings).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from fedsim.engine import HParams, every_round, make_train, raise_if_nonfinite
from fedsim.errors import DataError
from fedsim.imdb import data as D
from fedsim.imdb import model as M
from fedsim.imdb import pretrain as PT
from fedsim.imdb import sentiment as S
from fedsim.imdb import tokenizer as TK
from fedsim.imdb.algorithms import as_released
from fedsim.imdb.config import IMDbRunConfig
from fedsim.imdb.ppo import PPOSpec, Scoring
from fedsim.imdb.task import ClientData, IMDbHParams, make_task
from fedsim.interrupt import stop_if_requested
from fedsim.privacy.settings import epsilon_by_round, privacy_record
from fedsim.provenance import IMDB, code_fingerprint
from fedsim.movielens.metrics import spearman
from fedsim.results import atomic_write_bytes, mean_ci, read_json, write_csv, write_json
from fedsim.rundir import RunFolder

CENTRALIZED_LAM = 0.5   # the authors' centralized baseline
CLASSIFIER_TOKENS = 256
# evaluation metrics per client (scalars); the response arrays go to samples.jsonl
METRICS = ("reward", "sentiment", "fluency", "fluency_frozen", "fluency_self",
           "kl_to_pretrained", "perplexity", "distinct_2")
TRAINING = ("value_loss", "policy_loss", "kl_to_round_start", "kl_coef", "approx_kl",
            "clip_fraction", "entropy")
# how each comparison algorithm runs on the engine: (engine algorithm, which model is served)
ENGINE = {"fedrlhf": ("fedavg", "global"), "as_released": ("as_released", "own"),
          "isolated": ("local", "own"), "centralized": ("local", "global"),
          "centralized_full": ("local", "global"), "fedppo_kl": ("fedkl", "own")}
CENTRALIZED = ("centralized", "centralized_full")


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fedsim"


class Problem(NamedTuple):
    reviews: D.Reviews
    tokenizer: TK.Tokenizer
    arch: M.Architecture
    frozen: object                 # the pre-trained parameters
    pretrain_report: dict
    classifier: S.Classifier
    classifier_accuracy: float
    data: ClientData               # numpy, leading client axis K
    weights: np.ndarray            # (K,) the clients' shares of the prompts
    lams: np.ndarray               # (K,)
    iterations: int
    eval_texts: list


def load_reviews(config: IMDbRunConfig) -> D.Reviews:
    if config.dataset == "synthetic":
        return D.synthetic(400, words=60, seed=config.seed)
    if config.hub is not None:
        return D.load_hub(config.hub)
    return D.load(D.locate(config.data))


def prepare(config: IMDbRunConfig, log=print) -> Problem:
    reviews = load_reviews(config)
    train, held = D.split(reviews, config.held_out, config.seed)
    texts = lambda idx: [reviews.text[i] for i in idx]
    tokenizer = TK.build(texts(train), config.vocab_size)
    P, L = config.prompt_length, config.response_length
    arch = M.Architecture(tokenizer.size, config.context or P + L, config.width, config.layers,
                          config.heads)
    spec = PT.PretrainSpec(config.pretrain_steps, config.pretrain_batch, config.pretrain_lr,
                           config.seed).validate()
    cache = Path(config.cache) if config.cache else default_cache()
    frozen, report = PT.pretrained(tokenizer, PT.windows(tokenizer, texts(train), arch.context),
                                   PT.windows(tokenizer, texts(held), arch.context), arch, spec,
                                   cache, log)
    encode = lambda idx, n: np.stack([tokenizer.encode(reviews.text[i], n) for i in idx])
    classifier = S.train(encode(train, CLASSIFIER_TOKENS), reviews.label[train], tokenizer.size,
                         steps=config.classifier_steps)
    accuracy = S.accuracy(classifier, encode(held, CLASSIFIER_TOKENS), reviews.label[held])

    long_enough = lambda idx: np.asarray([i for i in idx if len(reviews.text[i]) > config.min_chars
                                          and len(TK.words(reviews.text[i])) >= P], np.int64)
    pool, held_pool = long_enough(train), long_enough(held)
    if len(held_pool) < config.eval_prompts:
        raise DataError(f"{reviews.source}: {len(held_pool)} held-out reviews are longer than "
                        f"--min-chars {config.min_chars}; --eval-prompts {config.eval_prompts} "
                        "needs more (lower either, or give more reviews)")
    shards = D.shard(reviews.label[pool], config.clients, config.sharding,
                     config.positive_fraction, config.seed)
    part = min(len(s) for s in shards) // config.chunks
    if part < 1:
        raise DataError(f"{reviews.source}: the smallest client has {min(len(s) for s in shards)} "
                        f"prompts, fewer than --chunks {config.chunks}; use fewer clients or "
                        "chunks, or more reviews")
    iterations = config.iterations or max(1, part // config.batch)
    per_round = iterations * config.batch

    def client_prompts(shard):
        prompts = encode(pool[shard][: part * config.chunks], P).reshape(config.chunks, part, P)
        # a part's prompts in order, cycled when the round asks for more than it holds
        cycled = np.stack([np.resize(c, (per_round, P)) for c in prompts])
        return cycled.reshape(config.chunks, iterations, config.batch, P)

    eval_idx = held_pool[: config.eval_prompts]
    eval_prompts = encode(eval_idx, P)
    K = config.clients
    data = ClientData(np.stack([client_prompts(s) for s in shards]),
                      np.broadcast_to(eval_prompts, (K,) + eval_prompts.shape).copy(),
                      np.arange(K, dtype=np.int32))
    sizes = np.asarray([len(s) for s in shards], np.float64)
    return Problem(reviews, tokenizer, arch, frozen, report, classifier, accuracy, data,
                   (sizes / sizes.sum()).astype(np.float32), np.asarray(config.lams(), np.float32),
                   iterations, [tokenizer.decode(p) for p in eval_prompts])


def scoring(config: IMDbRunConfig, problem: Problem) -> Scoring:
    return Scoring(problem.arch, config.prompt_length, config.response_length,
                   problem.classifier, problem.frozen, config.fluency_scorer, config.reward,
                   config.temperature, config.top_k)


def ppo_spec(config: IMDbRunConfig) -> PPOSpec:
    return PPOSpec(config.batch, config.batch // config.minibatch, config.epochs, config.lr,
                   config.init_kl_coef, config.kl_target or None, config.kl_horizon, config.clip,
                   config.clip, config.vf_coef, config.gae_lambda, config.whiten)


def pooled(problem: Problem, full: bool = False):
    """The centralized learner's data: one client holding every client's prompts, K times
    the iterations per round (the federation's samples), lambda = 0.5; full: every round a
    pass over all the parts (C times the federation's samples)."""
    prompts = problem.data.prompts   # (K, C, I, B, P)
    K, C, I, B, P = prompts.shape
    merged = prompts.transpose(1, 0, 2, 3, 4).reshape(1, C, K * I, B, P)
    if full:
        merged = merged.reshape(1, 1, C * K * I, B, P)
    return (ClientData(merged, problem.data.eval_prompts[:1], np.zeros(1, np.int32)),
            np.ones(1, np.float32), np.full(1, CENTRALIZED_LAM, np.float32))


def run_algorithm(config: IMDbRunConfig, problem: Problem, name: str):
    """(metrics (n, seeds, K, ...) per client, training aux (n, seeds), seconds) of one
    algorithm over all seeds, one compiled program."""
    engine_name, serve = ENGINE[name]
    spec = ppo_spec(config)
    s = scoring(config, problem)
    eval_lams = problem.lams if name in CENTRALIZED else None
    task = make_task(s, spec, serve, config.mixing, eval_lams=eval_lams)
    if name in CENTRALIZED:
        data, weights, lams = pooled(problem, full=name == "centralized_full")
    else:
        data, weights, lams = problem.data, problem.weights, problem.lams
    K = len(weights)
    fed = config.federation(engine_name, K)
    algorithm = (as_released() if engine_name == "as_released"
                 else fed.algorithm_parts(task, K))
    hparams = HParams(IMDbHParams(jnp.asarray(lams)), fed.algorithm_hparams(K))
    train = make_train(task, algorithm, fed)
    keys = jax.vmap(jax.random.key)(jnp.arange(config.num_seeds, dtype=jnp.uint32)
                                    + 1000 * config.seed)
    schedule = jnp.ones((config.rounds, 1), jnp.float32)   # the displacement of a PPO round
    checkpoints = jnp.asarray(every_round(config.rounds))
    data = jax.tree.map(jnp.asarray, data)

    def one(key):
        state, metrics = train(problem.frozen, data, jnp.asarray(weights), hparams, key,
                               schedule, checkpoints)
        return state.nonfinite_round, metrics

    start = time.perf_counter()
    compiled = jax.jit(jax.vmap(one)).lower(keys).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    nonfinite, metrics = jax.block_until_ready(compiled(keys))
    run_s = time.perf_counter() - start
    raise_if_nonfinite(nonfinite)
    metrics = jax.device_get(metrics)
    # (seeds, n, ...) -> (n, seeds, ...)
    clients = {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in metrics.clients.items()}
    aux = {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in metrics.aux.items()}
    client_aux = {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in metrics.client_aux.items()}
    return clients, (aux, client_aux), {"compile_seconds": compile_s, "run_seconds": run_s}


def evaluate_pretrained(config: IMDbRunConfig, problem: Problem) -> dict:
    """Round 0: the pre-trained model, for every client (the same for every algorithm)."""
    task = make_task(scoring(config, problem), ppo_spec(config), "global", config.mixing,
                     eval_lams=problem.lams)
    data = jax.tree.map(jnp.asarray, problem.data)
    _, per_client = jax.jit(lambda: task.evaluate(problem.frozen, None, data,
                                                  IMDbHParams(jnp.asarray(problem.lams)),
                                                  jnp.asarray(problem.weights)))()
    return {k: np.asarray(v)[None, None] for k, v in per_client.items()}   # (1, 1, K, ...)


def run_imdb(config: IMDbRunConfig, out: Path | None = None, progress: bool = True,
             log=print) -> dict:
    config.validate()
    wall = time.perf_counter()
    problem = prepare(config, log)
    if out is None:
        return _run(config, problem, None, progress, wall)
    with RunFolder(out, {"task": "imdb", **dataclasses.asdict(config)}) as folder:
        problem.tokenizer.save(folder.path / "tokenizer.json")
        return _run(config, problem, folder.path, progress, wall)


def _run(config, problem: Problem, out, progress, wall) -> dict:
    round0 = evaluate_pretrained(config, problem)
    cells = _Cells(out)
    done = []
    with tqdm(config.algorithms, desc="algorithm", disable=not progress) as bar:
        for name in bar:
            bar.set_postfix_str(name)
            cell = cells.load(name)
            if cell is None:
                cell = _cell(config, problem, name, round0)
                cells.save(cell)
            done.append(cell)
            if out is not None:   # what is finished is readable as it goes
                _write(out, done)
                stop_if_requested(f"stopped after {len(done)} of {len(config.algorithms)} "
                                  f"algorithms; saved in {out}; run the same command to resume")
    results = {c["algorithm"]: c["result"] for c in done}
    client_rows = [r for c in done for r in c["client_rows"]]
    summary = {
        "experiment": "imdb", "results": results,
        "versus_isolated": _paired(results, client_rows, config) if "isolated" in results else {},
        "clients": config.clients, "lams": problem.lams.tolist(),
        "iterations_per_round": problem.iterations,
        "prompts_per_client_round": problem.iterations * config.batch,
        "reviews": len(problem.reviews), "source": problem.reviews.source,
        "vocabulary": problem.tokenizer.size, "parameters": M.num_params(problem.frozen),
        "pretraining": problem.pretrain_report,
        "classifier_held_out_accuracy": problem.classifier_accuracy,
        "timings": {c["algorithm"]: c["timing"] for c in done},
        "algorithms_computed_this_run": cells.computed,
        "algorithms_reused": len(done) - cells.computed,
        "wall_seconds": time.perf_counter() - wall,
        "note": "(mean, 95% CI half-width) over training seeds at the last round; gains are "
                "against round 0, the pre-trained model, on the same evaluation prompts"}
    if "epsilon" in results.get("fedrlhf", {}):   # DP-FedAvg's accountant, for fedrlhf
        summary |= {"epsilon": results["fedrlhf"]["epsilon"],
                    "privacy": results["fedrlhf"]["privacy"]}
    if out is not None:
        write_json(out / "summary.json", summary)
    return {"rows": [r for c in done for r in c["rows"]], "client_rows": client_rows,
            "samples": [r for c in done for r in c["samples"]], "summary": summary}


def _cell(config, problem: Problem, name: str, round0: dict) -> dict:
    """One algorithm, all seeds: its rows (global, per client), evaluation samples, result."""
    clients, (aux, client_aux), timing = run_algorithm(config, problem, name)
    # each client's own PPO statistics (not for the centralized learner, trained on the pool)
    own = {a: v for a, v in client_aux.items() if a in TRAINING and v.shape[2] == config.clients}
    per_client = {k: np.concatenate([np.repeat(round0[k], config.num_seeds, 1), clients[k]])
                  for k in round0}   # (rounds + 1, seeds, K, ...)
    per_round = (problem.iterations * config.batch * config.clients
                 * (config.chunks if name == "centralized_full" else 1))
    rows, client_rows, samples = [], [], []
    for t in range(config.rounds + 1):
        for s in range(config.num_seeds):
            base = {"algorithm": name, "seed": s, "round": t, "samples": t * per_round}
            row = {**base, **{m: float(problem.weights @ per_client[m][t, s]) for m in METRICS}}
            row.update({a: (float(aux[a][t - 1, s]) if t > 0 else float("nan"))
                        for a in TRAINING if a in aux})
            rows.append(row)
            for k in range(config.clients):
                lam = float(problem.lams[k])
                client_rows.append({**base, "client": k, "lam": lam,
                                    **{m: float(per_client[m][t, s, k]) for m in METRICS},
                                    **{a: float(own[a][t - 1, s, k]) if t > 0 and a in own
                                       else "" for a in CLIENT_TRAINING}})
                for i, prompt in enumerate(problem.eval_texts):
                    samples.append({
                        "algorithm": name, "seed": s, "round": t, "client": k, "lam": lam,
                        "prompt": prompt,
                        "response": problem.tokenizer.decode(per_client["responses"][t, s, k, i]),
                        "reward": float(per_client["response_reward"][t, s, k, i]),
                        "sentiment": float(per_client["response_sentiment"][t, s, k, i]),
                        "fluency": float(per_client["response_fluency"][t, s, k, i])})
    result = _result(config, problem, per_client)
    fed = config.federation(ENGINE[name][0], config.clients)
    epsilon = epsilon_by_round(fed, config.clients, range(1, config.rounds + 1))
    if epsilon is not None:   # the accountant's epsilon after each round and its inputs
        for row in rows:
            row["epsilon"] = epsilon.get(row["round"], 0.0)   # round 0: nothing released
        result |= {"epsilon": epsilon[config.rounds],
                   "privacy": privacy_record(fed, config.clients, config.rounds)}
    return {"algorithm": name, "rows": rows, "client_rows": client_rows, "samples": samples,
            "result": result, "timing": timing}


class _Cells:
    """Finished algorithms under out/cells/, each stamped with the code that computed it;
    one computed by other code is computed again."""

    def __init__(self, out: Path | None):
        self.dir = None if out is None else out / "cells"
        self.code, self.computed = code_fingerprint(IMDB), 0
        if self.dir is not None:
            self.dir.mkdir(exist_ok=True)

    def load(self, name: str) -> dict | None:
        path = None if self.dir is None else self.dir / f"{name}.json"
        if path is None or not path.exists():
            return None
        cell = read_json(path)
        return cell if cell.get("code") == self.code else None

    def save(self, cell: dict) -> None:
        self.computed += 1
        if self.dir is not None:
            write_json(self.dir / f"{cell['algorithm']}.json", {**cell, "code": self.code})


def _result(config, problem, per_client) -> dict:
    """The last round, per client and global (weighted), with CIs over seeds."""
    last, first = per_client, {m: per_client[m][0] for m in METRICS}
    S_ = config.num_seeds
    glob = {m: mean_ci([problem.weights @ last[m][-1, s] for s in range(S_)]) for m in METRICS}
    gains = last["sentiment"][-1] - first["sentiment"]   # (S, K)
    return {
        "global": glob,
        "clients": [{"client": k, "lam": float(problem.lams[k]),
                     **{m: mean_ci(last[m][-1, :, k]) for m in METRICS},
                     "sentiment_gain": mean_ci(gains[:, k])} for k in range(config.clients)],
        "sentiment_gain_spearman_with_lam": mean_ci([spearman(problem.lams, gains[s])
                                                for s in range(S_)]),
        "pretrained": {m: float(problem.weights @ first[m][0]) for m in METRICS},
    }


def _paired(results, client_rows, config) -> dict:
    """Per algorithm: the last round's global reward and sentiment minus isolated's, paired by
    seed (the same seeds and evaluation draws), with CIs; and the largest per-client
    difference of any metric (0 where the client trajectories are the same)."""
    last = config.rounds
    table = {}
    by = lambda name: {(r["seed"], r["client"]): r for r in client_rows
                       if r["algorithm"] == name and r["round"] == last}
    iso = by("isolated")
    for name in results:
        if name == "isolated":
            continue
        other = by(name)
        diffs = {m: [other[key][m] - iso[key][m] for key in iso] for m in METRICS}
        table[name] = {m: mean_ci(v) for m, v in diffs.items()}
        table[name]["max_abs_client_difference"] = float(max(np.max(np.abs(v))
                                                            for v in diffs.values()))
    return table


METRICS_COLUMNS = ["algorithm", "seed", "round", "samples", *METRICS, *TRAINING]
CLIENT_TRAINING = ("value_loss", "policy_loss", "kl_to_round_start", "clip_fraction")
CLIENT_COLUMNS = ["algorithm", "seed", "round", "samples", "client", "lam", *METRICS,
                  *CLIENT_TRAINING]
SAMPLE_FIELDS = ("algorithm", "seed", "round", "client", "lam", "prompt", "response", "reward",
                 "sentiment", "fluency")


def _write(out: Path, cells: list[dict]) -> None:
    rows = [r for c in cells for r in c["rows"]]
    private = any("epsilon" in r for r in rows)   # DP-FedAvg: fedrlhf's epsilon per round
    write_csv(out / "metrics.csv", METRICS_COLUMNS + ["epsilon"] * private,
              [{"epsilon": "", **r} for r in rows])
    write_csv(out / "clients.csv", CLIENT_COLUMNS, [r for c in cells for r in c["client_rows"]])
    # in SAMPLE_FIELDS's order: cells read back from disk have their keys sorted
    atomic_write_bytes(out / "samples.jsonl", "".join(
        json.dumps({k: r[k] for k in SAMPLE_FIELDS}) + "\n"
        for c in cells for r in c["samples"]).encode())
