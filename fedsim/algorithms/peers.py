"""Who listens to whom: the row-stochastic mixing matrices W of the KL-to-peers algorithm.

Row k of W says how client k's cooperative reference weighs every client's policy. The
authors' code (peer-referenced PPO, DESIGN.md 2.2) uses a uniform W with a self-weight
alpha (alpha = 1: each client re-anchors only to itself, "isolated"; alpha = 0: only to its
peers); here the peers can also be a graph's neighbours:

    W = alpha I + (1 - alpha) D^{-1} A,

A the graph's adjacency without self-loops, D its degrees: complete (every other client),
ring (the two neighbours k +- 1 mod K) and star (client 0 and everyone else; the leaves
hear only client 0). How fast W mixes is its spectral gap 1 - |lambda_2(W)|, with lambda_2
the eigenvalue of second-largest modulus (1 for a W that never mixes, e.g. alpha = 1).

numpy only: W is built and checked before anything is compiled.
"""

from __future__ import annotations

import numpy as np

from fedsim.choices import GRAPHS
from fedsim.errors import ConfigError, check_choice, check_real, require


def adjacency(graph: str, num_clients: int) -> np.ndarray:
    """(K, K) 0/1 adjacency without self-loops."""
    check_choice("graph", graph, GRAPHS)
    K = num_clients
    A = np.zeros((K, K))
    if graph == "complete":
        A[:] = 1.0
    elif graph == "ring":
        for k in range(K):
            A[k, (k + 1) % K] = A[k, (k - 1) % K] = 1.0
    else:   # star: client 0 is the hub
        A[0, :] = A[:, 0] = 1.0
    np.fill_diagonal(A, 0.0)
    return A


def mixing_matrix(graph: str, self_weight: float, num_clients: int) -> np.ndarray:
    """W = alpha I + (1 - alpha) D^{-1} A (K = 1: W = [[1]])."""
    check_real("self_weight (alpha)", self_weight, 0.0, 1.0)
    A = adjacency(graph, num_clients)
    degree = A.sum(axis=1, keepdims=True)
    peers = np.divide(A, degree, out=np.eye(num_clients), where=degree > 0)
    return self_weight * np.eye(num_clients) + (1.0 - self_weight) * peers


def check_mixing_matrix(W, num_clients: int, name: str = "peer_weights") -> np.ndarray:
    """W as a float (K, K) array, or a clear error: square of side K, finite, non-negative,
    rows summing to 1 (to 1e-6)."""
    W = np.asarray(W, dtype=float)
    K = num_clients
    require(W.shape == (K, K), name, W.shape, f"must be a {K} x {K} matrix (K = {K} clients)")
    require(bool(np.all(np.isfinite(W)) and np.all(W >= 0)), name, W.tolist(),
            "must have finite, non-negative entries")
    sums = W.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if bad.size:
        raise ConfigError(name, W.tolist(), f"must be row-stochastic: row {bad[0]} sums to "
                          f"{sums[bad[0]]:g}, not 1")
    return W


def spectral_gap(W) -> float:
    """1 - |lambda_2(W)|: 0 for a W that never mixes (a disconnected graph, alpha = 1)."""
    moduli = np.sort(np.abs(np.linalg.eigvals(np.asarray(W, float))))[::-1]
    return float(1.0 - moduli[1]) if moduli.size > 1 else 1.0


def stationary_weights(W) -> np.ndarray:
    """The left Perron vector pi of W (pi W = pi, sum 1): the weights with which the clients'
    objectives enter the consensus the coupled dynamics drift along (theory/statements.md,
    R4)."""
    values, vectors = np.linalg.eig(np.asarray(W, float).T)
    v = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
    return v / v.sum()


def laplacian_gap(W) -> float:
    """1 - Re lambda_2(W), the smallest non-zero eigenvalue of I - W (for a connected
    graph): how strongly W holds the clients' fixed point together (theory/statements.md,
    R4d). Unlike the modulus gap it is positive for bipartite graphs (star, even rings)."""
    real = np.sort(np.real(np.linalg.eigvals(np.asarray(W, float))))[::-1]
    return float(1.0 - real[1]) if real.size > 1 else 1.0
