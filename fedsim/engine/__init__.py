"""The vectorised round engine, independent of any particular task."""

from fedsim.engine.aggregation import participant_weights, sample_participants, weighted_sum
from fedsim.engine.federation import (ALGORITHMS, FedState, Federation, Task, init_state,
                                      log_checkpoints, make_checkpointed_run,
                                      make_local_step, make_local_update, make_round, make_run, make_train_round, raise_if_nonfinite)
from fedsim.choices import LR_SCHEDULES, SCHEDULES
from fedsim.engine.schedules import step_sizes

__all__ = [
    "ALGORITHMS", "FedState", "Federation", "LR_SCHEDULES", "SCHEDULES", "Task", "init_state",
    "log_checkpoints", "make_checkpointed_run", "make_local_step", "make_local_update",
    "make_round", "make_run", "make_train_round", "participant_weights", "raise_if_nonfinite",
    "sample_participants", "step_sizes", "weighted_sum",
]
