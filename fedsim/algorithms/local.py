"""Local training: every client keeps its own parameters and never federates (the isolated
baseline). The global parameters are the weighted average of the clients', for monitoring
only: nothing is sent back."""

from fedsim.engine.algorithm import Algorithm, consensus, from_own


def local() -> Algorithm:
    return Algorithm("local", client_start=from_own, server_update=consensus(),
                     sends_deltas=False)
