"""The configuration of a tabular run: the instance, the local learner and the run.

Each field the command line sets is declared with its flag and help (fedsim.options), so the
flags of `fedsim run tabular` are generated from here. This module imports no JAX (so that
`--help` is instant); the methods that need it import it when called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from fedsim.choices import (AGGREGATORS, ALGORITHMS, ATTACKS, ESTIMATORS, GRADIENTS, GRAPHS,
                            INITS, LEARNERS, MIXINGS, PEER_WEIGHTINGS, REGULARIZERS,
                            REWARD_FORMS, SCHEDULES, SERVER_OPTIMIZERS, STARTS, WEIGHTINGS)
from fedsim.errors import ConfigError, check_choice, check_int, check_real, require
from fedsim.options import FLAG, count, numbers, option, step_size, weighting
from fedsim.privacy.options import PrivacyOptions

INSTANCE = "instance (a seeded family of heterogeneous tabular MDPs)"
LEARNER = "local learner (tabular softmax policy gradient, or PPO)"
FEDERATION = "federation and schedule"
PEERS = "KL to peers (fedkl: each client pulled toward a reference mixed from its peers' policies)"
ROBUSTNESS = "robustness (fedavg, fedprox: how deltas are combined, and faults)"
RUN = "run"


@dataclass(frozen=True)
class InstanceSpec:
    """Everything that defines an instance; `make_instance` turns it into arrays.

    lam: a constant feedback weight for every client, or a sequence of K values.
    lam_grid: (lo, hi) gives lam_k = lo + (hi - lo) * k / (K - 1), the authors' IMDb grid
        with (0.1, 0.9); it overrides `lam`. With K = 1 the single client gets lo.
    weights: "uniform", "samples" (p_k proportional to the client's sample count n_k, as
        in the authors' aggregation) or a sequence of K non-negative numbers.
    branching: how many next states each (s, a) can reach (None: all S).
    """

    num_clients: int = option(10, "number of clients K (>= 1)", flag="--clients", short="-K",
                              group=INSTANCE, type=count)
    num_states: int = option(20, "number of states S (>= 1)", flag="--states", short="-S",
                             group=INSTANCE, type=count)
    num_actions: int = option(5, "number of actions A (>= 2)", flag="--actions", short="-A",
                              group=INSTANCE, type=count)
    gamma: float = option(0.9, "discount factor, in [0, 1)", group=INSTANCE, type=float)
    transition_heterogeneity: float = option(
        0.0, "0: all clients share the dynamics; 1: independent per-client dynamics; in "
        "between: P_k = (1-H) P_shared + H P_own", group=INSTANCE, type=float, metavar="H")
    reward_heterogeneity: float = option(0.0, "the same mixing for the intrinsic reward R0",
                                         group=INSTANCE, type=float, metavar="H")
    branching: int | None = option(None, "next states reachable from each (s, a) (default: all "
                                   "S)", group=INSTANCE, type=count)
    r_max: float = option(1.0, "intrinsic rewards lie in [0, r_max]", group=INSTANCE, type=float)
    h_max: float = option(1.0, "human feedback H_k lies in [-h_max, h_max]", group=INSTANCE,
                          type=float)
    lam: float | Sequence[float] = option(0.5, "feedback weight lambda for every client (>= 0)",
                                          group=INSTANCE, type=float)
    lam_grid: tuple[float, float] | None = option(
        None, "per-client lambda_k = LO + (HI-LO) k/(K-1) (the authors' IMDb grid: 0.1 0.9); "
        "instead of --lam", group=INSTANCE, type=float, nargs=2, metavar=("LO", "HI"),
        convert=tuple)
    reward_form: str = option("additive", "additive: R0 + lam H; convex: lam H + (1-lam) R0 "
                              "(needs lam in [0, 1])", group=INSTANCE, choices=REWARD_FORMS)
    weights: str | Sequence[float] = option(
        "uniform", "aggregation weights p_k: uniform, samples (proportional to the clients' "
        "sample counts) or K comma-separated non-negative numbers", group=INSTANCE,
        type=weighting)
    start: str = option("uniform", "start distribution rho", group=INSTANCE, choices=STARTS)
    init: str = option("zero", "initial logits theta0: zero (uniform policy) or random normal",
                       group=INSTANCE, choices=INITS)
    init_scale: float = 1.0
    seed: int = option(0, "seed of the instance (default: --seed)", flag="--instance-seed",
                       group=INSTANCE, type=count, dest="instance_seed", cli_default=None)

    def validate(self) -> "InstanceSpec":
        K = check_int("clients (K)", self.num_clients, 1)
        S = check_int("states (S)", self.num_states, 1)
        check_int("actions (A)", self.num_actions, 2)
        check_real("gamma", self.gamma, 0.0, 1.0, hi_open=True)
        check_real("transition_heterogeneity", self.transition_heterogeneity, 0.0, 1.0)
        check_real("reward_heterogeneity", self.reward_heterogeneity, 0.0, 1.0)
        if self.branching is not None:
            check_int("branching", self.branching, 1, S)
        check_real("r_max", self.r_max, 0.0)
        check_real("h_max", self.h_max, 0.0)
        check_choice("reward_form", self.reward_form, REWARD_FORMS)
        check_choice("start", self.start, STARTS)
        check_choice("init", self.init, INITS)
        check_real("init_scale", self.init_scale, 0.0)
        check_int("seed", self.seed, 0)
        lam_max = 1.0 if self.reward_form == "convex" else None
        allowed = "must be in [0, 1] with the convex reward form" if lam_max else "must be >= 0"
        ok = lambda v: bool(np.isfinite(v) and v >= 0 and (lam_max is None or v <= lam_max))
        if self.lam_grid is not None:   # the grid's ends bound its values
            require(len(self.lam_grid) == 2 and all(map(ok, self.lam_grid)), "lam_grid",
                    list(self.lam_grid), "must be two numbers (lo, hi) that each " + allowed[5:])
        elif np.ndim(self.lam) == 0:
            require(ok(self.lam), "lam", self.lam, allowed)
        else:
            for k, value in enumerate(self.lam_values()):
                require(ok(value), f"lam[{k}]", float(value), allowed)
        if isinstance(self.weights, str):
            check_choice("weights", self.weights, WEIGHTINGS)
        else:
            w = np.asarray(self.weights, dtype=float)
            require(w.shape == (K,), "weights", list(self.weights), f"must hold K = {K} numbers")
            require(bool(np.all(np.isfinite(w)) and np.all(w >= 0)), "weights", list(self.weights),
                    "must be finite and non-negative")
            require(bool(w.sum() > 0), "weights", list(self.weights), "must not be all zero")
        return self

    def lam_values(self) -> np.ndarray:
        K = self.num_clients
        if self.lam_grid is not None:
            lo, hi = self.lam_grid
            return lo + (hi - lo) * np.arange(K) / max(K - 1, 1)
        lam = np.asarray(self.lam, dtype=float)
        if lam.ndim == 0:
            return np.full(K, float(lam))
        if lam.shape != (K,):
            raise ConfigError("lam", list(lam), f"must be one number or K = {K} numbers")
        return lam


@dataclass(frozen=True)
class LearnerSpec:
    """How a client computes its local direction.

    learner: "pg" (policy gradient) or "ppo" (one PPO iteration per local step on `batch`
        sampled trajectories: fedsim.tabular.ppo).
    gradient: with pg, "exact" (two linear solves) or "sampled" (`batch` trajectories,
        geometric horizon capped at `horizon`; None picks H with gamma^H <= 1e-7).
    reg: "entropy" adds tau * entropy to the reward, "kl" subtracts tau * KL(pi || pi_ref)
        with pi_ref the initial policy softmax(theta0).
    """

    gradient: str = option("exact", "exact policy gradient, or sampled trajectories",
                           group=LEARNER, choices=GRADIENTS)
    batch: int = option(16, "trajectories per sampled gradient (>= 1)", short="-B",
                        group=LEARNER, type=count)
    horizon: int | None = option(None, "cap on the geometric trajectory length (default: "
                                 "gamma^H <= 1e-7)", group=LEARNER, type=count)
    estimator: str = option("gpomdp", "sampled-gradient estimator", group=LEARNER,
                            choices=ESTIMATORS)
    reg: str = option("none", "entropy bonus, or KL penalty to the initial policy",
                      group=LEARNER, choices=REGULARIZERS)
    tau: float = option(0.0, "regularisation weight (> 0 with --reg)", group=LEARNER, type=float)
    learner: str = option("pg", "pg: one policy-gradient step per local step; ppo: one PPO "
                          "iteration (B trajectories, GAE, clipped surrogate, epochs x "
                          "minibatches) per local step, with the engine's step size 1 for plain "
                          "PPO", group=LEARNER, choices=LEARNERS)
    clip: float = option(0.2, "with --learner ppo: the surrogate's clip range epsilon (> 0; inf: "
                         "no clipping)", group=LEARNER, type=float, metavar="EPS")
    epochs: int = option(4, "with ppo: passes over the batch per iteration (>= 1)",
                         group=LEARNER, type=count)
    minibatches: int = option(4, "with ppo: minibatches per epoch, dividing --batch",
                              group=LEARNER, type=count)
    gae_lambda: float = option(0.9, "with ppo: GAE's lambda, in [0, 1]", group=LEARNER,
                               type=float)
    ppo_lr: float = option(0.5, "with ppo: the surrogate's gradient-ascent step (> 0)",
                           group=LEARNER, type=float)
    value_lr: float = option(0.05, "with ppo: the tabular value function's step (>= 0)",
                             group=LEARNER, type=float)
    entropy_coef: float = option(0.0, "with ppo: the entropy bonus's weight (>= 0)",
                                 group=LEARNER, type=float)
    kl_target: float | None = option(None, "with ppo: adapt the KL penalty's coefficient (fedkl's "
                                     "beta, else --reg kl's tau) toward this KL per trajectory, "
                                     "TRL's adaptive controller (default: fixed)", group=LEARNER,
                                     type=float)
    kl_horizon: float = option(10_000.0, "with --kl-target: the controller's horizon (TRL: "
                               "10000)", group=LEARNER, type=float)
    normalize_advantages: bool = option(True, "with ppo: normalise the batch's advantages "
                                        "(--no-normalize-advantages: raw GAE)", group=LEARNER,
                                        action=FLAG)

    def validate(self) -> "LearnerSpec":
        check_choice("learner", self.learner, LEARNERS)
        check_choice("gradient", self.gradient, GRADIENTS)
        check_int("batch (B)", self.batch, 1)
        if self.learner == "ppo":
            require(isinstance(self.clip, (int, float)) and self.clip > 0, "clip (epsilon)",
                    self.clip, "must be > 0 (inf: no clipping)")
            check_int("epochs", self.epochs, 1)
            check_int("minibatches", self.minibatches, 1, self.batch)
            require(self.batch % self.minibatches == 0, "minibatches", self.minibatches,
                    f"must divide the batch B = {self.batch}")
            check_real("gae_lambda", self.gae_lambda, 0.0, 1.0)
            check_real("ppo_lr", self.ppo_lr, 0.0, lo_open=True)
            check_real("value_lr", self.value_lr, 0.0)
            check_real("entropy_coef", self.entropy_coef, 0.0)
            if self.kl_target is not None:
                check_real("kl_target", self.kl_target, 0.0, lo_open=True)
            check_real("kl_horizon", self.kl_horizon, 0.0, lo_open=True)
        if self.horizon is not None:
            check_int("horizon (H)", self.horizon, 1)
        check_choice("estimator", self.estimator, ESTIMATORS)
        check_choice("reg", self.reg, REGULARIZERS)
        check_real("tau", self.tau, 0.0)
        require(self.reg == "none" or self.tau > 0, "tau", self.tau,
                f"must be > 0 with reg = {self.reg}")
        return self

    def horizon_for(self, gamma: float) -> int:
        from fedsim.tabular.sampling import default_horizon

        return self.horizon if self.horizon is not None else default_horizon(gamma)


@dataclass(frozen=True)
class TabularRunConfig:
    """A tabular FedRLHF run. lr = "mei" picks Mei et al.'s provably safe constant step."""

    instance: InstanceSpec = field(default_factory=InstanceSpec)
    learner: LearnerSpec = field(default_factory=LearnerSpec)
    algorithm: str = option("fedavg", "fedavg (FedRLHF), fedprox (FedAvg with a proximal term, "
                            "--mu), centralized (pooled objective, same samples), local (no "
                            "aggregation) or fedkl (own policies, a KL penalty to a reference "
                            "mixed from the peers'; --kl-coef)", group=FEDERATION,
                            choices=ALGORITHMS)
    mu: float = option(0.0, "with --algorithm fedprox: the proximal coefficient mu >= 0 of "
                       "-mu/2 ||theta - theta_global||^2 in the local objective (Li et al. 2020)",
                       group=FEDERATION, type=float)
    kl_coef: float = option(0.1, "with --algorithm fedkl: beta >= 0 of -beta KL(pi_k || "
                            "pi_ref,k) in client k's reward (0: local training)", group=PEERS,
                            type=float, metavar="BETA")
    self_weight: float = option(0.5, "with fedkl: alpha in [0, 1], the weight of a client's own "
                                "policy in its reference (1: isolated, re-anchored to itself; "
                                "0: peers only)", group=PEERS, type=float, metavar="ALPHA")
    graph: str = option("complete", "with fedkl: whose policies a client's reference mixes: "
                        "every other client, its ring neighbours k +- 1, or a star around "
                        "client 0; W = alpha I + (1 - alpha) x the row-normalised adjacency",
                        group=PEERS, choices=GRAPHS)
    mixing: str = option("geometric", "with fedkl: the reference is the geometric mixture "
                         "(normalised prod_j pi_j^W_kj, the authors' LLM code), its unnormalised "
                         "form, whose KL is sum_j W_kj KL(pi || pi_j) (sum_of_kls, their RL "
                         "code), or the arithmetic mixture sum_j W_kj pi_j", group=PEERS,
                         choices=MIXINGS)
    peer_weights: tuple[float, ...] | None = option(
        None, "with fedkl, instead of --self-weight and --graph: W itself, K x K comma-separated "
        "non-negative numbers row by row, each row summing to 1", group=PEERS, type=numbers,
        metavar="W", convert=lambda v: tuple(v) if isinstance(v, tuple) else (v,))
    peer_weighting: str = option("fixed", "with fedkl: fixed W, or returns: each communication, "
                                 "tilt W's peer part by softmax(J_j / T) of the clients' own "
                                 "returns (the authors' softmax of the peers' recent rewards)",
                                 group=PEERS, choices=PEER_WEIGHTINGS)
    return_temperature: float = option(1.0, "with --peer-weighting returns: the softmax's "
                                       "temperature T (> 0)", group=PEERS, type=float,
                                       metavar="T")
    rounds: int = option(100, "communication rounds T (>= 1)", short="-T", group=FEDERATION,
                         type=count)
    local_steps: int = option(5, "local steps per round E (>= 1)", short="-E", group=FEDERATION,
                              type=count)
    participants: int | None = option(None, "clients sampled per round without replacement, "
                                      "in [1, K] (default: all)", short="-m", group=FEDERATION,
                                      type=count)
    schedule: str = option("constant", "constant: eta = --lr; inverse_time: eta_t = beta / "
                           "(t + gamma0), t counting local steps", group=FEDERATION,
                           choices=SCHEDULES)
    lr: float | str = option(1.0, 'constant step size (> 0), or "mei" for (1-gamma)^3 / (8 '
                             "reward span), Mei et al.'s provably safe step", group=FEDERATION,
                             type=step_size)
    beta: float = option(1.0, "beta of the inverse_time schedule (> 0)", group=FEDERATION,
                         type=float)
    gamma0: float = option(10.0, "gamma0 of the inverse_time schedule (> 0)", group=FEDERATION,
                           type=float)
    server_optimizer: str = option("none", "optax server optimiser on the pseudo-gradient "
                                   "(none: plain averaging)", flag="--server-opt",
                                   group=FEDERATION, choices=SERVER_OPTIMIZERS, dest="server_opt")
    server_lr: float = option(1.0, "server learning rate (> 0)", group=FEDERATION, type=float)
    aggregator: str = option("mean", "mean: FedAvg's weighted mean of the deltas; median: "
                             "coordinate-wise median; trimmed_mean: coordinate-wise mean "
                             "without the floor(trim n) largest and smallest values (both "
                             "unweighted, Yin et al. 2018)", group=ROBUSTNESS,
                             choices=AGGREGATORS)
    trim: float = option(0.0, "with --aggregator trimmed_mean: the fraction trimmed at each "
                         "end, in [0, 0.5) and at least the Byzantine fraction",
                         group=ROBUSTNESS, type=float, metavar="BETA")
    dropout: float = option(0.0, "each participant's delta is lost with probability P, in "
                            "[0, 1); a round where all are lost leaves the global policy "
                            "unchanged", group=ROBUSTNESS, type=float, metavar="P")
    stragglers: float = option(0.0, "each participant, with probability S, completes only a "
                               "number of local steps drawn uniformly from 1 .. E-1 this round "
                               "(not centralized)", group=ROBUSTNESS, type=float, metavar="S")
    byzantine: float = option(0.0, "fraction of Byzantine clients (drawn from the instance "
                              "seed), whose sent deltas --attack replaces", group=ROBUSTNESS,
                              type=float, metavar="F")
    attack: str = option("sign_flip", "with --byzantine: sign_flip sends -c x the honest "
                         "delta, scale c x it, noise N(0, c^2) per coordinate",
                         group=ROBUSTNESS, choices=ATTACKS)
    attack_scale: float = option(2.5, "with --byzantine: the attack's c (FedPG-BR's sign flip: "
                                 "2.5)", group=ROBUSTNESS, type=float, metavar="C")
    seed: int = option(0, "run seed (>= 0)", group=RUN, type=count)
    num_seeds: int = option(1, "seeds seed, ..., seed+N-1 run as one vmapped program on the "
                            "same instance", group=RUN, type=count)
    log_every: int = option(1, "write every N-th round to metrics.csv", group=RUN, type=count)
    log_points: int | None = option(None, "instead of --log-every: evaluate and write about N "
                                    "log-spaced rounds (memory O(K + N), not O(T K), for long "
                                    "runs)", group=RUN, type=count, metavar="N")
    devices: int = option(1, "split the clients over this many devices (jax.sharding); K not a "
                          "multiple is padded with zero-weight clients. On a CPU, N makes N XLA "
                          "devices, each running its shard on a thread of its own (up to one "
                          "per core helps); with 2 or more cores, a device the rounds do not use "
                          "evaluates the logged rounds beside them", group=RUN, type=count)
    client_block: int | None = option(None, "run the clients' local steps in blocks of B (vmap "
                                      "inside a block): the same results with the working set "
                                      "of B clients; on a 2-core CPU, blocks of 1000 made K = "
                                      "10000 2.1x faster (measured)", group=RUN, type=count,
                                      metavar="B")

    privacy: PrivacyOptions = field(default_factory=PrivacyOptions)

    @property
    def num_rows(self) -> int:
        """The client axis: the K clients and the audit's canaries after them."""
        return self.instance.num_clients + self.privacy.canaries

    def client_steps(self, rows: int) -> int:
        """Local steps the run's participants take, per seed, on a client axis of `rows`."""
        return self.rounds * self.local_steps * self.federation().num_participants(rows)

    def validate(self) -> "TabularRunConfig":
        import jax

        from fedsim.engine.sharding import padded_size
        from fedsim.memory import check_fits
        from fedsim.tabular.experiment import estimate_memory

        self.instance.validate()
        self.learner.validate()
        check_real("byzantine", self.byzantine, 0.0, 1.0)
        check_int("rounds (T)", self.rounds, 1)
        self.privacy.validate(self.instance.num_clients)
        self.federation().validate(self.num_rows)
        require(self.learner.kl_target is None or self.learner.learner == "ppo", "kl_target",
                self.learner.kl_target, "needs --learner ppo")
        require(self.learner.kl_target is None or self.algorithm == "fedkl"
                or self.learner.reg == "kl", "kl_target", self.learner.kl_target,
                "needs a KL penalty to adapt: --algorithm fedkl or --reg kl")
        check_int("rounds (T)", self.rounds, 1)
        check_choice("server_opt", self.server_optimizer, SERVER_OPTIMIZERS)
        check_real("server_lr", self.server_lr, 0.0, lo_open=True)
        check_int("seed", self.seed, 0)
        check_int("num_seeds", self.num_seeds, 1)
        check_int("log_every", self.log_every, 1)
        if self.log_points is not None:
            check_int("log_points", self.log_points, 1)
        available = len(jax.devices())
        require(isinstance(self.devices, int) and 1 <= self.devices <= available, "devices",
                self.devices, f"must be an integer in [1, {available}], the devices JAX sees "
                "(on a CPU, `fedsim run tabular --devices N` makes N; from Python, "
                "jax.config.update('jax_num_cpu_devices', N) before JAX's first operation)")
        if padded_size(self.instance.num_clients, self.devices) != self.instance.num_clients:
            require(self.participants is None, "participants", self.participants,
                    f"must be none (all clients) when K = {self.instance.num_clients} is not a "
                    f"multiple of --devices {self.devices}: padded clients would be sampled")
        require(self.lr == "mei" or isinstance(self.lr, (int, float)), "lr", self.lr,
                'must be a positive number or "mei"')
        self._schedule(1, 1.0 if self.lr == "mei" else self.lr)   # its numbers, for one round
        check_fits(estimate_memory(self))   # before anything is allocated
        return self

    def federation(self):
        """The engine's Federation (fedsim.engine.federation) this run describes."""
        import optax

        from fedsim.engine import Federation

        opt = {"none": None, "sgd": optax.sgd, "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
               "adam": optax.adam}.get(self.server_optimizer)
        return Federation(self.algorithm, self.local_steps, self.participants,
                          opt(self.server_lr) if opt else None, self.client_block,
                          self.aggregator, self.trim, self.dropout, self.stragglers,
                          tuple(int(k) for k in np.flatnonzero(self.byzantine_mask())),
                          self.attack, self.attack_scale, self.mu, self.kl_coef,
                          self.self_weight, self.graph, self.mixing, self.peer_weights,
                          self.peer_weighting, self.return_temperature,
                          **self.privacy.federation_fields(self.num_rows, self.rounds,
                                                           self.participants))

    def byzantine_mask(self) -> np.ndarray:
        """(K,) bool: the Byzantine clients, drawn from the instance seed."""
        from fedsim.engine.faults import byzantine_clients

        return byzantine_clients(self.instance.num_clients, self.byzantine, self.instance.seed)

    def logged_rounds(self) -> np.ndarray:
        """Round counts (1-based) evaluated and written: about log_points log-spaced ones if
        set, else every log_every-th; always the last."""
        from fedsim.engine.train import log_checkpoints

        if self.log_points is not None:
            return log_checkpoints(self.rounds, self.log_points)
        every = np.arange(self.log_every, self.rounds + 1, self.log_every)
        return np.unique(np.append(every, self.rounds)).astype(np.int32)

    def step_sizes(self, mei_step: float) -> np.ndarray:
        return self._schedule(self.rounds, mei_step if self.lr == "mei" else self.lr)

    def _schedule(self, rounds: int, lr: float) -> np.ndarray:
        from fedsim.engine.schedules import step_sizes

        return step_sizes(self.schedule, rounds, self.local_steps, lr=lr, beta=self.beta,
                          gamma0=self.gamma0)
