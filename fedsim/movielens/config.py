"""The configuration of a MovieLens run: the simulated feedback, the model, the run.

Each field the command line sets is declared with its flag and help (fedsim.options), so the
flags of `fedsim run movielens` are generated from here; no JAX is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedsim.choices import (DELTA_ALGORITHMS, LR_SCHEDULES, MOVIELENS_ALGORITHMS,
                            MOVIELENS_RELEASES, UPDATES)
from fedsim.errors import check_choice, check_int, check_real, require
from fedsim.options import count, numbers, option
from fedsim.privacy.options import PrivacyOptions

DATA = "data"
FEEDBACK = "feedback (simulated, per client)"
MODEL = "model and training"


@dataclass(frozen=True)
class FeedbackSpec:
    noise: float = option(0.1, "sigma of the noisy rating (the authors' 0.1)", group=FEEDBACK,
                          type=float)
    band: float = option(0.5, 'half-width of "about right", stars (the authors\' 0.5)',
                         group=FEEDBACK, type=float)
    taste: float = option(1.0, "scale of the client-specific genre bias, stars", group=FEEDBACK,
                          type=float)
    pairs: int = option(64, "pairwise comparisons per client", group=FEEDBACK, type=count)

    def validate(self) -> "FeedbackSpec":
        check_real("noise", self.noise, 0.0)
        check_real("band", self.band, 0.0)
        check_real("taste", self.taste, 0.0)
        check_int("pairs", self.pairs, 1)
        return self


@dataclass(frozen=True)
class ModelSpec:
    """update: "fitted_q" regresses Q(s, .) on both actions' rewards; "soft_q" fits the
    policy softmax(Q(s, .)) to the soft-optimal one, softmax(r(s, .) / temperature), by
    cross-entropy (the one-step soft Q-learning optimum, Haarnoja et al. 2017, projected as
    in policy distillation, Rusu et al. 2016); "policy_gradient" treats
    softmax(Q(s, .)) as a policy, samples an action per rating and ascends REINFORCE's
    estimate of the expected shaped reward (Williams 1992), with the minibatch mean reward
    as baseline."""

    dim: int = option(16, "movie and user embedding size", group=MODEL, type=count)
    hidden: int = option(64, "MLP width", group=MODEL, type=count)
    batch: int = option(32, "ratings per local step", group=MODEL, type=count)
    private_lr: float = option(0.03, "Adam step size of the personal parameters", group=MODEL,
                               type=float)
    embedding_scale: float = option(100.0, "gain of the movie embeddings' gradient steps "
                                    "relative to --lr", group=MODEL, type=float)
    reward_steps: int = 200   # gradient steps fitting the local reward model
    reward_l2: float = 0.01
    update: str = option("fitted_q", "local update: fitted Q-learning (the authors'); soft_q: "
                         "softmax(Q) fitted by cross-entropy to the soft-optimal policy "
                         "softmax(r / --temperature); or REINFORCE on softmax(Q) with a "
                         "minibatch-mean baseline", group=MODEL, choices=UPDATES)
    gamma: float = option(0.0, "fitted-Q bootstrap discount on the next training rating (the "
                          "authors' 0.99; it shifts both actions' targets alike)", group=MODEL,
                          type=float)
    temperature: float = option(0.5, "temperature of the soft-optimal policy (soft_q only; > "
                                "0; 0.25, 1 and 2 did worse)", group=MODEL, type=float)
    year: bool = option(False, "give the Q-network each movie's release year (from its title) "
                        "beside its genres", group=MODEL, action="store_true")

    def validate(self) -> "ModelSpec":
        for name in ("dim", "hidden", "batch", "reward_steps"):
            check_int(name, getattr(self, name), 1)
        check_real("private_lr", self.private_lr, 0.0)
        check_real("embedding_scale", self.embedding_scale, 0.0)
        check_real("reward_l2", self.reward_l2, 0.0)
        check_choice("update", self.update, UPDATES)
        check_real("gamma", self.gamma, 0.0, 1.0, hi_open=True)
        check_real("temperature", self.temperature, 0.0, lo_open=True)
        return self

    def inputs_dim(self, num_genres: int) -> int:
        """Width of the Q-network's movie features (`movie_inputs`)."""
        return num_genres + int(self.year)


@dataclass(frozen=True)
class MovieLensRunConfig:
    data: str | None = option(None, "the dataset's zip (e.g. ml-latest-small.zip), its "
                              "unpacked folder, or a folder holding the zip; the only place "
                              "looked at when given (default: $FEDSIM_DATA, else shared/data/ "
                              "beside the project)", group=DATA)
    hub: str | None = option(None, "read the ratings with the Hugging Face datasets library "
                             "instead: a folder saved by Dataset.save_to_disk, or a hub name "
                             "(fetched online); columns userId, movieId, rating, genres (or "
                             "user_id, movie_id/item_id, ...)", group=DATA, metavar="NAME")
    dataset: str = option("ml-latest-small", "a GroupLens release (checksum verified), or "
                          "synthetic: a small generated look-alike (no data needed)",
                          group=DATA, choices=MOVIELENS_RELEASES + ("synthetic",))
    clients: int | None = option(None, "clients drawn (default: all users, e.g. 610 in "
                                 "ml-latest-small)", short="-K", group=DATA, type=count)
    users_per_client: int = option(1, "users each client holds (> 1: random groups, pooled "
                                   "feedback, one personal embedding per user)", group=DATA,
                                   type=count)
    lam: float | tuple[float, ...] = option(
        0.5, "feedback weight lambda (>= 0), or several comma-separated (0,0.5,1): the "
        "personalisation trade-off, one compilation for all", group=FEEDBACK, type=numbers)
    feedback: FeedbackSpec = field(default_factory=FeedbackSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    algorithms: tuple[str, ...] = option(
        MOVIELENS_ALGORITHMS, "fedavg (FedRLHF), centralized, local, or all three",
        flag="--algorithm", group=MODEL, choices=MOVIELENS_ALGORITHMS + ("all",),
        dest="algorithm", cli_default="all",
        convert=lambda name: MOVIELENS_ALGORITHMS if name == "all" else (name,))
    rounds: int = option(20, "communication rounds", short="-T", group=MODEL, type=count)
    local_epochs: int = option(5, "local epochs a round (an epoch: mean training ratings / "
                               "batch steps)", group=MODEL, type=count)
    lr: float = option(0.01, "step size of the shared parameters", group=MODEL, type=float)
    schedule: str = option("constant", "step size of the shared parameters over the run: --lr "
                           "throughout, or annealed from --lr to 0 by a half cosine",
                           group=MODEL, choices=LR_SCHEDULES)
    seed: int = option(0, "the split, the clients drawn and their feedback", group=MODEL,
                       type=count)
    num_seeds: int = option(5, "training seeds (initialisation, minibatches), vmapped",
                            group=MODEL, type=count)

    privacy: PrivacyOptions = field(default_factory=PrivacyOptions)

    @property
    def lams(self) -> tuple[float, ...]:
        return tuple(self.lam) if isinstance(self.lam, (tuple, list)) else (self.lam,)

    def validate(self) -> "MovieLensRunConfig":
        check_choice("dataset", self.dataset, MOVIELENS_RELEASES + ("synthetic",))
        require(self.hub is None or self.data is None, "hub", self.hub,
                "cannot be combined with --data (give one source)")
        if self.clients is not None:
            check_int("clients (K)", self.clients, 1)
        check_int("users_per_client", self.users_per_client, 1)
        require(len(self.lams) > 0, "lam", self.lam, "must give one or more values")
        for lam in self.lams:
            check_real("lam", lam, 0.0)
        self.feedback.validate()
        self.model.validate()
        require(len(self.algorithms) > 0, "algorithm", self.algorithms, "must name one or more")
        for a in self.algorithms:
            check_choice("algorithm", a, MOVIELENS_ALGORITHMS)
        check_int("rounds (T)", self.rounds, 1)
        check_int("local_epochs", self.local_epochs, 1)
        check_real("lr", self.lr, 0.0, lo_open=True)
        check_choice("schedule", self.schedule, LR_SCHEDULES)
        check_int("seed", self.seed, 0)
        check_int("num_seeds", self.num_seeds, 1)
        self.privacy.check_task(self.algorithms, "fedavg")
        return self

    def federation(self, algorithm: str, local_steps: int, num_clients: int):
        """The engine's Federation for one algorithm: DP-FedAvg and the sampling apply to
        the algorithms that aggregate deltas; local and centralized run without them."""
        from fedsim.engine import Federation

        if algorithm not in DELTA_ALGORITHMS:
            return Federation(algorithm, local_steps)
        self.privacy.validate(num_clients)
        return Federation(algorithm, local_steps,
                          **self.privacy.federation_fields(num_clients, self.rounds))
