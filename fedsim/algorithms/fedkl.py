"""Federated PPO's generalized KL penalty (the poster of DESIGN.md 2.2; the authors' later
peer-referenced code): every client keeps its own policy, and at each communication the
server mixes the policies the clients held at its end into a cooperative reference per
client,

    geometric:  pi_ref,k  proportional to  prod_j pi_j^{W_kj}   (the authors' LLM code)
    sum_of_kls: the same product unnormalised: KL(pi || pi_ref,k) = sum_j W_kj KL(pi || pi_j)
                (their RL code, which evaluates it at sampled actions)
    arithmetic: pi_ref,k = sum_j W_kj pi_j                      (one of their READMEs)

with W row-stochastic (fedsim.algorithms.peers), fixed, or tilted each communication toward
the peers whose reported returns are highest (`tilt_by_returns`). Client k then ascends its own objective
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

from fedsim.choices import MIXINGS, PEER_WEIGHTINGS
from fedsim.engine.algorithm import Algorithm, consensus, participant_rows
from fedsim.engine.task import Reference
from fedsim.errors import check_choice, require


class FedKLHParams(NamedTuple):
    kl_coef: jax.Array        # beta >= 0
    peer_weights: jax.Array   # W (K, K), row-stochastic
    temperature: jax.Array = 1.0   # with weighting "returns": the softmax's temperature > 0


def tilt_by_returns(W, returns, temperature):
    """W with each row's peer part re-weighted by softmax(returns / temperature) over the
    peers it hears, its self-weight kept: W'_kj proportional to W_kj exp(J_j / T) for j != k,
    scaled to sum to 1 - W_kk (the authors' "softmax of the peers' recent rewards"; T -> inf
    gives W back). returns: (K,) each client's reported return."""
    self_weight = jnp.diag(W)
    peers = W * (1.0 - jnp.eye(W.shape[0], dtype=W.dtype))
    tilted = peers * jnp.exp((returns - returns.max()) / temperature)[None, :]
    mass = tilted.sum(axis=1, keepdims=True)
    tilted = tilted / jnp.where(mass > 0, mass, 1.0) * (1.0 - self_weight)[:, None]
    return jnp.diag(self_weight) + tilted


def _rows_for(W, num_clients: int):
    """W for `num_clients` >= K rows and columns: the engine pads the client axis for a device
    mesh with zero-weight copies, which hear only themselves and are heard by no one."""
    extra = num_clients - W.shape[0]
    if extra == 0:
        return W
    W = jnp.pad(W, ((0, extra), (0, extra)))
    return W.at[jnp.arange(W.shape[0] - extra, num_clients),
                jnp.arange(W.shape[0] - extra, num_clients)].set(1.0)


def fedkl(task, mixing: str = "geometric", weighting: str = "fixed") -> Algorithm:
    """The KL-to-peers algorithm on `task` (which must provide Task.kl; with weighting
    "returns", also Task.report with a "return")."""
    check_choice("mixing", mixing, MIXINGS)
    check_choice("peer_weighting", weighting, PEER_WEIGHTINGS)
    require(task.kl is not None, "algorithm", "fedkl",
            "needs a task with a KL penalty to a reference policy (Task.kl)")
    by_returns = weighting == "returns"

    def weights(hparams: FedKLHParams, K: int, reports):
        W = _rows_for(hparams.peer_weights, K)
        return tilt_by_returns(W, reports["return"], hparams.temperature) if by_returns else W

    def peer_reference(global_params, client_params, participants, hparams: FedKLHParams,
                       reports=None):
        """Each participant continues from its own policy; its message is its reference,
        mixed from every client's policy at the end of the previous communication."""
        K = jax.tree.leaves(client_params)[0].shape[0]
        W = weights(hparams, K, reports)[participants]
        coef = jnp.broadcast_to(hparams.kl_coef, participants.shape)   # one per participant
        return (participant_rows(client_params, participants),
                Reference(task.kl.mix(client_params, W, mixing), coef))

    def kl_to_reference(_task, state, data, task_hparams, hparams: FedKLHParams):
        """Each client's KL to the reference it would be sent next (mixed from the policies
        the clients hold now)."""
        params = state.clients.params
        K = jax.tree.leaves(params)[0].shape[0]
        reports = (jax.vmap(task.report)(params, state.clients.private, data, task_hparams)
                   if by_returns else None)
        refs = task.kl.mix(params, weights(hparams, K, reports), mixing)
        return {"kl_to_reference": jax.vmap(task.kl.divergence)(params, refs, data, task_hparams)}

    return Algorithm("fedkl", client_start=peer_reference, server_update=consensus(),
                     sends_deltas=False, client_metrics=kl_to_reference,
                     reads_reports=by_returns)
