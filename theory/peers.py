"""Where the KL-to-peers dynamics (fedkl) go: the coupled fixed point, computed independently
of the simulator, and the identity behind the geometric mixture (theory/statements.md, R4).

Client k's local objective, with the learner's entropy regularisation tau > 0 and the
penalty beta KL(pi || pi_ref,k), is the return of the reward r_k - tau log pi - beta (log pi -
log pi_ref,k). For a fixed reference its unique maximiser is the soft-optimal policy

    pi_k(a|s)  proportional to  exp((Q_k(s, a) + beta log pi_ref,k(a|s)) / (tau + beta)),
    V_k(s) = (tau + beta) log sum_a exp((Q_k(s, a) + beta log pi_ref,k(a|s)) / (tau + beta)),

Q_k = r_k + gamma P_k V_k. A fixed point of the coupled dynamics is a set of policies each
soft-optimal given the references mixed from all of them. `coupled_fixed_point` finds it by
iterating the soft Bellman backup and the mixing together (numpy, float64), with no code
shared with fedsim's engine or oracles.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def mix(log_pi, W, mixing: str = "geometric"):
    """log pi_ref (K, S, A) from log pi (K, S, A) and W (K, K)."""
    if mixing == "geometric":
        return log_softmax(np.einsum("kj,jsa->ksa", W, log_pi))
    if mixing == "sum_of_kls":   # unnormalised: the penalty is sum_j W_kj KL(pi || pi_j)
        return np.einsum("kj,jsa->ksa", W, log_pi)
    return np.log(np.einsum("kj,jsa->ksa", W, np.exp(log_pi)))


class FixedPoint(NamedTuple):
    log_pi: np.ndarray     # (K, S, A) the clients' policies
    V: np.ndarray          # (K, S) their soft values (of the KL-to-reference objective)
    residual: float        # the last sweep's largest change in log pi and V
    sweeps: int


def coupled_fixed_point(P, r, gamma, W, beta, tau, mixing="geometric", tol=1e-11,
                        max_sweeps=2_000_000) -> FixedPoint:
    """The policies of the coupled fixed point: P (K, S, A, S), r (K, S, A), W (K, K), tau > 0.

    One sweep: references from the current policies, then every client's soft backup against
    its reference. The backup contracts at rate gamma and the mixing at beta / (tau + beta),
    so large beta needs many sweeps; it stops when a sweep changes nothing by more than tol.
    """
    if not tau > 0:
        raise ValueError(f"tau = {tau!r} is not allowed: the fixed point needs entropy "
                         "regularisation tau > 0 (without it the policies drift toward "
                         "determinism where the clients agree)")
    P, r, W = (np.asarray(x, np.float64) for x in (P, r, W))
    K, S, A = r.shape
    temp = tau + beta
    log_pi, V = np.full((K, S, A), -np.log(A)), np.zeros((K, S))
    for sweep in range(1, max_sweeps + 1):
        ref = mix(log_pi, W, mixing)
        z = (r + gamma * np.einsum("ksat,kt->ksa", P, V) + beta * ref) / temp
        zmax = z.max(axis=-1, keepdims=True)
        lse = zmax[..., 0] + np.log(np.exp(z - zmax).sum(axis=-1))
        new_log_pi, new_V = z - lse[..., None], temp * lse
        change = max(np.abs(new_log_pi - log_pi).max(), np.abs(new_V - V).max())
        log_pi, V = new_log_pi, new_V
        if change < tol:
            return FixedPoint(log_pi, V, float(change), sweep)
    raise RuntimeError(f"the coupled iteration did not reach tol = {tol} in {max_sweeps} sweeps")


def returns(log_pi, P, r, rho, gamma, tau=0.0):
    """(K,) rho^T V of each client's policy on its own reward minus tau log pi (float64)."""
    P, r = np.asarray(P, np.float64), np.asarray(r, np.float64)
    pi = np.exp(log_pi)
    out = []
    for k in range(r.shape[0]):
        P_pi = np.einsum("sa,sat->st", pi[k], P[k])
        r_pi = np.sum(pi[k] * (r[k] - tau * log_pi[k]), axis=-1)
        out.append(rho @ np.linalg.solve(np.eye(len(rho)) - gamma * P_pi, r_pi))
    return np.asarray(out)


def spread(log_pi, weights):
    """How far apart the clients stay: the largest total-variation distance, over clients
    and states, between a client's policy and the weighted geometric consensus."""
    pi = np.exp(log_pi)
    consensus = np.exp(log_softmax(np.tensordot(weights, log_pi, axes=1)))
    return float(0.5 * np.abs(pi - consensus[None]).sum(axis=-1).max())


def kl_identity_gap(log_pi, log_peers, w, log_ref=None):
    """max over states of |KL(pi || ref) - (sum_j w_j KL(pi || pi_j) + log Z)|, with Z the
    normaliser of prod_j pi_j^w_j: 0 up to rounding when ref is their normalised geometric
    mixture, the default (statements.md, R4a). log_pi (S, A), log_peers (J, S, A), w (J,)."""
    z = np.tensordot(w, log_peers, axes=1)
    log_Z = np.log(np.exp(z).sum(axis=-1))
    log_ref = z - log_Z[:, None] if log_ref is None else log_ref
    pi = np.exp(log_pi)
    kl = lambda log_q: np.sum(pi * (log_pi - log_q), axis=-1)
    rhs = sum(wj * kl(lq) for wj, lq in zip(w, log_peers)) + log_Z
    return float(np.abs(kl(log_ref) - rhs).max())
