"""FedRLHF's IMDb experiment as an engine task (fedsim.engine.task): client k fine-tunes the
shared language model by PPO on its own prompts with its own reward weight lambda_k.

One engine local step is one round of local RLHF (fedsim.imdb.ppo.ppo_round): the authors
create a new PPO trainer every round, so the round's start is the KL reference and Adam's
state and the KL controller start afresh; the direction the engine receives is the round's
displacement (run with the engine's step size 1). A client's prompts are cut into `chunks`
parts (the authors' fifths), and round t uses part t mod chunks; the private state counts
the rounds a client has trained.

Evaluation: every client's served model (the global one under FedAvg, its own otherwise)
answers the same held-out evaluation prompts with a key fixed per client (the same draws
every round, so rounds differ only by the model), scored by the client's reward; the
responses are returned for samples.jsonl.

Task.kl (FedPPO-KL, fedsim.algorithms.fedkl): a client's reference is every client's policy
with its row of W, mixed per token (geometric: log_softmax(sum_j W_kj log pi_j); sum_of_kls:
sum_j W_kj log pi_j; arithmetic: log sum_j W_kj pi_j), and -beta (log pi - log ref) joins the
per-token reward beside the KL to the round's start.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fedsim.engine.task import Direction, KLPenalty, Task
from fedsim.imdb import model as M
from fedsim.imdb.ppo import PPOSpec, Scoring, distinct_2, ppo_round, score
from fedsim.imdb.reward import fluency

EVAL_SEED = 20_250_000


class ClientData(NamedTuple):
    prompts: jax.Array        # (chunks, iterations, batch, P) int32: the client's training prompts
    eval_prompts: jax.Array   # (N_eval, P) int32: held-out prompts, the same for every client
    index: jax.Array          # () int32: the client's index (its evaluation key)


class IMDbHParams(NamedTuple):
    lam: jax.Array            # (K,) lambda_k


class PeerReference(NamedTuple):
    weights: jax.Array        # (K,) the client's row of W
    policies: Any             # every client's parameters (K, ...)


def _minus(a, b):
    return jax.tree.map(jnp.subtract, a, b)


def peer_log_ref(scoring: Scoring, reference: PeerReference, mixing: str):
    """ids (B, P + L) -> log ref(response tokens) (B, L) under the peers' mixture."""
    def log_ref(ids):
        taken = ids[:, scoring.prompt_length:]
        full = jax.vmap(lambda p: M.response_scores(scoring.arch, p, ids, scoring.prompt_length,
                                                    scoring.temperature)[2])(reference.policies)
        w = reference.weights[:, None, None, None]
        if mixing == "geometric":
            mixed = jax.nn.log_softmax(jnp.sum(w * full, axis=0), axis=-1)
        elif mixing == "sum_of_kls":
            mixed = jnp.sum(w * full, axis=0)
        else:   # arithmetic
            mixed = jax.nn.logsumexp(full + jnp.log(jnp.maximum(w, 1e-30)), axis=0)
        return jnp.take_along_axis(mixed, taken[..., None], axis=-1)[..., 0]

    return log_ref


def make_task(scoring: Scoring, spec: PPOSpec, serve: str = "global",
              mixing: str = "geometric", eval_lams=None) -> Task:
    """serve: "global" evaluates the global model for every client (FedAvg, centralized),
    "own" each client's own (isolated, as released, FedPPO-KL). eval_lams (K,): evaluate the
    global model for K clients with these lambdas instead of the training clients (the
    centralized learner is one client trained at lambda = 0.5, scored for every client)."""

    def init_private(data, key):
        return jnp.zeros((), jnp.int32)

    def local_round(params, rounds_done, data: ClientData, hp, key, log_ref=None, beta=0.0):
        prompts = data.prompts[rounds_done % data.prompts.shape[0]]
        new, aux = ppo_round(scoring, spec, params, prompts, hp.lam, key, log_ref, beta)
        return Direction(_minus(new, params), private=rounds_done + 1, aux=aux)

    def direction(params, personal, rounds_done, data, hp, key):
        return local_round(params, rounds_done, data, hp, key)

    def kl_direction(params, personal, rounds_done, data, hp, key, reference, coef):
        return local_round(params, rounds_done, data, hp, key,
                           peer_log_ref(scoring, reference, mixing), coef)

    def mix(client_params, W, mixing_):
        m = W.shape[0]
        return PeerReference(W, jax.tree.map(lambda x: jnp.broadcast_to(x, (m,) + x.shape),
                                             client_params))

    def sample_eval(params, prompts, index):
        key = jax.random.fold_in(jax.random.key(EVAL_SEED), index)
        return M.generate(scoring.arch, params, prompts, key, scoring.response_length,
                          scoring.temperature, scoring.top_k)

    def divergence(params, reference, data, hp):
        ids = sample_eval(params, data.eval_prompts, data.index)
        own = M.response_scores(scoring.arch, params, ids, scoring.prompt_length,
                                scoring.temperature)[0]
        return jnp.mean(jnp.sum(own - peer_log_ref(scoring, reference, mixing)(ids), axis=1))

    def evaluate_one(params, prompts, index, lam):
        ids = sample_eval(params, prompts, index)
        own = M.response_scores(scoring.arch, params, ids, scoring.prompt_length,
                                scoring.temperature)[0]
        reward, sentiment, fl, frozen = score(scoring, ids, lam, policy_log_probs=own)
        responses = ids[:, scoring.prompt_length:]
        return {"reward": reward.mean(), "sentiment": sentiment.mean(), "fluency": fl.mean(),
                "fluency_frozen": fluency(frozen, scoring.arch.vocab).mean(),
                "fluency_self": fluency(own, scoring.arch.vocab).mean(),
                "kl_to_pretrained": jnp.mean(jnp.sum(own - frozen, axis=1)),
                "perplexity": jnp.exp(-frozen.mean()),
                "distinct_2": distinct_2(responses, scoring.arch.vocab),
                "responses": responses, "response_reward": reward,
                "response_sentiment": sentiment, "response_fluency": fl}

    def evaluate(global_params, clients, data: ClientData, hp: IMDbHParams, weights):
        if eval_lams is None:
            lams, prompts, index = hp.lam, data.eval_prompts, data.index
        else:
            lams = jnp.asarray(eval_lams, jnp.float32)
            index = jnp.arange(lams.shape[0])
            prompts = jnp.broadcast_to(data.eval_prompts[0], index.shape + data.eval_prompts.shape[1:])
        K = lams.shape[0]
        served = (clients.params if serve == "own" and eval_lams is None else
                  jax.tree.map(lambda x: jnp.broadcast_to(x, (K,) + x.shape), global_params))
        per_client = jax.vmap(evaluate_one)(served, prompts, index, lams)
        # the federation's figures are the experiment's to weigh (clients and evaluation
        # clients may differ); the engine gets the unweighted means
        federation = {name: v.mean() for name, v in per_client.items() if v.ndim == 1}
        return federation, per_client

    return Task(init_private, direction, evaluate,
                kl=KLPenalty(mix, kl_direction, divergence))
