"""The inverse of I - gamma P_pi, in plain jnp operations.

Why not jnp.linalg.solve/inv: on the CPU they are LAPACK custom calls, and batched over
many clients (a few thousand systems and up, under vmap) they were seen to hang XLA's CPU
runtime (jax 0.10.2, 2 cores). These systems need no pivoting: M = I - gamma P_pi has rows
with M_ss - sum_{s' != s} |M_ss'| >= 1 - gamma > 0 (strict row diagonal dominance), which
elimination preserves, so every pivot is nonzero and growth is bounded (Golub & Van Loan,
Matrix Computations, 3.4.10).

Why an explicit inverse: the exact policy gradient needs both V = M^{-1} r and
d^T = rho^T M^{-1}. One Gauss-Jordan sweep over [M | I] gives both as matrix-vector
products, in a single loop of n rank-one updates; under vmap over clients that was 1.7x
faster than two eliminations with back substitution (2-core CPU, K = 1000, S = 20). The
loop has a static trip count, so it vectorises under vmap and is differentiable.

Why a separate solve: a return needs only d^T = rho^T M^{-1} (J = d . r_pi for any number of
rewards), and one sweep over [M^T | rho] does half the work of the inverse's [M | I].

Why the solve takes a batch: called on many systems at once (a run's evaluation: every client,
two policies each), it moves the batch to the last axes, so each pivot step is one contiguous
vector operation over all systems: 1.4-1.5x faster than the same solve vmapped (2-core CPU,
S = 20, K = 100 and 1000 clients). Under vmap (the local steps' gradients) the caller's batch
stays where vmap puts it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _gauss_jordan(M, right):
    """M^{-1} right for M (n, n, *batch) strictly diagonally dominant, right (n, m, *batch): n
    pivot steps, each a rank-one update of [M | right], no pivoting (the module docstring)."""
    n = M.shape[0]
    rows = jnp.arange(n).reshape((n,) + (1,) * (M.ndim - 2))

    def eliminate(k, augmented):
        pivot_row = augmented[k] / augmented[k, k]
        factors = jnp.where(rows == k, 0.0, augmented[:, k])
        augmented = augmented - factors[:, None] * pivot_row[None, :]
        return augmented.at[k].set(pivot_row)

    augmented = jnp.concatenate([M, right], axis=1)
    # Two pivots per loop iteration: 1.3x the engine's W1 throughput at K = 1000 (2-core CPU,
    # S = 20); unrolling 4-5 gave the same, 10 or all 20 was slower (and compiles longer).
    return jax.lax.fori_loop(0, n, eliminate, augmented, unroll=2)[:, n:]


def inverse_diagonally_dominant(M):
    """M^{-1} for M (n, n) strictly diagonally dominant by rows or by columns."""
    return _gauss_jordan(M, jnp.eye(M.shape[0], dtype=M.dtype))


def solve_diagonally_dominant(M, b):
    """M^{-1} b for M (..., n, n) strictly diagonally dominant by rows or by columns, b (..., n):
    the leading axes are a batch of systems, solved with the batch moved last (module
    docstring)."""
    last = lambda x: jnp.moveaxis(x, (-2, -1), (0, 1))
    x = _gauss_jordan(last(M), last(b[..., None]))[:, 0]
    return jnp.moveaxis(x, 0, -1)
