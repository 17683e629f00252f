"""The configuration of an IMDb run: the data and clients, the model, the reward, PPO, the run.

Each field the command line sets is declared with its flag and help (fedsim.options), so the
flags of `fedsim run imdb` are generated from here; no JAX is imported. Defaults are the
authors' (DESIGN.md 2.1b) where they have one, except the step size (their 1e-5 is for
GPT-2's 124M parameters; see --lr).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from fedsim.choices import (FLUENCY_SCORERS, IMDB_ALGORITHMS, IMDB_DATASETS, IMDB_SHARDINGS,
                            MIXINGS, REWARD_FORMS)
from fedsim.errors import check_choice, check_int, check_real, require
from fedsim.options import FLAG, count, numbers, option
from fedsim.privacy.options import PrivacyOptions

DATA = "data and clients"
MODEL = "language model (pre-trained by fedsim, cached)"
REWARD = "reward"
PPO = "PPO (TRL's, per client)"
RUN = "run"


def _tuple(value):
    return value if isinstance(value, tuple) else (value,)


@dataclass(frozen=True)
class IMDbRunConfig:
    data: str | None = option(None, "a CSV (review,sentiment or text,label) or an unpacked "
                              "aclImdb folder; the only place looked at when given (default: "
                              "$FEDSIM_DATA, else the shared IMDb sample beside the project)",
                              group=DATA)
    hub: str | None = option(None, "read the reviews with the Hugging Face datasets library "
                             "instead: a saved folder or a hub name such as imdb (fetched "
                             "online)", group=DATA, metavar="NAME")
    dataset: str = option("imdb", "imdb (the reviews found as above), or synthetic: tiny "
                          "generated reviews (no data needed)", group=DATA, choices=IMDB_DATASETS)
    clients: int = option(5, "clients K (the authors' 5)", short="-K", group=DATA, type=count)
    sharding: str = option("contiguous", "the clients' shards: consecutive blocks (the "
                           "authors') or blocks of a seeded permutation", group=DATA,
                           choices=IMDB_SHARDINGS)
    positive_fraction: float | tuple[float, ...] | None = option(
        None, "label skew: each client draws reviews of which this fraction is positive (one "
        "number, or K comma-separated)", group=DATA, type=numbers)
    held_out: float = option(0.2, "fraction of the reviews held out (evaluation prompts, "
                             "held-out perplexity and accuracy)", group=DATA, type=float)
    eval_prompts: int = option(30, "held-out evaluation prompts, the same for every client "
                               "(the authors' 30)", group=DATA, type=count)
    min_chars: int = option(200, "prompts come from reviews longer than this (the authors' 200)",
                            group=DATA, type=count)
    vocab_size: int = option(2000, "word vocabulary of the tokenizer, built from the training "
                             "reviews (3 special tokens included)", group=MODEL, type=count)
    width: int = option(64, "transformer width", group=MODEL, type=count)
    layers: int = option(2, "transformer blocks", group=MODEL, type=count)
    heads: int = option(4, "attention heads", group=MODEL, type=count)
    context: int | None = option(None, "positions the model has (default: prompt + response "
                                 "length)", group=MODEL, type=count)
    pretrain_steps: int = option(1500, "pre-training Adam steps (next-token loss on the "
                                 "training reviews)", group=MODEL, type=count)
    pretrain_batch: int = option(32, "pre-training windows per step", group=MODEL, type=count)
    pretrain_lr: float = option(3e-3, "pre-training peak step size (cosine decay)",
                                group=MODEL, type=float)
    cache: str | None = option(None, "folder of the pre-training cache (default: "
                               "$XDG_CACHE_HOME/fedsim, else ~/.cache/fedsim)", group=MODEL)
    classifier_steps: int = option(500, "Adam steps fitting the sentiment classifier",
                                   group=REWARD, type=count)
    reward: str = option("convex", "convex: lambda_k sentiment + (1 - lambda_k) fluency (the "
                         "authors'); additive: fluency + lambda_k sentiment (R0 + lambda H)",
                         group=REWARD, choices=REWARD_FORMS)
    lam_grid: float | tuple[float, ...] | None = option(
        None, "lambda_k per client: K comma-separated values, or one for all (default: the "
        "authors' 0.1 + 0.8 k / (K - 1))", group=REWARD, type=numbers)
    fluency_scorer: str = option("frozen", "who scores the fluency term: the frozen pre-trained "
                                 "model, or the policy being trained (the authors' code)",
                                 group=REWARD, choices=FLUENCY_SCORERS)
    prompt_length: int = option(8, "prompt tokens (the first of a review; the authors' 8)",
                                group=PPO, type=count)
    response_length: int = option(32, "sampled response tokens (the authors' 32)", group=PPO,
                                  type=count)
    temperature: float = option(1.0, "sampling temperature", group=PPO, type=float)
    top_k: int = option(0, "sample among the k likeliest tokens (0: all, the authors')",
                        group=PPO, type=count)
    batch: int = option(16, "prompts per PPO iteration (the authors' 16)", group=PPO, type=count)
    minibatch: int = option(16, "prompts per PPO minibatch; must divide --batch (the authors' "
                            "16)", group=PPO, type=count)
    epochs: int = option(4, "PPO epochs per iteration (the authors' 4)", group=PPO, type=count)
    lr: float = option(1e-3, "Adam step size of local RLHF (the authors' 1e-5 is for GPT-2; "
                       "this model needs a larger one to move within a few iterations)",
                       group=PPO, type=float)
    init_kl_coef: float = option(0.2, "initial coefficient of the per-token KL penalty to the "
                                 "round's start (the authors' 0.2)", group=PPO, type=float)
    kl_target: float | None = option(6.0, "adaptive KL controller's target (the authors' 6; "
                                     "0: a fixed coefficient)", group=PPO, type=float)
    kl_horizon: float = option(10_000.0, "adaptive KL controller's horizon (TRL's 10000)",
                               group=PPO, type=float)
    clip: float = option(0.2, "PPO ratio clip (and value clip)", group=PPO, type=float)
    vf_coef: float = option(0.1, "value loss coefficient (TRL's 0.1)", group=PPO, type=float)
    gae_lambda: float = option(0.95, "GAE lambda (gamma = 1)", group=PPO, type=float)
    whiten: bool = option(True, "whiten the advantages over the batch (TRL's default)",
                          group=PPO, action=FLAG)
    chunks: int = option(5, "parts of a client's prompts; round t uses part t mod chunks (the "
                         "authors' fresh fifth each round)", group=PPO, type=count)
    iterations: int | None = option(None, "PPO iterations per round (default: a part's prompts "
                                    "/ --batch, at least 1; more reuse the part's prompts)",
                                    group=PPO, type=count)
    algorithms: tuple[str, ...] = option(
        IMDB_ALGORITHMS, "fedrlhf (FedAvg of all parameters), as_released (the authors' code "
        "path: nothing reaches the clients), isolated, centralized (one model, lambda = 0.5, "
        "the federation's samples), centralized_full (the same, every round a pass over all "
        "the pooled prompts: --chunks times the samples), fedppo_kl (KL to the peers' mixed "
        "policies), or all",
        flag="--algorithm", group=RUN, choices=IMDB_ALGORITHMS + ("all",), dest="algorithm",
        cli_default="all", convert=lambda name: IMDB_ALGORITHMS if name == "all" else (name,))
    rounds: int = option(5, "communication rounds (the authors' 5)", short="-T", group=RUN,
                         type=count)
    peer_kl_coef: float = option(0.1, "fedppo_kl: beta of the KL to the peers' reference",
                                 group=RUN, type=float)
    self_weight: float = option(0.5, "fedppo_kl: alpha, the self-weight of W = alpha I + "
                                "(1 - alpha) (complete graph)", group=RUN, type=float)
    mixing: str = option("geometric", "fedppo_kl: how the peers' policies are mixed",
                         group=RUN, choices=MIXINGS)
    seed: int = option(0, "the split, the shards, pre-training and the classifier",
                       group=RUN, type=count)
    num_seeds: int = option(3, "training seeds (sampling, minibatches), vmapped", group=RUN,
                            type=count)
    privacy: PrivacyOptions = field(default_factory=PrivacyOptions)

    @property
    def prompt_context(self) -> int:
        return self.prompt_length + self.response_length

    def lams(self) -> tuple[float, ...]:
        K = self.clients
        if self.lam_grid is None:
            return tuple(0.1 + 0.8 * k / (K - 1) if K > 1 else 0.5 for k in range(K))
        values = _tuple(self.lam_grid)
        return values * K if len(values) == 1 else values

    def validate(self) -> "IMDbRunConfig":
        check_choice("dataset", self.dataset, IMDB_DATASETS)
        require(self.hub is None or self.data is None, "hub", self.hub,
                "cannot be combined with --data (give one source)")
        check_int("clients (K)", self.clients, 1)
        check_choice("sharding", self.sharding, IMDB_SHARDINGS)
        check_real("held_out", self.held_out, 0.0, 1.0, lo_open=True, hi_open=True)
        for name in ("eval_prompts", "vocab_size", "width", "layers", "heads", "pretrain_steps",
                     "pretrain_batch", "classifier_steps", "prompt_length", "response_length",
                     "batch", "minibatch", "epochs", "rounds", "chunks", "num_seeds"):
            check_int(name, getattr(self, name), 1)
        check_int("min_chars", self.min_chars, 0)
        require(self.vocab_size >= 8, "vocab_size", self.vocab_size,
                "must be at least 8 (3 special tokens and some words)")
        require(self.width % self.heads == 0, "width", self.width,
                f"must be divisible by --heads {self.heads}")
        if self.context is not None:
            require(self.context >= self.prompt_context, "context", self.context,
                    f"must hold the prompt and the response: at least --prompt-length + "
                    f"--response-length = {self.prompt_context}")
        check_real("pretrain_lr", self.pretrain_lr, 0.0, lo_open=True)
        lams = self.lams()
        require(len(lams) == self.clients, "lam_grid", list(lams),
                f"must give one value or K = {self.clients} values")
        for k, lam in enumerate(lams):
            if self.reward == "convex":
                check_real(f"lam_grid[{k}]", lam, 0.0, 1.0)
            else:
                check_real(f"lam_grid[{k}]", lam, 0.0)
        check_real("temperature", self.temperature, 0.0, lo_open=True)
        check_int("top_k", self.top_k, 0)
        require(self.batch % self.minibatch == 0, "minibatch", self.minibatch,
                f"must divide --batch {self.batch}")
        check_real("lr", self.lr, 0.0, lo_open=True)
        check_real("init_kl_coef", self.init_kl_coef, 0.0)
        if self.kl_target is not None:
            check_real("kl_target", self.kl_target, 0.0)
        check_real("kl_horizon", self.kl_horizon, 0.0, lo_open=True)
        check_real("clip", self.clip, 0.0, lo_open=True)
        check_real("vf_coef", self.vf_coef, 0.0)
        check_real("gae_lambda", self.gae_lambda, 0.0, 1.0)
        if self.iterations is not None:
            check_int("iterations", self.iterations, 1)
        require(len(self.algorithms) > 0, "algorithm", self.algorithms, "must name one or more")
        for a in self.algorithms:
            check_choice("algorithm", a, IMDB_ALGORITHMS)
        check_real("peer_kl_coef", self.peer_kl_coef, 0.0)
        check_real("self_weight", self.self_weight, 0.0, 1.0)
        check_choice("mixing", self.mixing, MIXINGS)
        check_int("seed", self.seed, 0)
        self.privacy.validate(self.clients)
        self.privacy.check_task(self.algorithms, "fedrlhf")
        if self.privacy.dp_enabled:   # the DP settings, a target epsilon included, checked now
            self.federation("fedavg", self.clients).validate(self.clients)
        return self

    def federation(self, engine_name: str, num_clients: int):
        """The engine's Federation for one algorithm (DP-FedAvg and the sampling only where
        deltas are aggregated: fedrlhf's fedavg)."""
        from fedsim.choices import DELTA_ALGORITHMS
        from fedsim.engine import Federation

        privacy = (self.privacy.federation_fields(num_clients, self.rounds)
                   if engine_name in DELTA_ALGORITHMS else {})
        return Federation(engine_name if engine_name != "as_released" else "local", 1,
                          kl_coef=self.peer_kl_coef, self_weight=self.self_weight,
                          mixing=self.mixing, **privacy)

    def quick(self, keep=()) -> "IMDbRunConfig":
        """A smoke run of the whole pipeline in about a minute on two cores: a smaller model
        and pre-training, two rounds, FedRLHF and isolated, one seed; the fields in `keep`
        (those the user set) stay as they are."""
        return dataclasses.replace(self, **{k: v for k, v in QUICK.items() if k not in keep})


QUICK = {"width": 32, "layers": 1, "pretrain_steps": 300, "rounds": 2, "eval_prompts": 8,
         "num_seeds": 1, "iterations": 1, "algorithms": ("fedrlhf", "isolated")}
