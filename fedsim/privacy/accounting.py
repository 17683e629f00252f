"""Privacy accounting for DP-FedAvg with Google's `dp-accounting` (the `privacy` extra).

One round releases a Gaussian mechanism with noise multiplier z on a sample of the clients:

  Poisson sampling, rate q    PoissonSampledDpEvent(q, GaussianDpEvent(z)), add-or-remove-one
                              neighbours (q = 1: every client, every round);
  m of K without replacement  SampledWithoutReplacementDpEvent(K, m, GaussianDpEvent(z)),
                              replace-one neighbours, which only the RDP accountant handles.

T rounds compose as SelfComposedDpEvent(event, T); `epsilons` gives epsilon(delta) after each
of a list of round counts, with the RDP accountant (Mironov 2017) or the PLD accountant
(privacy loss distributions, tighter); `calibrate_noise` finds the smallest z whose epsilon
after T rounds is at most a target.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from fedsim.choices import ACCOUNTANTS
from fedsim.errors import ConfigError, require

MAX_NOISE = 1e4   # a target that needs more noise than this is reported as unreachable


def _dp_accounting():
    # its RDP code logs a warning for every order whose series it drops (harmless: the
    # order is left out of the minimum); keep the run's output readable
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        import dp_accounting
    except ImportError as error:   # an optional extra, not a core dependency
        raise ConfigError("dp_noise", "accounted", "needs Google's dp-accounting package for "
                          'the accountant: pip install -e ".[privacy]" (or pip install '
                          "dp-accounting)") from error
    return dp_accounting


class Sampling(NamedTuple):
    """Who takes part in a round, as the accountant sees it."""

    kind: str            # "poisson" or "fixed"
    num_clients: int     # K
    rate: float          # q (Poisson), or m / K (fixed)

    @property
    def sample_size(self) -> int:
        return max(1, round(self.rate * self.num_clients))


def _round_event(dpa, sampling: Sampling, noise_multiplier: float):
    gaussian = dpa.GaussianDpEvent(noise_multiplier)
    if sampling.kind == "poisson" or sampling.sample_size == sampling.num_clients:
        return dpa.PoissonSampledDpEvent(sampling.rate if sampling.kind == "poisson" else 1.0,
                                         gaussian)
    return dpa.SampledWithoutReplacementDpEvent(sampling.num_clients, sampling.sample_size,
                                                gaussian)


def neighbouring_relation(sampling: Sampling) -> str:
    fixed = sampling.kind == "fixed" and sampling.sample_size < sampling.num_clients
    return "replace_one" if fixed else "add_or_remove_one"


def check_accountant(name: str, sampling: Sampling) -> None:
    """That the accountant `name` can account this sampling (no dp-accounting needed)."""
    require(name in ACCOUNTANTS, "dp_accountant", name, f"must be one of {list(ACCOUNTANTS)}")
    require(name != "pld" or neighbouring_relation(sampling) != "replace_one", "dp_accountant",
            name, "cannot account fixed-size sampling (m of K without replacement): "
            "dp-accounting's PLD accountant does not support it; use --dp-accountant rdp "
            "(replace-one neighbours) or --sampling poisson")


def _accountant(dpa, name: str, sampling: Sampling):
    check_accountant(name, sampling)
    if name == "pld":
        return dpa.pld.PLDAccountant()
    relation = (dpa.NeighboringRelation.REPLACE_ONE
                if neighbouring_relation(sampling) == "replace_one"
                else dpa.NeighboringRelation.ADD_OR_REMOVE_ONE)
    return dpa.rdp.RdpAccountant(neighboring_relation=relation)


def epsilons(noise_multiplier: float, sampling: Sampling, rounds, delta: float,
             accountant: str = "rdp") -> list[float]:
    """epsilon(delta) after each round count in `rounds` (increasing); inf with z = 0."""
    dpa = _dp_accounting()
    acc = _accountant(dpa, accountant, sampling)   # checks the pair before z = 0 returns
    if noise_multiplier == 0:
        return [float("inf")] * len(rounds)
    event, out, done = _round_event(dpa, sampling, noise_multiplier), [], 0
    for t in rounds:
        if t > done:
            acc.compose(event, int(t - done))
            done = int(t)
        out.append(float(acc.get_epsilon(delta)))
    return out


def calibrate_noise(target_epsilon: float, sampling: Sampling, rounds: int, delta: float,
                    accountant: str = "rdp", max_noise: float = MAX_NOISE) -> float:
    """The smallest z (to 1e-4 relative) with epsilon(delta) after `rounds` <= target."""
    dpa = _dp_accounting()
    _accountant(dpa, accountant, sampling)

    def epsilon(z):
        return epsilons(z, sampling, [rounds], delta, accountant)[0]

    require(epsilon(max_noise) <= target_epsilon, "target_epsilon", target_epsilon,
            f"cannot be reached in {rounds} rounds at delta = {delta:g} with noise multiplier "
            f"up to {max_noise:g}: raise the target, lower the rounds or the participation "
            "rate")
    lo, hi = 0.0, 1.0
    while epsilon(hi) > target_epsilon:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-4 * hi:   # epsilon falls as z grows: keep epsilon(hi) <= target
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if epsilon(mid) > target_epsilon else (lo, mid)
    return hi
