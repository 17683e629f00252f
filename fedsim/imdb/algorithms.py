"""The IMDb comparison's algorithms beyond the engine's own (fedsim.algorithms): what the
FedRLHF authors' released IMDb code does.

Their client uploads only the parameters whose names appear in TRL's state_dict; TRL drops the
`pretrained_model.` prefix, so only the value head's two tensors travel. The server averages
those, and the download decodes Flower's np.save bytes with np.frombuffer: every reshape
fails and the error is caught and ignored. So each client continues from its own model (the
round's start is its own last model, its KL reference), and the server's model is the
pre-trained policy with the clients' averaged value head. `as_released` runs exactly that
path; its clients' trajectories are those of isolated PPO ("local"), which a test checks.
"""

from __future__ import annotations

from fedsim.engine.aggregation import weighted_sum
from fedsim.engine.algorithm import Algorithm, ServerUpdate, from_own
from fedsim.imdb.model import VALUE_HEAD


def _value_head_average(params, aggregate, client_params, weights, state):
    """The server's model: its own, with the value head replaced by the clients' average (the
    only tensors uploaded)."""
    average = weighted_sum(client_params, weights)
    merged = {**params["params"], VALUE_HEAD: average["params"][VALUE_HEAD]}
    return {**params, "params": merged}, state


def as_released() -> Algorithm:
    return Algorithm("as_released", client_start=from_own,
                     server_update=ServerUpdate(lambda params: (), _value_head_average),
                     sends_deltas=False)
