"""Pre-training the policy on the reviews (next-token loss), cached on disk.

The training texts are cut into non-overlapping windows of `context` tokens, each review from
its start (so the model sees review openings, where the prompts come from); Adam with a
cosine-decayed step size, minibatches drawn by a seeded key, one `lax.scan`. The held-out
reviews' windows give the perplexity reported.

The cache: one file per (vocabulary, training token ids, architecture, pre-training settings,
code of this module and the model), named by the sha256 of all of them, holding the
parameters, their sha256 and the report. A file that cannot be read, was written for another
key, or whose parameters do not match their checksum is reported and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import zipfile
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedsim.checkpoint import load_state, save_state
from fedsim.errors import DataError, check_int, check_real
from fedsim.imdb import model as M
from fedsim.imdb.tokenizer import PAD, UNK, Tokenizer
from fedsim.provenance import code_fingerprint

CODE = ("fedsim/imdb/model.py", "fedsim/imdb/pretrain.py", "fedsim/imdb/tokenizer.py")


class PretrainSpec(NamedTuple):
    steps: int = 1500
    batch: int = 32
    lr: float = 3e-3
    seed: int = 0

    def validate(self) -> "PretrainSpec":
        check_int("pretrain_steps", self.steps, 1)
        check_int("pretrain_batch", self.batch, 1)
        check_real("pretrain_lr", self.lr, 0.0, lo_open=True)
        return self


def windows(tokenizer: Tokenizer, texts, context: int) -> np.ndarray:
    """(N, context) int32: every review's tokens cut into whole windows of `context`."""
    rows = []
    for text in texts:
        ids = tokenizer.encode(text)
        rows.extend(ids[i:i + context] for i in range(0, len(ids) - context + 1, context))
    if not rows:
        raise DataError(f"no review has {context} tokens: pre-training needs longer reviews "
                        "or a shorter --prompt-length + --response-length")
    return np.stack(rows).astype(np.int32)


def next_token_loss(arch, params, ids):
    """Mean negative log-likelihood of tokens 2..L given their prefixes, over the targets the
    model can emit (not <pad> or <unk>: it never says "unknown word")."""
    logits, _ = M.apply(arch, params, ids[:, :-1])
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:])
    mask = (ids[:, 1:] != PAD) & (ids[:, 1:] != UNK)
    return jnp.sum(nll * mask) / jnp.maximum(mask.sum(), 1)


def perplexity(arch, params, ids, batch: int = 256) -> float:
    losses = [float(next_token_loss(arch, params, jnp.asarray(ids[i:i + batch])))
              * len(ids[i:i + batch]) for i in range(0, len(ids), batch)]
    return math.exp(sum(losses) / len(ids))


def train(arch: M.Architecture, train_ids: np.ndarray, spec: PretrainSpec):
    """Parameters after spec.steps Adam steps on minibatches of the training windows."""
    opt = optax.adam(optax.cosine_decay_schedule(spec.lr, spec.steps, alpha=0.1))
    key = jax.random.key(spec.seed)
    params = M.init_params(arch, key)
    data = jnp.asarray(train_ids)

    def step(carry, k):
        params, state = carry
        batch = data[jax.random.randint(k, (spec.batch,), 0, data.shape[0])]
        loss, grads = jax.value_and_grad(lambda p: next_token_loss(arch, p, batch))(params)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    run = jax.jit(lambda p, keys: jax.lax.scan(step, (p, opt.init(p)), keys))
    (params, _), losses = run(params, jax.random.split(jax.random.fold_in(key, 1), spec.steps))
    return params, np.asarray(losses)


def params_digest(params) -> str:
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()


def cache_key(tokenizer: Tokenizer, train_ids: np.ndarray, arch: M.Architecture,
              spec: PretrainSpec) -> str:
    digest = hashlib.sha256()
    for part in (tokenizer.fingerprint, hashlib.sha256(train_ids.tobytes()).hexdigest(),
                 json.dumps(arch._asdict(), sort_keys=True),
                 json.dumps(spec._asdict(), sort_keys=True), code_fingerprint(CODE)):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def pretrained(tokenizer: Tokenizer, train_ids: np.ndarray, held_ids: np.ndarray,
               arch: M.Architecture, spec: PretrainSpec, cache: Path | None,
               log=lambda message: print(message, file=sys.stderr)) -> tuple[object, dict]:
    """(parameters, report): from the cache when a valid entry exists, else trained (and
    cached). report: held-out perplexity, final training loss, seconds, whether cached."""
    key = cache_key(tokenizer, train_ids, arch, spec)
    path = None if cache is None else Path(cache) / f"imdb-lm-{key[:32]}.npz"
    like = jax.eval_shape(lambda: M.init_params(arch, jax.random.key(0)))
    like = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), like)
    if path is not None and path.exists():
        params, why = _read(path, like, key)
        if params is not None:
            return params, {**why, "cached": True, "cache_file": str(path)}
        log(f"pre-training cache {path} is {why}: rebuilding it")
    start = time.perf_counter()
    params, losses = train(arch, train_ids, spec)
    params = jax.block_until_ready(params)
    report = {"held_out_perplexity": perplexity(arch, params, held_ids),
              "train_loss_last_100": float(losses[-100:].mean()),
              "train_windows": int(len(train_ids)), "held_out_windows": int(len(held_ids)),
              "seconds": time.perf_counter() - start, "parameters": M.num_params(params)}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_state(path, params, {"key": key, "params_sha256": params_digest(params), **report})
    return params, {**report, "cached": False, "cache_file": None if path is None else str(path)}


def _read(path: Path, like, key: str):
    """(params, report) or (None, why it cannot be used)."""
    try:
        params, meta = load_state(path, like)
    except (zipfile.BadZipFile, json.JSONDecodeError, KeyError) as error:
        return None, f"unreadable ({type(error).__name__})"
    if params is None:
        return None, meta
    if meta.get("key") != key:
        return None, "stale (written for other data, settings or code)"
    if meta.get("params_sha256") != params_digest(params):
        return None, "damaged (its parameters do not match their checksum)"
    return params, {k: v for k, v in meta.items() if k not in ("key", "params_sha256")}
