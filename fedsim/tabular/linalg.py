"""The inverse of I - gamma P_pi, in plain jnp operations.

Why not jnp.linalg.solve/inv: on the CPU they are LAPACK custom calls, and batched over
many clients (a few thousand systems and up, under vmap) they were seen to hang XLA's CPU
runtime (jax 0.10.2, 2 cores). These systems need no pivoting: M = I - gamma P_pi has rows
with M_ss - sum_{s' != s} |M_ss'| >= 1 - gamma > 0 (strict row diagonal dominance), which
elimination preserves, so every pivot is nonzero and growth is bounded (Golub & Van Loan,
Matrix Computations, 3.4.10).

Why an explicit inverse: the exact policy gradient needs both V = M^{-1} r and
d^T = rho^T M^{-1}. One Gauss-Jordan sweep gives both as matrix-vector products, in a single
loop of n rank-one updates; under vmap over clients that was 1.7x faster than two
eliminations with back substitution (2-core CPU, K = 1000, S = 20). One pivot-free LU of
[[M, r], [rho^T, 0]] by Schur complements in static shrinking slices, then two back
substitutions, has about a third of the sweep's work but took twice as long for V and d
(K = 10, 100 and 1000; jax 0.10.2, 7 Dec 2026): XLA's CPU fusion merged consecutive
elimination steps into one kernel that recomputes the earlier ones for every element, and an
optimization_barrier does not survive to stop it outside a loop body. The sweep runs in place
(pivot k turns column k of M into column k of the inverse), so each update touches n x n
numbers, not the n x 2n of [M | I] (in place and with its batch moved last, an earlier form
of this sweep gave 1.24x and 1.44x the engine's W1 throughput at K = 1000 and 100 against
[M | I] with the batch leading; 2-core CPU, S = 20, fastest of 3 interleaved runs each).

Why the sweep rotates: every pivot is taken at (0, 0), and the rows and columns are then
rotated by one (_pivot_and_rotate), so every slice is static. XLA compiles a pivot to one
elementwise fusion and the pivot's reciprocal; with two pivots per loop iteration and the
loop's counter, 2.5 operations a pivot. A pivot at a traced index k (a dynamic slice, a
dynamic update, index arithmetic) took about 6.5, and at K = 10 an engine step was mostly
XLA's fixed cost per operation. Against that sweep, with its batch moved last under vmap (a
custom batching rule from 32 systems up, the batch leading below), the engine's W1 ran at
1.6x its client-steps/s at K = 10, 1.09-1.10x at 100, 0.93-0.95x at 200, 1.20-1.21x at 1000
and 1.14-1.16x at 10 000; sharded over the 2 cores at 1.14x, 1.23x and 1.04x at K = 100, 1000
and 10 000; and a grid of 128 distinct cells of K = 100, 10 cells a block, took 0.94 s
against 1.10 s (2-core CPU, jax 0.10.2, one process each, 5-7 alternations, fastest against
fastest, 7 Dec 2026). So the batch stays leading, where vmap puts it, and the sweep needs no
batching rule. The fastest form of the update divides each row by the pivot after the
rank-one update, (a A_ij - A_i0 A_0j) / a, rather than subtracting A_i0 (A_0j / a): 1.26-1.40x
as fast on the inverses of 10 or 20 systems alone.

Why values_and_visits: both products from one inverse, and a derivative (custom_jvp) that
takes its tangents from that inverse rather than differentiating the sweep.

Why a separate solve: a return needs only d^T = rho^T M^{-1} (J = d . r_pi for any number of
rewards), and one sweep over [M^T | rho] does half the work of the inverse's [M | I].

Why the solve takes a batch: called on many systems at once (a run's evaluation: every client,
two policies each), it moves the batch to the last axis, so each pivot step is one contiguous
vector operation over all systems: 1.4-1.5x faster than the same solve vmapped (2-core CPU,
S = 20, K = 100 and 1000 clients). Its batch axes are flattened into one, and a vmap around
it (the evaluation of a chunk's checkpoints) joins them: 808 systems as (8, 101) in the last
axes took 2.4x as long as the same systems as one axis of 808.

Two pivots per step, from a closed-form inverse of each 2x2 diagonal block (half the loop's
steps), ran slower than the sweep at a traced index (2-core CPU, jax 0.10.2, S = 20, 7 Dec
2026, fastest against fastest): 3.4x as long per engine step at K = 10, its compiled update
recomputing the block's inverse and the new pivot rows for every element of the n x n update;
with those rows carried from one step to the next so that the update reads them, 1.2x at
K = 10 and 4.9x and 3.8x at K = 100 and 1000.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap


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
    # Two pivots per loop iteration: 1.3x the engine's W1 throughput at K = 1000 when this
    # sweep made its inverse (2-core CPU, S = 20); 4-5 gave the same, 10 or all 20 was slower.
    return jax.lax.fori_loop(0, n, eliminate, augmented, unroll=2)[:, n:]


def _pivot_and_rotate(A):
    """One Gauss-Jordan pivot at (0, 0) of A (..., n, n), in place, its rows and columns then
    rotated up and left by one, so that the next pivot is at (0, 0) again. The pivot row
    becomes row 0 scaled by 1 / a (a = A_00, which becomes 1 / a) and every other row i loses
    A_i0 times it (its column 0 becoming -A_i0 / a), as (a A_ij - A_i0 A_0j) / a. Static
    slices, one elementwise fusion, no index arithmetic (the module docstring)."""
    a = A[..., :1, :1]
    inner = (A[..., 1:, 1:] * a - A[..., 1:, :1] * A[..., :1, 1:]) / a
    pivot_row = jnp.concatenate([A[..., :1, 1:], jnp.ones_like(a)], -1) / a
    return jnp.concatenate([jnp.concatenate([inner, -A[..., 1:, :1] / a], -1), pivot_row], -2)


def _inverse_rotating(A):
    """A^{-1} for A (..., n, n) strictly diagonally dominant, no pivoting (the module
    docstring): n pivots at (0, 0), each followed by a rotation (_pivot_and_rotate). Every
    index is the pivot once, and after n rotations the rows and columns are back in place.
    Two pivots per loop iteration with a barrier between them: without it XLA fused the
    second into the first, recomputing the first for every element it reads."""
    two_pivots = lambda _, A: _pivot_and_rotate(
        jax.lax.optimization_barrier(_pivot_and_rotate(A)))
    n = A.shape[-1]
    A = jax.lax.fori_loop(0, n // 2, two_pivots, A)
    return _pivot_and_rotate(A) if n % 2 else A


@jax.custom_jvp
def inverse_diagonally_dominant(M):
    """M^{-1} for M (..., n, n) strictly diagonally dominant by rows or by columns, the
    leading axes (and any vmap's) a batch of systems."""
    return _inverse_rotating(M)


@inverse_diagonally_dominant.defjvp
def _inverse_jvp(primals, tangents):
    """d(M^{-1}) = -M^{-1} dM M^{-1}: linear in dM, so reverse mode works too."""
    (M,), (dM,) = primals, tangents
    inverse = inverse_diagonally_dominant(M)
    return inverse, -inverse @ dM @ inverse


def _products(inverse, r, rho):
    """inverse @ r and rho @ inverse for one system, or a leading batch of them."""
    return (jnp.einsum("...st,...t->...s", inverse, r),
            jnp.einsum("...t,...ts->...s", rho, inverse))


@jax.custom_jvp
def values_and_visits(M, r, rho):
    """V = M^{-1} r and d^T = rho^T M^{-1} for M (..., n, n) strictly diagonally dominant by
    rows or by columns: the two solves of the exact policy gradient, from one inverse."""
    return _products(inverse_diagonally_dominant(M), r, rho)


@values_and_visits.defjvp
def _values_and_visits_jvp(primals, tangents):
    """dV = M^{-1} (dr - dM V), d(d^T) = (drho^T - d^T dM) M^{-1}: linear in the tangents, so
    reverse mode works too."""
    (M, r, rho), (dM, dr, drho) = primals, tangents
    inverse = inverse_diagonally_dominant(M)
    values, visits = _products(inverse, r, rho)
    return (values, visits), (inverse @ (dr - dM @ values), (drho - visits @ dM) @ inverse)


def _solve_batch_last(M, b):
    """M^{-1} b for M (..., n, n), b (..., n): the leading axes flattened into one batch axis
    and moved last (the module docstring)."""
    n = M.shape[-1]
    last = lambda x, m: jnp.moveaxis(x.reshape((-1, n, m)), 0, -1)
    x = _gauss_jordan(last(M, n), last(b[..., None], 1))[:, 0]
    return jnp.moveaxis(x, -1, 0).reshape(b.shape)


@jax.custom_jvp
@custom_vmap
def solve_diagonally_dominant(M, b):
    """M^{-1} b for M (..., n, n) strictly diagonally dominant by rows or by columns, b (..., n):
    the leading axes are a batch of systems, solved as one batch in the last axis, as are the
    axes of any vmap around it (the module docstring)."""
    return _solve_batch_last(M, b)


@solve_diagonally_dominant.defjvp
def _solve_jvp(primals, tangents):
    """The plain solve's own derivative (its code differentiated), so reverse mode and
    Hessians work (custom_vmap alone does not support reverse mode)."""
    return jax.jvp(_solve_batch_last, primals, tangents)


@solve_diagonally_dominant.fun.def_vmap
def _solve_batched(axis_size, in_batched, M, b):
    """The vmapped axis joins the systems' batch (an unbatched argument is broadcast to it)."""
    M, b = (x if batched else jnp.broadcast_to(x, (axis_size,) + x.shape)
            for x, batched in zip((M, b), in_batched))
    return solve_diagonally_dominant(M, b), True
