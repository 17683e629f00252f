"""The policy: a small causal transformer in flax (GPT-2's shape, pre-LayerNorm blocks, tied
input and output embeddings, learnt positions) with a value head on the last hidden state, as
TRL's AutoModelForCausalLMWithValueHead; generation by `lax.scan` with static shapes.

The parameters are one pytree, {"params": {...}}: FedAvg averages all of it, policy and value
head alike, and `VALUE_HEAD` names the value head's subtree. <pad>, <unk> and <bos> are never
predicted: their logits are masked, in training, scoring and sampling alike, so every
log-probability here is of the same distribution. (<unk> masked because the sentiment
classifier ignores it: a policy allowed to say it learns to answer with runs of <unk>, which
the classifier cannot see and the frozen model finds likely.)
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedsim.imdb.tokenizer import BOS, PAD, UNK

VALUE_HEAD = "value_head"
_MASKED = -1e9
NEVER_EMITTED = (PAD, UNK, BOS)


class Architecture(NamedTuple):
    vocab: int
    context: int   # the longest sequence (prompt + response)
    width: int = 64
    layers: int = 2
    heads: int = 4


class _Block(nn.Module):
    width: int
    heads: int

    @nn.compact
    def __call__(self, x, mask):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=self.width,
                                                deterministic=True)(h, h, mask=mask)
        h = nn.LayerNorm()(x)
        return x + nn.Dense(self.width)(nn.gelu(nn.Dense(4 * self.width)(h)))


class CausalLM(nn.Module):
    arch: Architecture

    @nn.compact
    def __call__(self, ids, at=None):
        """ids (..., L) -> (next-token logits (..., L, V), values (..., L)); with `at` (a
        position, may be traced), the logits and value there only ((..., V), (...))."""
        a = self.arch
        embed = nn.Embed(a.vocab, a.width, embedding_init=nn.initializers.normal(0.02))
        position = self.param("position", nn.initializers.normal(0.02), (a.context, a.width))
        x = embed(ids) + position[: ids.shape[-1]]
        mask = nn.make_causal_mask(ids)
        for _ in range(a.layers):
            x = _Block(a.width, a.heads)(x, mask)
        x = nn.LayerNorm()(x)
        if at is not None:   # generation reads one position: skip the others' V-wide head
            x = jax.lax.dynamic_index_in_dim(x, at, axis=-2, keepdims=False)
        logits = embed.attend(x).at[..., NEVER_EMITTED].set(_MASKED)
        values = nn.Dense(1, name=VALUE_HEAD, kernel_init=nn.initializers.zeros)(x)[..., 0]
        return logits, values


def init_params(arch: Architecture, key):
    return CausalLM(arch).init(key, jnp.zeros((1, arch.context), jnp.int32))


def num_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


def apply(arch: Architecture, params, ids, at=None):
    return CausalLM(arch).apply(params, ids, at)


def response_scores(arch: Architecture, params, ids, prompt_len: int, temperature: float = 1.0):
    """Per response token of ids (B, P + L): (log-probabilities of the tokens taken (B, L),
    values of the states they were taken in (B, L), full log-probabilities (B, L, V)), the
    logits divided by the sampling temperature, as TRL scores them."""
    logits, values = apply(arch, params, ids)
    logits = logits[:, prompt_len - 1:-1] / temperature
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    taken = jnp.take_along_axis(log_probs, ids[:, prompt_len:, None], axis=-1)[..., 0]
    return taken, values[:, prompt_len - 1:-1], log_probs


def generate(arch: Architecture, params, prompts, key, length: int, temperature: float = 1.0,
             top_k: int = 0):
    """Sample `length` tokens after each prompt (B, P) -> ids (B, P + length): one `lax.scan`
    over positions, each step a full causal forward of the fixed-size buffer (no cache; the
    sequences are 40 tokens). top_k = 0 samples from the whole vocabulary, as the authors."""
    B, P = prompts.shape
    buffer = jnp.concatenate([prompts, jnp.full((B, length), PAD, prompts.dtype)], axis=1)

    def step(buffer, xs):
        t, k = xs
        logits = apply(arch, params, buffer, P + t - 1)[0] / temperature
        if top_k:
            kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
            logits = jnp.where(logits < kth, _MASKED, logits)
        token = jax.random.categorical(k, logits).astype(buffer.dtype)
        return jax.lax.dynamic_update_index_in_dim(buffer, token, P + t, axis=1), None

    buffer, _ = jax.lax.scan(step, buffer, (jnp.arange(length), jax.random.split(key, length)))
    return buffer
