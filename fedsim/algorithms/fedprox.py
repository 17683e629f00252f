"""FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, MLSys 2020): FedAvg whose local
objective adds the proximal term -mu/2 ||theta - theta_global||^2, which keeps a client's E
local steps near the round's global parameters (the server sends them as the message)."""

from typing import NamedTuple

import jax

from fedsim.algorithms.fedavg import fedavg
from fedsim.engine.aggregators import Aggregator
from fedsim.engine.algorithm import from_global


class FedProxHParams(NamedTuple):
    mu: float = 0.0   # the proximal coefficient (0: FedAvg)


def anchored_start(global_params, client_params, participants, hparams):
    """Start from the global parameters, and keep them as the proximal anchor."""
    start, _ = from_global(global_params, client_params, participants, hparams)
    return start, start


def proximal(direction, params, anchor, hparams: FedProxHParams):
    """The ascent direction of J_k(theta) - mu/2 ||theta - anchor||^2."""
    return jax.tree.map(lambda d, p, a: d - hparams.mu * (p - a), direction, params, anchor)


def fedprox(aggregator: Aggregator | None = None, server_opt=None):
    return fedavg(aggregator, server_opt)._replace(
        name="fedprox", client_start=anchored_start, local_objective=proximal)
