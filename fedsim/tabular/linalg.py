"""Linear solves for I - gamma P_pi, in plain jnp operations.

Why not jnp.linalg.solve: on the CPU it is a LAPACK custom call, and batched over many
clients (a few thousand systems and up, under vmap) it was seen to hang XLA's CPU runtime
(jax 0.10.2, 2 cores). These systems need no pivoting: M = I - gamma P_pi has rows with
M_ss - sum_{s' != s} |M_ss'| >= 1 - gamma > 0 (strict row diagonal dominance), and M^T is
column-dominant, for both of which Gaussian elimination without pivoting is stable
(Golub & Van Loan, Matrix Computations, 3.4.10). The loops have static trip counts, so the
solve vectorises under vmap and is differentiable (forward and reverse).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def solve_diagonally_dominant(M, b):
    """x with M x = b, M (n, n) diagonally dominant by rows or columns, b (n,)."""
    n = M.shape[0]
    rows = jnp.arange(n)

    def eliminate(k, carry):
        M, b = carry
        factors = jnp.where(rows > k, M[:, k] / M[k, k], 0.0)
        return M - factors[:, None] * M[k][None, :], b - factors * b[k]

    U, c = jax.lax.fori_loop(0, n, eliminate, (M, b))

    def substitute(i, x):
        k = n - 1 - i
        return x.at[k].set((c[k] - U[k] @ x) / U[k, k])   # x[k:] unsolved entries are 0

    return jax.lax.fori_loop(0, n, substitute, jnp.zeros_like(b))
