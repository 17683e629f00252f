"""FedAvg (McMahan et al., AISTATS 2017), FedRLHF's Algorithm 1 (Fan et al. 2025): every
participant starts from the global parameters, takes E local steps, and sends its delta; the
server adds the aggregate (the weighted mean, or a robust aggregator), optionally through an
optax server optimiser on the pseudo-gradient (FedOpt, Reddi et al. 2021)."""

from fedsim.engine.aggregators import Aggregator, weighted_mean
from fedsim.engine.algorithm import Algorithm, server_optimizer


def fedavg(aggregator: Aggregator | None = None, server_opt=None) -> Algorithm:
    return Algorithm("fedavg", aggregator=aggregator or weighted_mean(),
                     server_update=server_optimizer(server_opt))
