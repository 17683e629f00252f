"""Federated PPO's generalized KL penalty (the poster of DESIGN.md 2.2; the authors' later
peer-referenced code): every client keeps its own policy, and at each communication the
server mixes the policies the clients held at its end into a cooperative reference per
client,

    geometric:  pi_ref,k  proportional to  prod_j pi_j^{W_kj}   (the authors' LLM code)
    sum_of_kls: the same product unnormalised: KL(pi || pi_ref,k) = sum_j W_kj KL(pi || pi_j)
                (their RL code, which evaluates it at sampled actions)
    arithmetic: pi_ref,k = sum_j W_kj pi_j                      (one of their READMEs)

with W row-stochastic (fedsim.algorithms.peers). Client k then ascends its own objective
minus beta KL(pi || pi_ref,k) for E local steps (the task's KLPenalty, fedsim.engine.task):
the KL acts as an attractor toward the peers rather than as a trust region. No parameters
are averaged; the global parameters are the weighted average of the clients', for
monitoring only. beta = 0 is local training; W = I (alpha = 1) re-anchors each client to
its own last policy, the authors' "isolated" baseline. The two geometric forms differ by the
per-state normaliser log Z_k(s) <= 0, which enters the reward as a bonus -beta log Z_k(s) in
the states where the peers disagree (theory/statements.md, R4).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedsim.choices import MIXINGS
from fedsim.engine.algorithm import Algorithm, consensus, participant_rows
from fedsim.engine.task import Reference
from fedsim.errors import check_choice, require


class FedKLHParams(NamedTuple):
    kl_coef: jax.Array        # beta >= 0
    peer_weights: jax.Array   # W (K, K), row-stochastic


def _rows_for(W, num_clients: int):
    """W for `num_clients` >= K rows and columns: the engine pads the client axis for a device
    mesh with zero-weight copies, which hear only themselves and are heard by no one."""
    extra = num_clients - W.shape[0]
    if extra == 0:
        return W
    W = jnp.pad(W, ((0, extra), (0, extra)))
    return W.at[jnp.arange(W.shape[0] - extra, num_clients),
                jnp.arange(W.shape[0] - extra, num_clients)].set(1.0)


def fedkl(task, mixing: str = "geometric") -> Algorithm:
    """The KL-to-peers algorithm on `task` (which must provide Task.kl)."""
    check_choice("mixing", mixing, MIXINGS)
    require(task.kl is not None, "algorithm", "fedkl",
            "needs a task with a KL penalty to a reference policy (Task.kl)")

    def peer_reference(global_params, client_params, participants, hparams: FedKLHParams):
        """Each participant continues from its own policy; its message is its reference,
        mixed from every client's policy at the end of the previous communication."""
        K = jax.tree.leaves(client_params)[0].shape[0]
        W = _rows_for(hparams.peer_weights, K)[participants]
        coef = jnp.broadcast_to(hparams.kl_coef, participants.shape)   # one per participant
        return (participant_rows(client_params, participants),
                Reference(task.kl.mix(client_params, W, mixing), coef))

    def kl_to_reference(_task, state, data, task_hparams, hparams: FedKLHParams):
        """Each client's KL to the reference it would be sent next (mixed from the policies
        the clients hold now)."""
        params = state.clients.params
        K = jax.tree.leaves(params)[0].shape[0]
        refs = task.kl.mix(params, _rows_for(hparams.peer_weights, K), mixing)
        return {"kl_to_reference": jax.vmap(task.kl.divergence)(params, refs, data, task_hparams)}

    return Algorithm("fedkl", client_start=peer_reference, server_update=consensus(),
                     sends_deltas=False, client_metrics=kl_to_reference)
