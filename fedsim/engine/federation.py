"""A run's federation: which algorithm, who takes part each round, and which faults strike.

`Federation` is the configuration a command line or a sweep fills in; `algorithm_parts()`
builds the composed algorithm it names (fedsim.algorithms), and the round function
(fedsim.engine.round) reads the participation and fault settings. A user's own algorithm
(an `Algorithm` built from the parts) runs with the same Federation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import optax

from fedsim.choices import ALGORITHMS, DELTA_ALGORITHMS, MIXINGS, PEER_WEIGHTINGS, SAMPLINGS
from fedsim.engine.aggregators import make_aggregator
from fedsim.engine.faults import check_attack
from fedsim.errors import check_choice, check_int, check_real, require


@dataclass(frozen=True)
class Federation:
    """How rounds run. `participants` (m) of K clients take part each round (None: all).

    client_block: None vmaps all clients at once; b runs them in blocks of b (vmap inside a
    block, a loop over blocks: `jax.lax.map(batch_size=b)`), the same computation with the
    working set of b clients, for K whose state outgrows the CPU's caches or the GPU memory.
    aggregator, trim: how the server combines the deltas (fedsim.engine.aggregators).
    dropout: each participant's delta is lost with this probability (fedsim.engine.faults).
    stragglers: each participant completes only 1..E-1 local steps with this probability
    (fedavg and local).
    byzantine: indices of clients whose sent deltas are replaced by `attack` with
    `attack_scale` (fedsim.engine.faults). The aggregator, dropout and Byzantine clients
    apply to fedavg and fedprox, the algorithms that aggregate deltas.
    sampling, participation_rate: "fixed" takes m = `participants` (or round(q K) with a
    rate q) of K without replacement; "poisson" takes each client independently with
    probability q (all K rows are computed, the unsampled ones keep their state).
    dp: DP-FedAvg's settings (fedsim.privacy.settings.DPSettings), the aggregator with
    clipping and noise; canaries: the last n rows of the client axis are canary clients
    for a one-run audit (fedsim.privacy.canaries).
    mu: FedProx's proximal coefficient (an input of the compiled run: algorithm_hparams).
    kl_coef, self_weight, graph, mixing, peer_weights: fedkl's KL coefficient beta, and
    its mixing matrix W (fedsim.algorithms.peers): peer_weights (K x K numbers, row by row)
    if given, else alpha I + (1 - alpha) x the graph's row-normalised adjacency; mixing:
    how the peers' policies are mixed (fedsim.choices.MIXINGS); peer_weighting "returns"
    tilts W's peer part each communication by softmax(return / return_temperature) of the
    clients' reported returns (fedsim.algorithms.fedkl.tilt_by_returns).
    """

    algorithm: str = "fedavg"
    local_steps: int = 1
    participants: int | None = None
    server_optimizer: optax.GradientTransformation | None = None
    client_block: int | None = None
    aggregator: str = "mean"
    trim: float = 0.0
    dropout: float = 0.0
    stragglers: float = 0.0
    byzantine: tuple[int, ...] = ()
    attack: str = "sign_flip"
    attack_scale: float = 2.5
    mu: float = 0.0   # FedProx's proximal coefficient
    kl_coef: float = 0.1
    self_weight: float = 0.5
    graph: str = "complete"
    mixing: str = "geometric"
    peer_weights: tuple[float, ...] | None = None
    peer_weighting: str = "fixed"
    return_temperature: float = 1.0
    sampling: str = "fixed"
    participation_rate: float | None = None
    dp: Any = None   # fedsim.privacy.settings.DPSettings
    canaries: int = 0

    def validate(self, num_clients: int) -> "Federation":
        check_choice("algorithm", self.algorithm, ALGORITHMS)
        check_int("local_steps (E)", self.local_steps, 1)
        if self.participants is not None:
            check_int("participants (m)", self.participants, 1, num_clients)
        if self.client_block is not None:
            check_int("client_block", self.client_block, 1)
        require(self.server_optimizer is None or self.algorithm not in ("local", "fedkl"),
                "server_opt", "set", f"must be none with the {self.algorithm} algorithm (there "
                "is no aggregation)")
        make_aggregator(self.aggregator, self.trim)   # checks the name and the trim
        check_real("dropout", self.dropout, 0.0, 1.0, hi_open=True)
        check_real("stragglers", self.stragglers, 0.0, 1.0)
        require(self.stragglers == 0 or self.local_steps >= 2, "stragglers", self.stragglers,
                "must be 0 with local_steps E = 1 (a straggler does 1 to E - 1 steps)")
        require(self.stragglers == 0 or self.algorithm != "centralized", "algorithm",
                self.algorithm, "must be fedavg, fedprox or local with --stragglers")
        require(not self.acts_on_deltas or self.algorithm in DELTA_ALGORITHMS, "algorithm",
                self.algorithm, "must be fedavg or fedprox with --aggregator, --dropout, "
                "--byzantine or DP-FedAvg (the others do not aggregate deltas)")
        self._validate_sampling(num_clients)
        check_real("mu", self.mu, 0.0)
        require(self.mu == 0 or self.algorithm == "fedprox", "mu", self.mu,
                "must be 0 unless the algorithm is fedprox (the proximal coefficient)")
        if self.algorithm == "fedkl":
            check_real("kl_coef (beta)", self.kl_coef, 0.0)
            check_choice("mixing", self.mixing, MIXINGS)
            check_choice("peer_weighting", self.peer_weighting, PEER_WEIGHTINGS)
            check_real("return_temperature", self.return_temperature, 0.0, lo_open=True)
            self.mixing_matrix(num_clients)   # checks alpha, the graph or the given W
        if self.byzantine:
            require(all(0 <= k < num_clients for k in self.byzantine), "byzantine",
                    list(self.byzantine), f"must name clients in [0, {num_clients - 1}]")
            check_attack(self.attack, self.attack_scale)
            fraction = len(set(self.byzantine)) / num_clients
            require(self.aggregator == "mean" or fraction < 0.5, "byzantine", fraction,
                    f"must be a fraction below 1/2 with --aggregator {self.aggregator} (a "
                    "median or trimmed mean breaks down at half)")
            require(self.aggregator != "trimmed_mean" or self.trim >= fraction, "trim",
                    self.trim, f"must be at least the Byzantine fraction {fraction:g} (Yin et "
                    "al. 2018: the trimmed mean tolerates a fraction up to beta)")
        return self

    def _validate_sampling(self, num_clients: int) -> None:
        check_choice("sampling", self.sampling, SAMPLINGS)
        if self.participation_rate is not None:
            check_real("participation_rate (q)", self.participation_rate, 0.0, 1.0,
                       lo_open=True)
            require(self.participants is None, "participants", self.participants,
                    "must be none with --participation-rate (give m or q, not both)")
        require(self.sampling == "fixed" or self.participation_rate is not None,
                "participation_rate (q)", None, "must be set with --sampling poisson")
        require(self.sampling == "fixed" or self.participants is None, "participants",
                self.participants, "must be none with --sampling poisson (use "
                "--participation-rate)")
        if self.dp is not None:
            from fedsim.privacy.accounting import check_accountant

            self.dp.validate()
            check_accountant(self.dp.accountant, self.accounting(num_clients))
            require(self.algorithm in DELTA_ALGORITHMS and self.aggregator == "mean",
                    "algorithm", self.algorithm, "must be fedavg or fedprox with the mean "
                    "aggregator under DP-FedAvg (it aggregates the clients' deltas)")
            require(self.noise_multiplier_known, "dp_noise", None, "must be calibrated from "
                    "--target-epsilon before the run (DPSettings.calibrated)")
        check_int("canaries", self.canaries, 0, max(num_clients - 1, 0))
        if self.canaries:
            require(self.dp is not None, "canaries", self.canaries,
                    "need DP-FedAvg's clipping (--dp-clip; --dp-noise 0 audits no noise)")
            require(self.sampling == "poisson" or self.num_participants(num_clients)
                    == num_clients, "sampling", self.sampling, "must be poisson or every "
                    "client with canaries (a canary's row must be computed every round)")
            require(self.server_optimizer is None, "server_opt", "set",
                    "must be none with canaries (a canary's score is its inner product with "
                    "theta_T - theta_0, the sum of the released aggregates)")
            require(not self.byzantine and self.dropout == 0, "canaries", self.canaries,
                    "cannot be combined with --byzantine or --dropout")

    @property
    def noise_multiplier_known(self) -> bool:
        return self.dp is None or self.dp.noise_multiplier is not None

    @property
    def acts_on_deltas(self) -> bool:
        """Whether a robust aggregator, dropout, Byzantine clients or DP are set: they act on
        the deltas clients send, so they need an algorithm that sends them."""
        return (self.aggregator != "mean" or self.dropout > 0 or bool(self.byzantine)
                or self.dp is not None)

    def num_participants(self, num_clients: int) -> int:
        """The rows computed each round: m, round(q K), or K (Poisson: all, masked)."""
        if self.sampling == "poisson":
            return num_clients
        if self.participation_rate is not None:
            return max(1, round(self.participation_rate * num_clients))
        return num_clients if self.participants is None else self.participants

    def expected_participants(self, num_clients: int) -> float:
        """E, the expected number of clients taking part in a round (q K with Poisson)."""
        if self.sampling == "poisson":
            return self.participation_rate * num_clients
        return float(self.num_participants(num_clients))

    def accounting(self, num_clients: int):
        """The round's sampling as the accountant sees it (fedsim.privacy.accounting)."""
        from fedsim.privacy.accounting import Sampling

        rate = (self.participation_rate if self.sampling == "poisson"
                else self.num_participants(num_clients) / num_clients)
        return Sampling(self.sampling, num_clients, rate)

    def mixing_matrix(self, num_clients: int):
        """fedkl's W (K, K), checked (fedsim.algorithms.peers)."""
        from fedsim.algorithms import peers

        if self.peer_weights is not None:
            W = np.asarray(self.peer_weights, float)
            require(W.size == num_clients ** 2, "peer_weights", list(self.peer_weights),
                    f"must be K x K = {num_clients ** 2} numbers, row by row")
            return peers.check_mixing_matrix(W.reshape(num_clients, num_clients), num_clients)
        return peers.mixing_matrix(self.graph, self.self_weight, num_clients)

    def algorithm_parts(self, task=None, num_clients: int | None = None):
        """The composed algorithm this configuration names (fedsim.algorithms), for `task`
        (and K = num_clients, which DP-FedAvg's noise scale needs)."""
        from fedsim import algorithms

        return algorithms.make_algorithm(self.algorithm, self.make_aggregator(num_clients),
                                         self.server_optimizer, task, self.mixing,
                                         self.peer_weighting)

    def make_aggregator(self, num_clients: int | None):
        if self.dp is None:
            return make_aggregator(self.aggregator, self.trim)
        require(num_clients is not None, "num_clients", None, "must be given with DP-FedAvg "
                "(its noise is scaled by the expected participants)")
        return self.dp.aggregator(self.expected_participants(num_clients))

    def algorithm_hparams(self, num_clients: int | None = None):
        """The algorithm's hyperparameters, an input of the compiled run (fedkl's W needs
        the number of clients K)."""
        from fedsim import algorithms

        W = self.mixing_matrix(num_clients) if self.algorithm == "fedkl" else None
        return algorithms.default_hparams(self.algorithm, mu=self.mu, kl_coef=self.kl_coef,
                                          peer_weights=W, temperature=self.return_temperature)


