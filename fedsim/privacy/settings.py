"""The DP-FedAvg settings a command line or a sweep fills in (fedsim.privacy.dp_fedavg)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fedsim.errors import check_real, require
from fedsim.privacy.accounting import ACCOUNTANTS, Sampling, calibrate_noise, epsilons
from fedsim.privacy.dp_fedavg import AdaptiveClip, dp_fedavg


@dataclass(frozen=True)
class DPSettings:
    """clip: C (the initial C with adaptive_clip); noise_multiplier: z, or None with
    target_epsilon (then `calibrated` finds z and keeps the target, for the record); delta: the delta of epsilon(delta);
    target_quantile, clip_lr, count_std: adaptive clipping's gamma, eta and sigma_b (None:
    the expected participants / 20, Andrew et al.'s choice); accountant: "rdp" or "pld"."""

    clip: float = 1.0
    noise_multiplier: float | None = 1.0
    target_epsilon: float | None = None
    delta: float = 1e-5
    adaptive_clip: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    count_std: float | None = None
    accountant: str = "rdp"

    def validate(self) -> "DPSettings":
        check_real("dp_clip", self.clip, 0.0, lo_open=True)
        require(self.noise_multiplier is not None or self.target_epsilon is not None,
                "dp_noise", None, "give --dp-noise z or --target-epsilon")
        if self.noise_multiplier is not None:
            check_real("dp_noise", self.noise_multiplier, 0.0)
        if self.target_epsilon is not None:
            check_real("target_epsilon", self.target_epsilon, 0.0, lo_open=True)
        check_real("dp_delta", self.delta, 0.0, 1.0, lo_open=True, hi_open=True)
        require(self.accountant in ACCOUNTANTS, "dp_accountant", self.accountant,
                f"must be one of {list(ACCOUNTANTS)}")
        check_real("dp_target_quantile", self.target_quantile, 0.0, 1.0)
        check_real("dp_clip_lr", self.clip_lr, 0.0, lo_open=True)
        if self.count_std is not None:
            check_real("dp_count_std", self.count_std, 0.0)
        return self

    def adaptive(self, expected_participants: float) -> AdaptiveClip | None:
        if not self.adaptive_clip:
            return None
        std = expected_participants / 20 if self.count_std is None else self.count_std
        return AdaptiveClip(self.target_quantile, self.clip_lr, std)

    def aggregator(self, expected_participants: float):
        require(self.noise_multiplier is not None, "dp_noise", None,
                "must be set (or calibrated from --target-epsilon) before the aggregator")
        return dp_fedavg(self.clip, self.noise_multiplier, expected_participants,
                         self.adaptive(expected_participants))

    def calibrated(self, sampling: Sampling, rounds: int) -> "DPSettings":
        """These settings with z found from target_epsilon (unchanged if z is given)."""
        if self.target_epsilon is None:
            return self
        z = calibrate_noise(self.target_epsilon, sampling, rounds, self.delta, self.accountant)
        return dataclasses.replace(self, noise_multiplier=z)

    def epsilons(self, sampling: Sampling, rounds) -> list[float]:
        return epsilons(self.noise_multiplier, sampling, rounds, self.delta, self.accountant)


def privacy_record(fed, num_rows: int, rounds: int) -> dict:
    """summary.json's record of what the accountant was told: z, C, delta, the sampling and
    the neighbouring relation it assumed."""
    from fedsim.privacy.accounting import neighbouring_relation

    dp, sampling = fed.dp, fed.accounting(num_rows)
    return {"accountant": dp.accountant, "delta": dp.delta,
            "noise_multiplier": dp.noise_multiplier, "target_epsilon": dp.target_epsilon,
            "clip": dp.clip, "adaptive_clip": dp.adaptive_clip, "sampling": sampling.kind,
            "rate": sampling.rate, "client_rows": sampling.num_clients,
            "expected_participants": fed.expected_participants(num_rows),
            "neighbouring_relation": neighbouring_relation(sampling), "rounds": rounds}


def epsilon_by_round(fed, num_rows: int, rounds) -> dict | None:
    """{round: the accountant's epsilon after it} for a DP-FedAvg federation (None without)."""
    if fed.dp is None:
        return None
    rounds = [int(t) for t in rounds]
    return dict(zip(rounds, fed.dp.epsilons(fed.accounting(num_rows), rounds)))
