"""The tabular softmax policy-gradient task: FedRLHF's local RLHF update in exact form.

Client k ascends its shaped (optionally regularised) return J_k(theta) with either the exact
policy gradient or a sampled-trajectory estimate of it. Parameters are the logits theta (S, A).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from fedsim.choices import ESTIMATORS, GRADIENTS, REGULARIZERS
from fedsim.engine import Task
from fedsim.errors import check_choice, check_int, check_real, require
from fedsim.tabular import oracles
from fedsim.tabular.mdp import TabularInstance, shaped_reward
from fedsim.tabular.sampling import default_horizon, sampled_gradient



@dataclass(frozen=True)
class LearnerSpec:
    """How a client computes its local direction.

    gradient: "exact" (two linear solves) or "sampled" (`batch` trajectories, geometric
        horizon capped at `horizon`; None picks H with gamma^H <= 1e-7).
    reg: "entropy" adds tau * entropy to the reward, "kl" subtracts tau * KL(pi || pi_ref)
        with pi_ref the initial policy softmax(theta0).
    """

    gradient: str = "exact"
    batch: int = 16
    horizon: int | None = None
    estimator: str = "gpomdp"
    reg: str = "none"
    tau: float = 0.0

    def validate(self) -> "LearnerSpec":
        check_choice("gradient", self.gradient, GRADIENTS)
        check_int("batch (B)", self.batch, 1)
        if self.horizon is not None:
            check_int("horizon (H)", self.horizon, 1)
        check_choice("estimator", self.estimator, ESTIMATORS)
        check_choice("reg", self.reg, REGULARIZERS)
        check_real("tau", self.tau, 0.0)
        require(self.reg == "none" or self.tau > 0, "tau", self.tau,
                f"must be > 0 with reg = {self.reg}")
        return self

    def horizon_for(self, gamma: float) -> int:
        return self.horizon if self.horizon is not None else default_horizon(gamma)


def regularizer(learner: LearnerSpec, instance: TabularInstance) -> oracles.Regularizer:
    if learner.reg == "none":
        return oracles.Regularizer()
    log_ref = 0.0 if learner.reg == "entropy" else jax.nn.log_softmax(jnp.asarray(instance.theta0))
    return oracles.Regularizer(jnp.float32(learner.tau), log_ref)


def make_task(instance: TabularInstance, learner: LearnerSpec) -> Task:
    """The engine's view of a tabular instance. Client data: dict(P, R0, H, lam) per client."""
    learner.validate()
    gamma, form = instance.gamma, instance.reward_form
    rho = jnp.asarray(instance.rho)
    reg = regularizer(learner, instance)
    horizon = learner.horizon_for(gamma)

    def reward(data):
        return shaped_reward(data["R0"], data["H"], data["lam"], form)

    def direction(theta, private, data, key):
        if learner.gradient == "exact":
            grad = oracles.client_gradient(theta, data["P"], reward(data), rho, gamma, reg)
        else:
            grad = sampled_gradient(theta, data["P"], reward(data), rho, gamma, reg, key,
                                    batch=learner.batch, horizon=horizon,
                                    estimator=learner.estimator)
        return grad, private

    def evaluate(theta, client_thetas, private, data, weights):
        r = reward(data)
        per_client = oracles.returns(theta, data["P"], r, rho, gamma, reg)
        personal = jax.vmap(oracles.client_return, (0, 0, 0, None, None, None))(
            client_thetas, data["P"], r, rho, gamma, reg)
        intrinsic = oracles.returns(theta, data["P"], data["R0"], rho, gamma)
        return {
            "J": weights @ per_client,          # the global objective of the global policy
            "J0": weights @ intrinsic,          # its intrinsic (feedback-free) return
            "J_personal": weights @ personal,   # each client's own policy on its own objective
            "J_client": per_client,             # (K,) global policy on each client's objective
            "J_personal_client": personal,      # (K,)
        }

    return Task(init_private=lambda data, key: {}, direction=direction, evaluate=evaluate)
