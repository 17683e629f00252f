"""Federated algorithms, each a short composition of the engine's parts
(fedsim.engine.algorithm): a new one is a new module here, not a change to the round."""

from fedsim.algorithms.centralized import centralized
from fedsim.algorithms.fedavg import fedavg
from fedsim.algorithms.fedkl import FedKLHParams, fedkl
from fedsim.algorithms.fedprox import FedProxHParams, fedprox
from fedsim.algorithms.local import local
from fedsim.engine.algorithm import Algorithm


def make_algorithm(name: str, aggregator=None, server_opt=None, task=None,
                   mixing: str = "geometric", peer_weighting: str = "fixed") -> Algorithm:
    """The algorithm a configuration names (fedsim.choices.ALGORITHMS); fedkl mixes the
    policies of `task` (Task.kl)."""
    if name == "local":
        return local()
    if name == "centralized":
        return centralized(server_opt)
    if name == "fedkl":
        return fedkl(task, mixing, peer_weighting)
    return {"fedavg": fedavg, "fedprox": fedprox}[name](aggregator, server_opt)


def default_hparams(name: str, mu: float = 0.0, kl_coef: float = 0.0, peer_weights=None,
                    temperature: float = 1.0):
    """The hyperparameters the named algorithm takes (an input of the compiled run)."""
    import jax.numpy as jnp

    if name == "fedprox":
        return FedProxHParams(mu)
    if name == "fedkl":
        return FedKLHParams(jnp.float32(kl_coef), jnp.asarray(peer_weights, jnp.float32),
                            jnp.float32(temperature))
    return ()


__all__ = ["Algorithm", "FedKLHParams", "FedProxHParams", "centralized", "default_hparams",
           "fedavg", "fedkl", "fedprox", "local", "make_algorithm"]
