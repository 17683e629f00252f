"""The IMDb reward of client k, from the sentiment classifier and a fluency score.

    sentiment = P(positive | query + response)   (fedsim.imdb.sentiment)
    fluency   = clip(1 + mean_t log p(response_t | ...) / log V, 0, 1)   (the authors')

The authors score the fluency's log-probabilities with the policy being trained, so the policy
is rewarded for its own confidence; fedsim scores them with the frozen pre-trained model by
default (`--fluency-scorer frozen`) and the authors' way with `--fluency-scorer policy`.
Two forms (fedsim.choices.REWARD_FORMS):
    convex    lambda_k sentiment + (1 - lambda_k) fluency, lambda_k in [0, 1] (the authors');
    additive  R0 + lambda_k H = fluency + lambda_k sentiment, lambda_k >= 0 (the paper's
              r_k = R0_k + lambda_k H_k, with fluency the task reward and sentiment the
              human feedback).
"""

from __future__ import annotations

import math

import jax.numpy as jnp


def fluency(token_log_probs, vocab_size: int):
    """(..., L) log-probabilities of a response's tokens -> the authors' fluency (...)."""
    return jnp.clip(1.0 + token_log_probs.mean(axis=-1) / math.log(vocab_size), 0.0, 1.0)


def combine(sentiment, fluency_, lam, form: str):
    if form == "convex":
        return lam * sentiment + (1.0 - lam) * fluency_
    return fluency_ + lam * sentiment
