"""The privacy options every task's command line shares: DP-FedAvg, sampling, canaries.

No JAX here (so that `--help` is instant); `settings()` gives the DP-FedAvg settings, and
`federation_fields(K, T)` the Federation's sampling, DP and canary fields with z calibrated
from --target-epsilon when that is what was given.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from fedsim.choices import ACCOUNTANTS, SAMPLINGS
from fedsim.errors import check_int, require
from fedsim.options import FLAG, count, option

PRIVACY = ("privacy (DP-FedAvg with fedavg or fedprox: clipping, noise, accounting with "
           "dp-accounting; client sampling; canaries for a one-run audit)")


@dataclass(frozen=True)
class PrivacyOptions:
    dp_clip: float | None = option(None, "DP-FedAvg: clip every client's round delta to L2 norm "
                                   "C over all shared parameters, then add Gaussian noise to "
                                   "the sum (McMahan et al. 2018); the initial C with "
                                   "--dp-adaptive-clip", group=PRIVACY, type=float,
                                   metavar="C")
    dp_adaptive_clip: bool = option(False, "DP-FedAvg with adaptive clipping (Andrew et al. "
                                    "2021): C follows the --dp-target-quantile of the update "
                                    "norms geometrically, from --dp-clip (default 1)",
                                    group=PRIVACY, action=FLAG)
    dp_noise: float | None = option(None, "DP-FedAvg's noise multiplier z >= 0: noise std z C "
                                    "on the sum (0: clipping only, no privacy)", group=PRIVACY,
                                    type=float, metavar="Z")
    target_epsilon: float | None = option(None, "instead of --dp-noise: the smallest z whose "
                                          "epsilon(--dp-delta) after --rounds is at most this",
                                          group=PRIVACY, type=float, metavar="EPS")
    dp_delta: float = option(1e-5, "the delta of the reported epsilon(delta), in (0, 1)",
                             group=PRIVACY, type=float, metavar="DELTA")
    dp_accountant: str = option("rdp", "rdp (Renyi DP; also fixed-size sampling, replace-one "
                                "neighbours) or pld (privacy loss distributions, tighter; "
                                "Poisson sampling only)", group=PRIVACY, choices=ACCOUNTANTS)
    dp_target_quantile: float = option(0.5, "with --dp-adaptive-clip: the fraction of "
                                       "unclipped deltas C aims at, in [0, 1]", group=PRIVACY,
                                       type=float, metavar="GAMMA")
    dp_clip_lr: float = option(0.2, "with --dp-adaptive-clip: the geometric step size eta "
                               "of C's update (> 0)", group=PRIVACY, type=float, metavar="ETA")
    dp_count_std: float | None = option(None, "with --dp-adaptive-clip: the std of the noise "
                                        "on the unclipped count (default: expected "
                                        "participants / 20); needs 2 x it > z", group=PRIVACY,
                                        type=float, metavar="SIGMA_B")
    sampling: str = option("fixed", "fixed: --participants m (or round(q K)) of K clients "
                           "without replacement each round; poisson: each client independently "
                           "with probability --participation-rate q (what the accountant's "
                           "Poisson amplification assumes)", group=PRIVACY, choices=SAMPLINGS)
    participation_rate: float | None = option(None, "q in (0, 1]: the participation "
                                              "probability (poisson) or fraction (fixed)",
                                              group=PRIVACY, type=float, metavar="Q")
    canaries: int = option(0, "add N canary clients (fewer than --clients) for a one-run "
                           "audit (Steinke et al. 2023; Andrew et al. 2024): each is in the run "
                           "with probability 1/2 and sends a fixed random direction of norm C; "
                           "summary.json gets the audit's lower bound on epsilon beside the "
                           "accountant's. Needs --dp-clip", group=PRIVACY, type=count,
                           metavar="N")

    @property
    def dp_enabled(self) -> bool:
        return self.dp_clip is not None or self.dp_adaptive_clip

    def validate(self, num_clients: int) -> "PrivacyOptions":
        if self.dp_enabled:
            require((self.dp_noise is None) != (self.target_epsilon is None), "dp_noise",
                    self.dp_noise, "give exactly one of --dp-noise and --target-epsilon with "
                    "DP-FedAvg")
            self.settings()   # the ranges of C, z, delta, ... (DPSettings.validate)
        else:
            for name in ("dp_noise", "target_epsilon", "dp_count_std"):
                require(getattr(self, name) is None, name, getattr(self, name),
                        "needs DP-FedAvg: --dp-clip C or --dp-adaptive-clip")
        check_int("canaries", self.canaries, 0)
        require(self.canaries < num_clients, "canaries", self.canaries,
                f"must be fewer than the {num_clients} clients")
        require(self.canaries == 0 or self.canaries >= 2, "canaries", self.canaries,
                "must be 0 or at least 2 (the audit guesses in and out)")
        require(self.canaries == 0 or self.dp_enabled, "canaries", self.canaries,
                "need DP-FedAvg's clipping: --dp-clip C (with --dp-noise 0 to audit no noise)")
        return self

    def check_task(self, algorithms, private: str) -> "PrivacyOptions":
        """For MovieLens and IMDb: no canaries yet, and DP-FedAvg only with `private`, their
        algorithm that aggregates deltas, among `algorithms` (the others are baselines)."""
        require(self.canaries == 0, "canaries", self.canaries,
                "are audited on the tabular task for now (fedsim run tabular --canaries N)")
        require(not self.dp_enabled or private in algorithms, "algorithm", list(algorithms),
                f"must include {private} with DP-FedAvg (the only one that aggregates deltas; "
                "the others run without it, as baselines)")
        return self

    def settings(self):
        """DP-FedAvg's settings (fedsim.privacy.settings.DPSettings), or None without DP."""
        if not self.dp_enabled:
            return None
        from fedsim.privacy.settings import DPSettings

        return DPSettings(1.0 if self.dp_clip is None else self.dp_clip, self.dp_noise,
                          self.target_epsilon, self.dp_delta, self.dp_adaptive_clip,
                          self.dp_target_quantile, self.dp_clip_lr, self.dp_count_std,
                          self.dp_accountant).validate()

    def federation_fields(self, num_rows: int, rounds: int, participants: int | None = None
                          ) -> dict:
        """Federation(**these): sampling, rate, DP settings (z calibrated) and canaries, for
        `num_rows` client rows (the clients and the canaries)."""
        dp = self.settings()
        if dp is not None and dp.noise_multiplier is None:
            dp = _calibrated(dp, self.sampling, self.participation_rate, participants,
                             num_rows, rounds)
        return {"sampling": self.sampling, "participation_rate": self.participation_rate,
                "dp": dp, "canaries": self.canaries}


@functools.lru_cache(maxsize=64)
def _calibrated(dp, sampling: str, rate, participants, num_rows: int, rounds: int):
    """dp with z calibrated to its target epsilon (cached: config checks call it often)."""
    from fedsim.engine.federation import Federation

    fed = Federation(participants=participants, sampling=sampling, participation_rate=rate)
    fed._validate_sampling(num_rows)
    return dp.calibrated(fed.accounting(num_rows), rounds)
