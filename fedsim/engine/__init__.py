"""The vectorised round engine, independent of any particular task or algorithm.

    task       fedsim.engine.task       what a learning problem provides (per-client functions)
    algorithm  fedsim.engine.algorithm  the parts an algorithm is composed of
    round      fedsim.engine.round      one round, from those parts
    train      fedsim.engine.train      make_train: a whole run as one pure function
"""

from fedsim.choices import ALGORITHMS, LR_SCHEDULES, SCHEDULES
from fedsim.engine.aggregation import participant_weights, sample_participants, weighted_sum
from fedsim.engine.algorithm import Algorithm, map_clients
from fedsim.engine.federation import Federation
from fedsim.engine.round import HParams, make_train_round
from fedsim.engine.schedules import step_sizes
from fedsim.engine.state import ClientState, FedState, init_state
from fedsim.engine.task import Direction, Task
from fedsim.engine.train import (Metrics, Trainer, every_round, log_checkpoints, make_train,
                                 make_trainer, raise_if_nonfinite)

__all__ = [
    "ALGORITHMS", "Algorithm", "ClientState", "Direction", "FedState", "Federation", "HParams",
    "LR_SCHEDULES", "Metrics", "SCHEDULES", "Task", "Trainer", "every_round", "init_state",
    "log_checkpoints", "make_train", "make_train_round", "make_trainer", "map_clients",
    "participant_weights", "raise_if_nonfinite", "sample_participants", "step_sizes",
    "weighted_sum",
]
