"""PPO on token sequences, as TRL 0.10's PPOTrainer (Ziegler et al. 2019; Schulman et al. 2017)
runs it for the FedRLHF authors, for one client; everything here is a pure function of arrays,
so the engine vmaps it over clients and seeds.

One PPO iteration on a batch of B prompts:
1. sample a response of L tokens to each prompt from the current policy pi_old;
2. score it: the client's reward (fedsim.imdb.reward) at the last token, and at every token
   -kl_coef (log pi_old - log pi_ref), the KL penalty to the reference (the model the round
   started from: the authors create a new trainer each round with the current model as its
   reference); under FedPPO-KL, -beta (log pi_old - log ref_peers) as well;
3. advantages by GAE(gamma = 1, lambda) against the value head's values, whitened over the
   batch; returns = advantages + values (before whitening);
4. `epochs` passes over `minibatches` groups of prompts, each an Adam step on
   clipped surrogate + vf_coef x clipped value loss (TRL's losses);
5. the adaptive controller updates kl_coef from the batch's mean summed KL.

A round (`ppo_round`) is `iterations` such iterations over the round's prompts, with a fresh
Adam state and the initial KL coefficient (a new trainer each round, as the authors).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsim.imdb import model as M
from fedsim.imdb.reward import combine, fluency
from fedsim.imdb.sentiment import p_positive
from fedsim.rl import adapt_kl_scale, gae


class PPOSpec(NamedTuple):
    batch: int = 16
    minibatches: int = 1
    epochs: int = 4
    lr: float = 1e-5
    init_kl_coef: float = 0.2
    kl_target: float | None = 6.0     # None: a fixed coefficient
    kl_horizon: float = 10_000.0
    clip: float = 0.2
    clip_value: float = 0.2
    vf_coef: float = 0.1
    gae_lambda: float = 0.95
    whiten: bool = True


class Scoring(NamedTuple):
    """What scores a response, fixed during the run."""

    arch: M.Architecture
    prompt_length: int
    response_length: int
    classifier: Any          # fedsim.imdb.sentiment.Classifier
    frozen: Any              # the pre-trained model's parameters
    fluency_scorer: str      # "frozen" or "policy" (the authors')
    form: str                # "convex" or "additive"
    temperature: float = 1.0
    top_k: int = 0


def score(s: Scoring, ids, lam, policy_params=None, policy_log_probs=None):
    """(reward, sentiment, fluency, frozen log-probs (B, L)) of responses ids (B, P + L)."""
    frozen_lp = M.response_scores(s.arch, s.frozen, ids, s.prompt_length, s.temperature)[0]
    if s.fluency_scorer == "policy":
        if policy_log_probs is None:
            policy_log_probs = M.response_scores(s.arch, policy_params, ids, s.prompt_length,
                                                 s.temperature)[0]
        scorer_lp = policy_log_probs
    else:
        scorer_lp = frozen_lp
    sentiment = p_positive(s.classifier, ids)
    fl = fluency(scorer_lp, s.arch.vocab)
    return combine(sentiment, fl, lam, s.form), sentiment, fl, frozen_lp


def whiten(x):
    return (x - x.mean()) / (x.std() + 1e-8)


def ppo_iteration(s: Scoring, spec: PPOSpec, params, opt_state, kl_coef, reference, prompts, lam,
                  key, peer_log_ref: Callable | None = None, beta=0.0):
    """One iteration (module docstring) -> (params, opt_state, kl_coef, aux). peer_log_ref:
    ids (B, P + L) -> log ref_peers of the response tokens (B, L), FedPPO-KL's reference."""
    P, B = s.prompt_length, prompts.shape[0]
    k_gen, k_perm = jax.random.split(key)
    ids = M.generate(s.arch, params, prompts, k_gen, s.response_length, s.temperature, s.top_k)
    old_lp, old_values, _ = M.response_scores(s.arch, params, ids, P, s.temperature)
    ref_lp = M.response_scores(s.arch, reference, ids, P, s.temperature)[0]
    reward, sentiment, fl, _ = score(s, ids, lam, policy_log_probs=old_lp)
    kl = old_lp - ref_lp
    penalty = kl_coef * kl
    if peer_log_ref is not None:
        peer_kl = old_lp - peer_log_ref(ids)
        penalty = penalty + beta * peer_kl
    rewards = (-penalty).at[:, -1].add(reward)
    next_values = jnp.concatenate([old_values[:, 1:], jnp.zeros((B, 1))], axis=1)
    adv = gae(rewards.T, jnp.ones_like(rewards.T), old_values.T, next_values.T,
              spec.gae_lambda).T
    returns = adv + old_values
    adv = whiten(adv) if spec.whiten else adv
    optimizer = optax.adam(spec.lr)

    def loss(p, idx):
        lp, values, log_probs = M.response_scores(s.arch, p, ids[idx], P, s.temperature)
        ratio = jnp.exp(lp - old_lp[idx])
        a = adv[idx]
        pg = jnp.mean(jnp.maximum(-a * ratio, -a * jnp.clip(ratio, 1 - spec.clip, 1 + spec.clip)))
        v_old, r = old_values[idx], returns[idx]
        v_clipped = v_old + jnp.clip(values - v_old, -spec.clip_value, spec.clip_value)
        vf = 0.5 * jnp.mean(jnp.maximum((values - r) ** 2, (v_clipped - r) ** 2))
        entropy = -jnp.mean(jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1))
        log_ratio = lp - old_lp[idx]
        stats = {"policy_loss": pg, "value_loss": vf, "entropy": entropy,
                 "approx_kl": jnp.mean(jnp.exp(-log_ratio) - 1 + log_ratio),
                 "clip_fraction": jnp.mean((jnp.abs(ratio - 1) > spec.clip).astype(jnp.float32))}
        return pg + spec.vf_coef * vf, stats

    def epoch(carry, k):
        order = jax.random.permutation(k, B).reshape(spec.minibatches, B // spec.minibatches)

        def minibatch(carry, idx):
            p, o = carry
            grads, stats = jax.grad(loss, has_aux=True)(p, idx)
            updates, o = optimizer.update(grads, o, p)
            return (optax.apply_updates(p, updates), o), stats

        return jax.lax.scan(minibatch, carry, order)

    (params, opt_state), stats = jax.lax.scan(epoch, (params, opt_state),
                                              jax.random.split(k_perm, spec.epochs))
    mean_kl = kl.sum(axis=1).mean()
    aux = {"reward": reward.mean(), "sentiment": sentiment.mean(), "fluency": fl.mean(),
           "kl_to_round_start": mean_kl, "kl_coef": kl_coef,
           **jax.tree.map(lambda x: x[-1].mean(), stats)}   # the last epoch's, as TRL logs
    if peer_log_ref is not None:
        aux["kl_to_peers"] = peer_kl.sum(axis=1).mean()
    if spec.kl_target is not None:
        kl_coef = adapt_kl_scale(kl_coef, mean_kl, spec.kl_target, spec.kl_horizon, B)
    return params, opt_state, kl_coef, aux


def ppo_round(s: Scoring, spec: PPOSpec, params, prompts, lam, key, peer_log_ref=None,
              beta=0.0):
    """A round of local RLHF from `params` on prompts (I, B, P): I iterations, the round's
    start as the KL reference, a fresh Adam state and the initial KL coefficient. Returns
    (params, aux averaged over the iterations)."""
    reference = params
    opt_state = optax.adam(spec.lr).init(params)

    def body(carry, xs):
        p, o, c = carry
        batch, k = xs
        p, o, c, aux = ppo_iteration(s, spec, p, o, c, reference, batch, lam, k, peer_log_ref,
                                     beta)
        return (p, o, c), aux

    keys = jax.random.split(key, prompts.shape[0])
    kl_coef = jnp.asarray(spec.init_kl_coef, jax.tree.leaves(params)[0].dtype)
    (params, _, _), aux = jax.lax.scan(body, (params, opt_state, kl_coef), (prompts, keys))
    return params, jax.tree.map(jnp.mean, aux)


def distinct_2(responses, vocab_size: int):
    """Distinct bigrams / bigrams over a set of responses (N, L) (Li et al. 2016)."""
    bigrams = jnp.sort((responses[:, :-1] * vocab_size + responses[:, 1:]).ravel())
    return (1 + jnp.sum(bigrams[1:] != bigrams[:-1])) / bigrams.size

