"""IMDb with PPO on a small language model: the sequence-PPO round vmapped over clients
equals a per-client loop, generation is deterministic per key, the authors' released code
path equals isolated PPO, the pre-training cache refuses damaged or stale files, bad
settings are refused before compilation, and `fedsim run imdb --quick` runs end to end."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsim.config import load_config
from fedsim.engine import Federation, HParams, make_train
from fedsim.engine import keys as K_
from fedsim.errors import ConfigError
from fedsim.imdb import data as D
from fedsim.imdb import model as M
from fedsim.imdb import pretrain as PT
from fedsim.imdb import tokenizer as TK
from fedsim.imdb.algorithms import as_released
from fedsim.imdb.config import IMDbRunConfig
from fedsim.imdb.ppo import PPOSpec, Scoring, distinct_2, ppo_round
from fedsim.imdb.reward import fluency
from fedsim.imdb.sentiment import Classifier
from fedsim.imdb.task import ClientData, IMDbHParams, PeerReference, make_task, peer_log_ref

ARCH = M.Architecture(vocab=16, context=6, width=8, layers=1, heads=2)
P, L, K = 2, 4, 3
SPEC = PPOSpec(batch=4, minibatches=2, epochs=2, lr=1e-2)


def _setup(dtype=jnp.float32):
    frozen = M.init_params(ARCH, jax.random.key(0))
    # a non-zero value head, so that the value loss and its averaging are exercised
    frozen = jax.tree.map(lambda x: (x + 0.05 * jax.random.normal(jax.random.key(1), x.shape))
                          .astype(dtype), frozen)
    classifier = Classifier(jnp.linspace(-1, 1, ARCH.vocab, dtype=dtype), jnp.zeros((), dtype))
    scoring = Scoring(ARCH, P, L, classifier, frozen, "frozen", "convex")
    prompts = jax.random.randint(jax.random.key(2), (K, 2, 1, SPEC.batch, P), 3, ARCH.vocab)
    evals = jnp.broadcast_to(jnp.arange(3, 3 + 2 * P).reshape(2, P), (K, 2, P))
    data = ClientData(prompts.astype(jnp.int32), evals.astype(jnp.int32), jnp.arange(K))
    return frozen, scoring, data, IMDbHParams(jnp.asarray([0.1, 0.5, 0.9], dtype))


def _run(algorithm_name, rounds=2, algorithm=None, serve="own", dtype=jnp.float32):
    frozen, scoring, data, hp = _setup(dtype)
    task = make_task(scoring, SPEC, serve)
    fed = Federation(algorithm_name, 1)
    algorithm = algorithm or fed.algorithm_parts(task)
    train = make_train(task, algorithm, fed)
    return jax.jit(lambda key: train(frozen, data, jnp.full(K, 1 / K, dtype), HParams(hp), key,
                                     jnp.ones((rounds, 1), dtype), jnp.arange(1, rounds + 1)))(
        jax.random.key(7))


def test_vmapped_ppo_round_equals_a_per_client_loop():
    """One isolated round through the engine (clients vmapped) against ppo_round called client
    by client with the same keys, within 1e-4. In float64: in float32, Adam's first steps,
    lr g / (|g| + eps), turn the rounding noise of gradients that vanish analytically into
    steps of +-lr, so the two programs differ by ~lr/3 (measured) although they sample the same
    responses; in float64 they agree to ~1e-11."""
    with jax.enable_x64():
        _compare_vmapped_with_loop(jnp.float64)


def _compare_vmapped_with_loop(dtype):
    frozen, scoring, data, hp = _setup(dtype)
    state, _ = _run("local", rounds=1, dtype=dtype)
    assert jax.tree.leaves(state.clients.params)[0].dtype == dtype
    # one compilation for every client (called op by op, ppo_round's scans are slow to run)
    reference = jax.jit(lambda prompts, lam, key: ppo_round(scoring, SPEC, frozen, prompts, lam,
                                                            key)[0])
    for k in range(K):
        key = K_.client_step_key(K_.client_round_key(jax.random.key(7), 0, k), 0)
        expected = reference(data.prompts[k, 0], hp.lam[k], key)
        got = jax.tree.map(lambda x: x[k], state.clients.params)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=0)
    # the round moved the policy, and each client differently (its own prompts, lambda, keys)
    moved = [float(jnp.abs(x[k] - y).max()) for x, y in zip(
        jax.tree.leaves(state.clients.params), jax.tree.leaves(frozen)) for k in range(K)]
    assert max(moved) > 1e-3
    leaves = jax.tree.leaves(state.clients.params)
    assert not np.allclose(np.asarray(leaves[0][0]), np.asarray(leaves[0][1]))


def test_generation_is_deterministic_per_key_and_client_keys_differ():
    frozen, *_ = _setup()
    prompts = jnp.full((4, P), 5, jnp.int32)
    gen = jax.jit(lambda key: M.generate(ARCH, frozen, prompts, key, L))
    a, b, c = gen(jax.random.key(0)), gen(jax.random.key(0)), gen(jax.random.key(1))
    assert a.shape == (4, P + L) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a[:, :P], prompts)
    assert not np.isin(np.asarray(a[:, P:]), [TK.PAD, TK.BOS]).any()   # never sampled
    keys = [K_.client_round_key(jax.random.key(7), 0, k) for k in range(K)]
    assert len({tuple(np.asarray(jax.random.key_data(k)).tolist()) for k in keys}) == K


def test_top_k_one_is_greedy():
    frozen, *_ = _setup()
    prompts = jnp.full((2, P), 5, jnp.int32)
    ids = M.generate(ARCH, frozen, prompts, jax.random.key(3), L, top_k=1)
    logits = M.apply(ARCH, frozen, ids)[0]
    assert np.array_equal(np.asarray(ids[:, P:]), np.asarray(logits[:, P - 1:-1].argmax(-1)))


def test_as_released_is_isolated_ppo_and_only_the_value_head_reaches_the_server():
    frozen = _setup()[0]
    iso_state, iso = _run("local")
    rel_state, rel = _run("local", algorithm=as_released())
    for a, b in zip(jax.tree.leaves(iso_state.clients.params),
                    jax.tree.leaves(rel_state.clients.params)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.array_equal(np.asarray(iso.clients["reward"]), np.asarray(rel.clients["reward"]))
    server = rel_state.params["params"]
    for name, sub in server.items():
        if name == M.VALUE_HEAD:
            expected = jax.tree.map(lambda x: x.mean(0), rel_state.clients.params["params"][name])
            for a, b in zip(jax.tree.leaves(sub), jax.tree.leaves(expected)):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
        else:   # the policy the server holds never changes
            for a, b in zip(jax.tree.leaves(sub), jax.tree.leaves(frozen["params"][name])):
                assert np.array_equal(np.asarray(a), np.asarray(b))
    fed_state, _ = _run("fedavg", serve="global")
    assert not np.allclose(np.asarray(jax.tree.leaves(fed_state.params)[0]),
                           np.asarray(jax.tree.leaves(iso_state.params)[0]))


def test_peer_reference_with_only_itself_is_its_own_policy():
    frozen, scoring, *_ = _setup()
    other = jax.tree.map(lambda x: x * 1.5, frozen)
    policies = jax.tree.map(lambda a, b: jnp.stack([a, b]), frozen, other)
    ids = M.generate(ARCH, frozen, jnp.full((3, P), 4, jnp.int32), jax.random.key(0), L)
    own = M.response_scores(ARCH, frozen, ids, P)[0]
    for mixing in ("geometric", "sum_of_kls", "arithmetic"):
        ref = peer_log_ref(scoring, PeerReference(jnp.asarray([1.0, 0.0]), policies), mixing)(ids)
        np.testing.assert_allclose(np.asarray(ref), np.asarray(own), atol=1e-5)
    half = PeerReference(jnp.asarray([0.5, 0.5]), policies)
    geo = peer_log_ref(scoring, half, "geometric")(ids)
    unnormalised = peer_log_ref(scoring, half, "sum_of_kls")(ids)
    assert np.all(np.asarray(geo) >= np.asarray(unnormalised) - 1e-6)   # log Z <= 0


def test_fluency_and_distinct_2_by_hand():
    assert float(fluency(jnp.full((1, 4), -np.log(16) / 2), 16)[0]) == pytest.approx(0.5)
    assert float(fluency(jnp.full((1, 4), -10.0), 16)[0]) == 0.0    # clamped
    responses = jnp.asarray([[1, 2, 1, 2], [3, 3, 3, 3]])
    # bigrams: (1,2) (2,1) (1,2) (3,3) (3,3) (3,3): 3 distinct of 6
    assert float(distinct_2(responses, 16)) == pytest.approx(0.5)


def test_pretraining_cache_is_used_and_damaged_or_stale_files_are_rebuilt(tmp_path):
    reviews = D.synthetic(60, words=30)
    tokenizer = TK.build(reviews.text, 40)
    arch = M.Architecture(tokenizer.size, 8, width=8, layers=1, heads=2)
    windows = PT.windows(tokenizer, reviews.text, arch.context)
    spec = PT.PretrainSpec(steps=5, batch=4)
    messages = []
    params, first = PT.pretrained(tokenizer, windows, windows, arch, spec, tmp_path,
                                  messages.append)
    again, second = PT.pretrained(tokenizer, windows, windows, arch, spec, tmp_path,
                                  messages.append)
    assert not first["cached"] and second["cached"] and not messages
    assert second["held_out_perplexity"] == first["held_out_perplexity"]
    path = tmp_path / next(p.name for p in tmp_path.iterdir())
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    _, third = PT.pretrained(tokenizer, windows, windows, arch, spec, tmp_path, messages.append)
    assert not third["cached"] and len(messages) == 1 and "rebuilding" in messages[0]
    path.write_bytes(b"not a cache")
    _, fourth = PT.pretrained(tokenizer, windows, windows, arch, spec, tmp_path, messages.append)
    assert not fourth["cached"] and "unreadable" in messages[-1]
    # a file holding another model under this key's name is stale, never used
    other = PT.PretrainSpec(steps=6, batch=4)
    other_path = tmp_path / f"imdb-lm-{PT.cache_key(tokenizer, windows, arch, other)[:32]}.npz"
    other_path.write_bytes(path.read_bytes())
    _, fifth = PT.pretrained(tokenizer, windows, windows, arch, other, tmp_path, messages.append)
    assert not fifth["cached"] and "stale" in messages[-1]


@pytest.mark.parametrize("change, match", [
    ({"clients": 0}, "clients"),
    ({"lam_grid": 1.5}, r"lam_grid\[0\]"),
    ({"reward": "additive", "lam_grid": -0.1}, r"lam_grid\[0\]"),
    ({"lam_grid": (0.1, 0.2)}, "K = 5 values"),
    ({"response_length": 0}, "response_length"),
    ({"context": 20}, "at least --prompt-length \\+ --response-length = 40"),
    ({"vocab_size": 5}, "vocab_size"),
    ({"batch": 16, "minibatch": 5}, "must divide --batch 16"),
    ({"width": 30, "heads": 4}, "divisible by --heads"),
])
def test_bad_settings_are_refused_with_the_parameter_named(change, match):
    with pytest.raises(ConfigError, match=match):
        IMDbRunConfig(**change).validate()


def test_bad_settings_on_the_command_line_fail_before_any_work(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fedsim", "run", "imdb", "--dataset", "synthetic",
                          "--minibatch", "5", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "minibatch" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x").exists()


SAMPLE = D.PROJECT_ROOT.parent / "shared" / "data" / D.SAMPLE


def test_quick_run_end_to_end_on_the_shared_sample(tmp_path, monkeypatch):
    """`fedsim run imdb --quick` on the shared sample (tiny synthetic reviews without it),
    then its figures, drawn from the folder."""
    monkeypatch.delenv("FEDSIM_DATA", raising=False)
    out = tmp_path / "run"
    data = [] if SAMPLE.exists() else ["--dataset", "synthetic"]
    # the pipeline, not the model's quality; isolated PPO is checked through the engine above
    data += ["--pretrain-steps", "100", "--algorithm", "fedrlhf"]
    done = subprocess.run([sys.executable, "-m", "fedsim", "run", "imdb", "--quick", "--quiet",
                           "--cache", str(tmp_path / "cache"), "--out", str(out), *data],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["results"]) == {"fedrlhf"}
    assert 0.5 < summary["classifier_held_out_accuracy"] <= 1
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 3 * 5 * 8   # rounds 0..2 x clients x prompts
    sample = json.loads(lines[0])
    assert set(sample) == {"algorithm", "seed", "round", "client", "lam", "prompt", "response",
                           "reward", "sentiment", "fluency"}
    assert sample["round"] == 0 and sample["response"]
    for name in ("config.json", "metrics.csv", "clients.csv", "tokenizer.json"):
        assert (out / name).exists()
    # every client's own PPO statistics, from round 1 (round 0 is the pre-trained model)
    with open(out / "clients.csv") as f:
        client_rows = list(csv.DictReader(f))
    trained = [r for r in client_rows if r["round"] == "1"]
    assert len(trained) == 5 and len({r["value_loss"] for r in trained}) == 5
    assert all(r["value_loss"] == "" for r in client_rows if r["round"] == "0")
    assert TK.load(out / "tokenizer.json").size == summary["vocabulary"]
    # the saved configuration reads back, and the same command on the folder reuses every
    # finished algorithm
    config = load_config(out / "config.json")
    assert isinstance(config, IMDbRunConfig) and config.rounds == 2
    again = subprocess.run([sys.executable, "-m", "fedsim", "run", "imdb", "--quick", "--quiet",
                            "--cache", str(tmp_path / "cache"), "--out", str(out), *data],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["algorithms_reused"] == 1 and resumed["results"] == summary["results"]
    assert (out / "samples.jsonl").read_text().splitlines() == lines
    drawn = subprocess.run([sys.executable, "-m", "fedsim", "figures", "--results", str(out),
                            "--out", str(tmp_path / "figures")], capture_output=True, text=True)
    assert drawn.returncode == 0, drawn.stderr[-3000:]
    assert {p.name for p in (tmp_path / "figures").iterdir()} >= {"imdb_rewards.png",
                                                                 "imdb_tradeoff.png"}


def test_dp_fedavg_settings_reach_fedrlhf_only():
    """The command line's DP settings reach fedrlhf's FedAvg and no other algorithm (the
    aggregator itself, on pytrees, is tested in tests/test_privacy.py)."""
    from fedsim.privacy.options import PrivacyOptions

    config = IMDbRunConfig(privacy=PrivacyOptions(dp_clip=0.5, dp_noise=1.0))
    assert config.validate().federation("fedavg", 5).dp.noise_multiplier == 1.0
    assert config.federation("local", 5).dp is None
    with pytest.raises(ConfigError, match="fedrlhf"):
        IMDbRunConfig(algorithms=("isolated",),
                      privacy=PrivacyOptions(dp_clip=0.5, dp_noise=1.0)).validate()
