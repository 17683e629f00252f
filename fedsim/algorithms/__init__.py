"""Federated algorithms, each a short composition of the engine's parts
(fedsim.engine.algorithm): a new one is a new module here, not a change to the round."""

from fedsim.algorithms.centralized import centralized
from fedsim.algorithms.fedavg import fedavg
from fedsim.algorithms.fedprox import FedProxHParams, fedprox
from fedsim.algorithms.local import local
from fedsim.engine.algorithm import Algorithm


def make_algorithm(name: str, aggregator=None, server_opt=None) -> Algorithm:
    """The algorithm a configuration names (fedsim.choices.ALGORITHMS)."""
    if name == "local":
        return local()
    if name == "centralized":
        return centralized(server_opt)
    return {"fedavg": fedavg, "fedprox": fedprox}[name](aggregator, server_opt)


def default_hparams(name: str, mu: float = 0.0):
    """The hyperparameters the named algorithm takes (an input of the compiled run)."""
    return FedProxHParams(mu) if name == "fedprox" else ()


__all__ = ["Algorithm", "FedProxHParams", "centralized", "default_hparams", "fedavg",
           "fedprox", "local", "make_algorithm"]
