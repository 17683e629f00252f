"""The tabular softmax policy-gradient task: FedRLHF's local RLHF update in exact form.

Client k ascends its shaped (optionally regularised) return J_k(theta) with either the exact
policy gradient or a sampled-trajectory estimate of it. Parameters are the logits theta (S, A).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedsim.engine import Direction, Task
from fedsim.tabular import oracles
from fedsim.tabular.config import LearnerSpec
from fedsim.tabular.mdp import ClientMDP, TabularInstance, shaped_reward
from fedsim.tabular.sampling import sampled_gradient



def regularizer(learner: LearnerSpec, instance: TabularInstance) -> oracles.Regularizer:
    if learner.reg == "none":
        return oracles.Regularizer()
    log_ref = 0.0 if learner.reg == "entropy" else jax.nn.log_softmax(jnp.asarray(instance.theta0))
    return oracles.Regularizer(jnp.float32(learner.tau), log_ref)


class TabularHParams(NamedTuple):
    """The task's per-client hyperparameters (leading axis K in the engine)."""

    lam: jax.Array   # lambda_k, the weight of client k's human feedback


def client_hparams(instance: TabularInstance) -> TabularHParams:
    return TabularHParams(jnp.asarray(instance.lam))


def make_task(instance: TabularInstance, learner: LearnerSpec) -> Task:
    """The engine's view of a tabular instance: client data ClientMDP, hyperparameters
    TabularHParams; the parameters are the logits, the step plain ascent."""
    learner.validate()
    gamma, form = instance.gamma, instance.reward_form
    rho = jnp.asarray(instance.rho)
    reg = regularizer(learner, instance)
    horizon = learner.horizon_for(gamma)

    def reward(data: ClientMDP, hp: TabularHParams):
        return shaped_reward(data.R0, data.H, hp.lam, form)

    def direction(theta, personal, private, data: ClientMDP, hp: TabularHParams, key):
        if learner.gradient == "exact":
            grad = oracles.client_gradient(theta, data.P, reward(data, hp), rho, gamma, reg)
        else:
            grad = sampled_gradient(theta, data.P, reward(data, hp), rho, gamma, reg, key,
                                    batch=learner.batch, horizon=horizon,
                                    estimator=learner.estimator)
        return Direction(grad)

    def evaluate(theta, clients, data: ClientMDP, hp: TabularHParams, weights):
        r = reward(data, hp)
        per_client = oracles.returns(theta, data.P, r, rho, gamma, reg)
        personal = jax.vmap(oracles.client_return, (0, 0, 0, None, None, None))(
            clients.params, data.P, r, rho, gamma, reg)
        intrinsic = oracles.returns(theta, data.P, data.R0, rho, gamma)
        return {
            "J": weights @ per_client,          # the global objective of the global policy
            "J0": weights @ intrinsic,          # its intrinsic (feedback-free) return
            "J_personal": weights @ personal,   # each client's own policy on its own objective
        }, {
            "J_client": per_client,             # the global policy on each client's objective
            "J_personal_client": personal,
        }

    return Task(init_private=lambda data, key: (), direction=direction, evaluate=evaluate)
