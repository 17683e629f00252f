"""The tabular softmax policy-gradient task: FedRLHF's local RLHF update in exact form.

Client k ascends its shaped (optionally regularised) return J_k(theta) with the exact policy
gradient, a sampled-trajectory estimate of it, or a PPO iteration (fedsim.tabular.ppo).
Parameters are the logits theta (S, A).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedsim.engine import Direction, Task
from fedsim.engine.task import KLPenalty
from fedsim.tabular import oracles
from fedsim.tabular.config import LearnerSpec
from fedsim.tabular.mdp import ClientMDP, TabularInstance, shaped_reward
from fedsim.rl import adapt_kl_scale
from fedsim.tabular.ppo import PPOState, ppo_iteration
from fedsim.tabular.sampling import sampled_gradient



def regularizer(learner: LearnerSpec, instance: TabularInstance) -> oracles.Regularizer:
    if learner.reg == "none":
        return oracles.Regularizer()
    log_ref = 0.0 if learner.reg == "entropy" else jax.nn.log_softmax(jnp.asarray(instance.theta0))
    return oracles.Regularizer(jnp.float32(learner.tau), log_ref)


def with_reference(reg: oracles.Regularizer, log_ref, coef) -> oracles.Regularizer:
    """The learner's regulariser plus coef * KL(pi || ref), as one regulariser:
    -tau (log pi - base) - coef (log pi - ref) = -(tau + coef)(log pi - mix), with
    mix = (tau base + coef ref) / (tau + coef) (0 when both weights are 0)."""
    total = reg.tau + coef
    mixed = (reg.tau * reg.log_ref + coef * log_ref) / jnp.where(total > 0, total, 1.0)
    return oracles.Regularizer(total, mixed)


def mix_policies(thetas, W, mixing: str):
    """log pi_ref (m, S, A) from every client's logits (K, S, A) and W's rows (m, K): the
    geometric mixture log_softmax(sum_j W_kj theta_j) (exactly the normalised
    prod_j pi_j^W_kj); its unnormalised form sum_j W_kj log pi_j, whose penalty is
    sum_j W_kj KL(pi || pi_j) (sum_of_kls); or the arithmetic one log sum_j W_kj pi_j."""
    if mixing == "geometric":
        return jax.nn.log_softmax(jnp.einsum("mk,ksa->msa", W, thetas), axis=-1)
    if mixing == "sum_of_kls":
        return jnp.einsum("mk,ksa->msa", W, jax.nn.log_softmax(thetas, axis=-1))
    mixture = jnp.einsum("mk,ksa->msa", W, jax.nn.softmax(thetas, axis=-1))
    return jnp.log(jnp.maximum(mixture, jnp.finfo(mixture.dtype).tiny))


class TabularHParams(NamedTuple):
    """The task's per-client hyperparameters (leading axis K in the engine)."""

    lam: jax.Array   # lambda_k, the weight of client k's human feedback


def client_hparams(instance: TabularInstance) -> TabularHParams:
    return TabularHParams(jnp.asarray(instance.lam))


def make_task(instance: TabularInstance, learner: LearnerSpec) -> Task:
    """The engine's view of a tabular instance: client data ClientMDP, hyperparameters
    TabularHParams; the parameters are the logits, the step plain ascent. Its KL penalty
    (fedkl) joins the learner's regulariser: the reward becomes r - beta (log pi - log ref)."""
    learner.validate()
    gamma, form = instance.gamma, instance.reward_form
    rho = jnp.asarray(instance.rho)
    reg = regularizer(learner, instance)
    horizon = learner.horizon_for(gamma)

    def reward(data: ClientMDP, hp: TabularHParams):
        return shaped_reward(data.R0, data.H, hp.lam, form)

    def pg_step(theta, data: ClientMDP, hp: TabularHParams, key, reg) -> Direction:
        if learner.gradient == "exact":
            return Direction(oracles.client_gradient(theta, data.P, reward(data, hp), rho,
                                                     gamma, reg))
        return Direction(sampled_gradient(theta, data.P, reward(data, hp), rho, gamma, reg, key,
                                          batch=learner.batch, horizon=horizon,
                                          estimator=learner.estimator))

    def ppo_step(theta, private: PPOState, data, hp, key, log_ref=None, coef=0.0):
        """The KL penalty (fedkl's to the peers' reference, else the learner's own --reg kl)
        takes the adaptive controller's scale; an entropy bonus does not."""
        scale = private.kl_scale
        own = reg._replace(tau=reg.tau * scale) if learner.reg == "kl" else reg
        total = own if log_ref is None else with_reference(own, log_ref, coef * scale)
        measured = log_ref if log_ref is not None else (reg.log_ref if learner.reg == "kl"
                                                        else None)
        d = ppo_iteration(theta, private.value, data.P, reward(data, hp), rho, gamma, total, key,
                          spec=learner, horizon=horizon, kl_log_ref=measured)
        if learner.kl_target is None or measured is None:
            return d._replace(private=PPOState(d.private, scale))
        return d._replace(private=PPOState(d.private, adapt_kl_scale(
            scale, d.aux["reference_kl"], learner.kl_target, learner.kl_horizon, learner.batch)))

    def direction(theta, personal, private, data: ClientMDP, hp: TabularHParams, key):
        if learner.learner == "ppo":
            return ppo_step(theta, private, data, hp, key)
        return pg_step(theta, data, hp, key, reg)

    def kl_direction(theta, personal, private, data, hp, key, log_ref, coef):
        if learner.learner == "ppo":
            return ppo_step(theta, private, data, hp, key, log_ref, coef)
        return pg_step(theta, data, hp, key, with_reference(reg, log_ref, coef))

    def init_private(data: ClientMDP, key):
        """PPO's tabular value function V (S,), from 0, and the KL controller's scale, from 1;
        the policy gradient keeps none."""
        if learner.learner != "ppo":
            return ()
        return PPOState(jnp.zeros(data.P.shape[0], data.P.dtype), jnp.ones((), data.P.dtype))

    def divergence(theta, log_ref, data: ClientMDP, hp):
        return oracles.policy_kl(theta, log_ref, data.P, rho, gamma)

    def evaluate(theta, clients, data: ClientMDP, hp: TabularHParams, weights):
        """J_k of the global and of each client's own policy, J0_k of the global one, from one
        batched solve of K + 1 systems when the clients share their dynamics, else 2 K
        (fedsim.tabular.oracles.visits_of_global_and_own)."""
        rewards = reward(data, hp)
        # (S, A), (K, S), (K, S, A), (K, S)
        pi, d, own_pi, own_d = oracles.visits_of_global_and_own(theta, clients.params, data.P,
                                                                 rho, gamma)
        own_r = jax.vmap(oracles.regularised_reward, (0, 0, None))(clients.params, rewards, reg)
        per_client = jnp.einsum("ks,ks->k", d, jnp.sum(
            pi * oracles.regularised_reward(theta, rewards, reg), axis=-1))
        personal = jnp.einsum("ks,ks->k", own_d, jnp.sum(own_pi * own_r, axis=-1))
        intrinsic = jnp.einsum("ks,ks->k", d, jnp.sum(pi * data.R0, axis=-1))
        return {
            "J": weights @ per_client,          # the global objective of the global policy
            "J0": weights @ intrinsic,          # its intrinsic (feedback-free) return
            "J_personal": weights @ personal,   # each client's own policy on its own objective
        }, {
            "J_client": per_client,             # the global policy on each client's objective
            "J_personal_client": personal,
        }

    def report(theta, private, data: ClientMDP, hp: TabularHParams):
        """What a client tells the server besides its logits: the (regularised) return of its
        own policy on its own objective, exact (fedkl weighs peers by it)."""
        return {"return": oracles.client_return(theta, data.P, reward(data, hp), rho, gamma, reg)}

    return Task(init_private=init_private, direction=direction, evaluate=evaluate, report=report,
                kl=KLPenalty(mix_policies, kl_direction, divergence))
