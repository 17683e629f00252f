"""Centralized training on the pooled objective, the baseline FedRLHF is compared with: one
learner whose every step follows the weighted mean of the clients' steps at its parameters
(the same samples as FedAvg; with K = 1 the two coincide). Nothing is aggregated: the
participants all hold the learner's parameters, and the server takes them."""

import jax

from fedsim.engine.aggregators import Aggregator
from fedsim.engine.algorithm import Algorithm, pooled_training, server_optimizer


def _the_learner(deltas, weights, mask, key, state):
    return jax.tree.map(lambda d: d[0], deltas), state   # every row is the learner's


def centralized(server_opt=None) -> Algorithm:
    return Algorithm("centralized", client_update=pooled_training,
                     aggregator=Aggregator(lambda params: (), _the_learner),
                     server_update=server_optimizer(server_opt), sends_deltas=False)
