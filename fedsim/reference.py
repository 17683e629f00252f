"""A plain sequential reference implementation of a tabular run, for checking the engine.

Python loops over rounds, clients, local steps, trajectories and time steps; numpy float64;
no vmap, no scan, no jit, and none of the engine's or oracles' code. It shares with the
engine only the definition of the random stream (which keys and uniforms a draw uses), so
that sampled runs can be replayed draw for draw. It reads the arrays that `fedsim run
tabular` saves in instance.npz, so it doubles as a replay of any saved experiment.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

import jax

from fedsim.engine.aggregation import sample_participants
from fedsim.engine.faults import dropout_mask, straggler_steps
from fedsim.engine.keys import (client_round_key, client_step_key, dropout_key, fault_key,
                                participation_key, server_key, straggler_key)
from fedsim.tabular.sampling import trajectory_uniforms


def _softmax(theta):
    z = np.exp(theta - theta.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _regularised_reward(theta, r, tau, log_ref, peers=(0.0, 0.0)):
    """r - tau (log pi - log_ref) - beta (log pi - log_peer_ref), peers = (beta, log_peer_ref)."""
    log_pi = np.log(_softmax(theta))
    beta, log_peer_ref = peers
    return r - tau * (log_pi - log_ref) - beta * (log_pi - log_peer_ref)


def policy_values(theta, P, r, rho, gamma, tau=0.0, log_ref=0.0, peers=(0.0, 0.0)):
    """(J, V, Q, d) of the softmax policy, by direct linear solves."""
    pi = _softmax(theta)
    r_tau = _regularised_reward(theta, r, tau, log_ref, peers)
    S = P.shape[0]
    P_pi = np.zeros((S, S))
    r_pi = np.zeros(S)
    for s in range(S):
        for a in range(P.shape[1]):
            P_pi[s] += pi[s, a] * P[s, a]
            r_pi[s] += pi[s, a] * r_tau[s, a]
    M = np.eye(S) - gamma * P_pi
    V = np.linalg.solve(M, r_pi)
    Q = r_tau + gamma * P @ V
    d = np.linalg.solve(M.T, rho)
    return float(rho @ V), V, Q, d


def exact_gradient(theta, P, r, rho, gamma, tau=0.0, log_ref=0.0, peers=(0.0, 0.0)):
    _, V, Q, d = policy_values(theta, P, r, rho, gamma, tau, log_ref, peers)
    return d[:, None] * _softmax(theta) * (Q - V[:, None])


def peer_reference(thetas, w_row, mixing):
    """log pi_ref (S, A) for one client from every client's logits and its row of W: the
    normalised product prod_j pi_j^w_j (geometric), the unnormalised one (sum_of_kls) or
    sum_j w_j pi_j (arithmetic)."""
    S, A = thetas[0].shape
    log_ref = np.zeros((S, A))
    for s in range(S):
        if mixing == "geometric":
            z = sum(w * th[s] for w, th in zip(w_row, thetas))
            log_ref[s] = z - z.max() - np.log(np.sum(np.exp(z - z.max())))
        elif mixing == "sum_of_kls":
            log_ref[s] = sum(w * np.log(_softmax(th[s])) for w, th in zip(w_row, thetas))
        else:
            log_ref[s] = np.log(sum(w * _softmax(th[s]) for w, th in zip(w_row, thetas)))
    return log_ref


def returns_tilted(W, scores, temperature):
    """Row k: W_kk kept, W_kj (j != k) times exp(score_j / temperature), rescaled to 1 - W_kk."""
    K = len(scores)
    out = np.zeros((K, K))
    for k in range(K):
        out[k, k] = W[k, k]
        tilted = [W[k, j] * np.exp(scores[j] / temperature) if j != k else 0.0 for j in range(K)]
        if sum(tilted) > 0:
            for j in range(K):
                out[k, j] += tilted[j] / sum(tilted) * (1 - W[k, k])
    return out


def occupancy_kl(theta, log_ref, P, rho, gamma):
    """sum_s d(s) KL(pi(.|s) || ref(.|s)), d the normalised discounted occupancy."""
    _, _, _, d = policy_values(theta, P, np.zeros_like(theta), rho, gamma)
    pi = _softmax(theta)
    return float((1 - gamma) * sum(d[s] * np.sum(pi[s] * (np.log(pi[s]) - log_ref[s]))
                                   for s in range(len(d))))


def _inverse_cdf(probs, u):
    return min(int(np.sum(np.cumsum(probs) <= u)), len(probs) - 1)


def sampled_gradient(theta, P, r, rho, gamma, tau, log_ref, key, batch, horizon, estimator):
    u_start, u = (np.asarray(x, np.float64) for x in trajectory_uniforms(key, batch, horizon))
    pi = _softmax(theta)
    r_tau = _regularised_reward(theta, r, tau, log_ref)
    total = np.zeros_like(theta)
    for b in range(batch):
        s, alive, visited = _inverse_cdf(rho, u_start[b]), 1.0, []
        for t in range(horizon):
            a = _inverse_cdf(pi[s], u[b, t, 0])
            visited.append((s, a, alive, alive * r_tau[s, a]))
            s = _inverse_cdf(P[s, a], u[b, t, 1])
            alive = alive * float(u[b, t, 2] < gamma)
        gains = [g for *_, g in visited]
        for t, (s, a, alive, _) in enumerate(visited):
            weight = alive * (sum(gains[t:]) if estimator == "gpomdp" else sum(gains))
            total[s] -= weight * pi[s]
            total[s, a] += weight
    return total / batch


def shaped(R0, H, lam, form):
    return R0 + lam * H if form == "additive" else lam * H + (1 - lam) * R0


def aggregate(deltas, weights, arrived, aggregator="mean", trim=0.0):
    """The server's combination of the arrived deltas, written out plainly (see
    fedsim.engine.aggregators for the definitions)."""
    kept = [(d, w) for d, w, a in zip(deltas, weights, arrived) if a]
    if not kept:
        return np.zeros_like(deltas[0])
    if aggregator == "mean":
        scale = sum(weights) / sum(w for _, w in kept)
        return sum(w * scale * d for d, w in kept)
    stack = np.stack([d for d, _ in kept])
    if aggregator == "median":
        return np.median(stack, axis=0)
    cut = int(np.floor(trim * len(kept)))
    ordered = np.sort(stack, axis=0)
    return ordered[cut:len(kept) - cut].mean(axis=0)


def dp_aggregate(deltas, weights, arrived, clip, z, expected, key, adaptive=None):
    """DP-FedAvg's release, written out plainly (fedsim.privacy.dp_fedavg): (the noisy sum
    of clipped deltas with weights capped at 1/E, the next clipping norm). adaptive:
    (target quantile, step size, count std); the noise is the engine's draws from `key`."""
    cap = 1.0 / expected
    noise_key, count_key = jax.random.split(key)
    z_delta = z if adaptive is None or z == 0 else (z ** -2 - (2 * adaptive[2]) ** -2) ** -0.5
    total = np.zeros_like(deltas[0])
    unclipped = 0
    for d, w, a in zip(deltas, weights, arrived):
        norm = float(np.sqrt(np.sum(d ** 2)))
        if a:
            total = total + min(w, cap) * min(1.0, clip / max(norm, 1e-30)) * d
            unclipped += norm <= clip
    noise = np.asarray(jax.random.normal(jax.random.split(noise_key, 1)[0], total.shape),
                       np.float64)
    total = total + z_delta * clip * cap * noise
    if adaptive is None:
        return total, clip
    gamma, eta, count_std = adaptive
    fraction = (unclipped + count_std * float(jax.random.normal(count_key))) * cap
    return total, clip * float(np.exp(-eta * (fraction - gamma)))


def attacked(delta, attack, scale, key):
    """What a Byzantine client sends instead of its honest delta."""
    if attack == "sign_flip":
        return -scale * delta
    if attack == "scale":
        return scale * delta
    return scale * np.asarray(jax.random.normal(jax.random.fold_in(key, 0), delta.shape),
                              np.float64)


def reference_run(arrays: Mapping, run_key, *, algorithm="fedavg", participants=None,
                  gradient="exact", batch=1, horizon=1, estimator="gpomdp", tau=0.0,
                  log_ref=0.0, server_lr=None, aggregator="mean", trim=0.0, dropout=0.0,
                  byzantine=(), attack="sign_flip", attack_scale=2.5, arrived=None,
                  stragglers=0.0, steps_done=None, mu=0.0, kl_coef=0.0, peer_weights=None,
                  mixing="geometric", peer_weighting="fixed", temperature=1.0,
                  sampling="fixed", rate=None, dp=None) -> dict:
    """Replay a tabular run; returns per-round J, J0 and the final parameters.

    arrays: P, R0, H, lam, p, rho, gamma, theta0, step_sizes (T, E), reward_form, as in
    instance.npz. server_lr: plain server SGD theta <- theta - server_lr (theta - target).
    aggregator, trim, dropout, byzantine (client indices), attack, attack_scale: as in
    fedsim.engine.Federation (fedavg only). arrived: the realised (T, K) masks of the
    deltas that reached the server (instance.npz's "arrived" for one seed), used instead of
    drawing the dropouts. stragglers: as in Federation; steps_done: the realised (T, K)
    local steps (instance.npz's "steps_done" for one seed), used instead of drawing them.
    mu: FedProx's proximal coefficient (algorithm "fedprox": a client's local direction is
    its policy gradient minus mu (theta_k - theta), theta the round's global parameters).
    kl_coef, peer_weights (K, K), mixing: fedkl (algorithm "fedkl": each client continues
    from its own logits, with the reward r_k - kl_coef (log pi - log pi_ref,k), pi_ref,k
    mixed by `peer_reference` from the logits every client held at the round's start;
    peer_weighting "returns": W's peer part re-weighted each round by `returns_tilted`).
    sampling "poisson" with rate q: each client takes part with probability q (the engine's
    draw), weight p_k / q. dp: (clip, z, adaptive or None) for DP-FedAvg (`dp_aggregate`).
    """
    P, R0, H = (np.asarray(arrays[n], np.float64) for n in ("P", "R0", "H"))
    lam, p, rho = (np.asarray(arrays[n], np.float64) for n in ("lam", "p", "rho"))
    gamma, form = float(arrays["gamma"]), str(arrays["reward_form"])
    lrs = np.asarray(arrays["step_sizes"], np.float64)
    T, E = lrs.shape
    K = P.shape[0]
    m = K if participants is None else participants
    if sampling == "fixed" and rate is not None:
        m = max(1, round(rate * K))
    expected = rate * K if sampling == "poisson" else m
    clip = None if dp is None else dp[0]
    r = [shaped(R0[k], H[k], lam[k], form) for k in range(K)]
    theta = np.asarray(arrays["theta0"], np.float64).copy()
    held = [theta.copy() for _ in range(K)]

    def direction(k, th, key, peers=(0.0, 0.0)):
        if gradient == "exact":
            return exact_gradient(th, P[k], r[k], rho, gamma, tau, log_ref, peers)
        beta, log_peer_ref = peers   # both penalties as one regulariser, as the sampler takes
        total = tau + beta
        mixed = (tau * log_ref + beta * log_peer_ref) / total if total > 0 else 0.0
        return sampled_gradient(th, P[k], r[k], rho, gamma, total, mixed, key, batch, horizon,
                                estimator)

    history = {"J": [], "J0": []}
    for t in range(T):
        if sampling == "poisson":
            drawn = np.asarray(jax.random.bernoulli(participation_key(run_key, t), rate, (K,)))
            idx = [int(i) for i in np.flatnonzero(drawn)]
            w = {k: p[k] / rate for k in idx}
        else:
            idx = [int(i) for i in np.asarray(sample_participants(participation_key(run_key, t), K, m))]
            w = {k: p[k] * (K / m if m < K else 1.0) for k in idx}
        keys = {k: client_round_key(run_key, t, k) for k in idx}
        if algorithm == "centralized":
            th = theta.copy()
            for e in range(E):
                step = sum(w[k] * direction(k, th, client_step_key(keys[k], e)) for k in idx)
                th = th + lrs[t, e] * step
            target = th
            for k in idx:
                held[k] = th.copy()
        else:
            if steps_done is not None:
                done = {k: int(steps_done[t][k]) for k in idx}
            elif stragglers > 0:
                drawn = np.asarray(straggler_steps(straggler_key(run_key, t), m, E, stragglers))
                done = dict(zip(idx, map(int, drawn)))
            else:
                done = {k: E for k in idx}
            if algorithm == "fedkl":
                W_t = np.asarray(peer_weights, np.float64)
                if peer_weighting == "returns":
                    scores = [policy_values(held[j], P[j], r[j], rho, gamma, tau, log_ref)[0]
                              for j in range(K)]
                    W_t = returns_tilted(W_t, scores, temperature)
            refs = ({k: peer_reference(held, W_t[k], mixing) for k in idx}
                    if algorithm == "fedkl" else {})
            for k in idx:
                th = (held[k] if algorithm in ("local", "fedkl") else theta).copy()
                for e in range(done[k]):
                    peers = (kl_coef, refs[k]) if algorithm == "fedkl" else (0.0, 0.0)
                    d = direction(k, th, client_step_key(keys[k], e), peers)
                    if algorithm == "fedprox":
                        d = d - mu * (th - theta)
                    th = th + lrs[t, e] * d
                held[k] = th
            sent = [attacked(held[k] - theta, attack, attack_scale, fault_key(run_key, t, k))
                    if k in byzantine else held[k] - theta for k in idx]
            if arrived is not None:
                came = np.asarray(arrived[t], bool)[idx]
            elif dropout > 0:
                rows = K if sampling == "poisson" else m
                came = np.asarray(dropout_mask(dropout_key(run_key, t), rows, dropout)) > 0
                came = came[idx] if sampling == "poisson" else came
            else:
                came = np.ones(len(idx), bool)
            came = came & (np.array([w[k] for k in idx]) > 0)
            if dp is None:
                target = theta + aggregate(sent, [w[k] for k in idx], came, aggregator, trim)
            else:
                released, clip = dp_aggregate(sent, [w[k] for k in idx], came, clip, dp[1],
                                              expected, server_key(run_key, t), dp[2])
                target = theta + released
        if algorithm in ("local", "fedkl"):
            theta = sum(p[k] * held[k] for k in range(K))
        elif server_lr is not None:
            theta = theta - server_lr * (theta - target)
        else:
            theta = target
        history["J"].append(sum(p[k] * policy_values(theta, P[k], r[k], rho, gamma, tau, log_ref)[0]
                                for k in range(K)))
        history["J0"].append(sum(p[k] * policy_values(theta, P[k], R0[k], rho, gamma)[0]
                                 for k in range(K)))
    return {"J": np.asarray(history["J"]), "J0": np.asarray(history["J0"]), "theta": theta,
            "client_thetas": np.stack(held)}
