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
eliminations with back substitution (2-core CPU, K = 1000, S = 20). The sweep runs in place
(pivot k turns column k of M into column k of the inverse), so each update touches n x n
numbers, not the n x 2n of [M | I]. Under vmap over many clients it also moves the batch to
the last axis (a custom batching rule), as the solve below does. Together: 1.24x and 1.44x
the engine's W1 throughput at K = 1000 and 100 against [M | I] with the batch leading, the
same at K = 10 (2-core CPU, S = 20, fastest of 3 interleaved runs each).

Why values_and_visits: with the inverse returned to a leading batch, XLA's profile of a W1
step of 1000 clients showed the transpose back and the two batched matrix-vector products
taking 0.55-0.69 ms of about 5 (two runs under jax.profiler; 2-core CPU, jax 0.10.2). Taking
both products where the batch is last, as n multiply-adds of static slices (elementwise, one
fusion each, vectorised over the batch; a jnp.sum over that middle axis took 13x as long as a
batched dot), leaves only two vectors to transpose. With the policy's softmax as elementwise
operations (fedsim.tabular.oracles) the engine's W1 ran at 1.10-1.27x its client-steps/s at
K = 1000, 0.99-1.12x at 100 and 0.92-1.14x at 10 (four runs in one process each, 9-11
alternations, fastest against fastest, 7 Dec 2026).

Why a separate solve: a return needs only d^T = rho^T M^{-1} (J = d . r_pi for any number of
rewards), and one sweep over [M^T | rho] does half the work of the inverse's [M | I].

Why the solve takes a batch: called on many systems at once (a run's evaluation: every client,
two policies each), it moves the batch to the last axis, so each pivot step is one contiguous
vector operation over all systems: 1.4-1.5x faster than the same solve vmapped (2-core CPU,
S = 20, K = 100 and 1000 clients). Its batch axes are flattened into one, and a vmap around
it (the evaluation of a chunk's checkpoints) joins them: 808 systems as (8, 101) in the last
axes took 2.4x as long as the same systems as one axis of 808.

Two pivots per step, from a closed-form inverse of each 2x2 diagonal block (half the loop's
steps), ran slower (2-core CPU, jax 0.10.2, S = 20, 7 Dec 2026, fastest against fastest): 3.4x
as long per engine step at K = 10, its compiled update recomputing the block's inverse and the
new pivot rows for every element of the n x n update; with those rows carried from one step to
the next so that the update reads them, 1.2x at K = 10 and 4.9x and 3.8x at K = 100 and 1000.
At K = 10 an engine step is mostly XLA's cost per operation: 20 pivots of about 6 operations
on 4000 numbers or fewer each (3 of them index arithmetic), about 40 us per local step of 10
clients (2.4e5 client-steps/s, half the FLOP/s of K = 1000); XLA's flags
--xla_cpu_multi_thread_eigen=false and --xla_cpu_use_thunk_runtime=false did not change it.
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


def _inverse_in_place(A, unroll: int = 2):
    """A^{-1} for A (n, n, *batch) strictly diagonally dominant: Gauss-Jordan in place, no
    pivoting (the module docstring), `unroll` pivots per loop iteration. At pivot k, row k
    becomes the pivot row scaled by 1 / A_kk (with 1 / A_kk at column k), and every other row
    i loses A_ik times it, its column k starting from 0 (so it ends at -A_ik / A_kk)."""
    n = A.shape[0]
    index = jnp.arange(n).reshape((n,) + (1,) * (A.ndim - 2))   # along a row, over the batch

    def pivot(k, A):
        inv_pivot = 1.0 / A[k, k]
        row = jnp.where(index == k, inv_pivot, A[k] * inv_pivot)
        column = jnp.where(index == k, 0.0, A[:, k])
        A = jnp.where(index[None] == k, 0.0, A) - column[:, None] * row[None]
        return A.at[k].set(row)

    return jax.lax.fori_loop(0, n, pivot, A, unroll=unroll)


# Under vmap over fewer systems than this the batch stays leading, where vmap puts it: in the
# last axis, 10 or 20 systems ran at 0.45x (2-core CPU, S = 20); 32 ran as fast as leading.
BATCH_LAST_MIN = 32
# Pivots per loop iteration with the batch leading: 4 gave 1.15-1.2x over 2 at K = 10 and 20
# (2-core CPU); with the batch last, 2 and 4 were within the noise.
LEADING_UNROLL = 4


@jax.custom_jvp
@custom_vmap
def inverse_diagonally_dominant(M):
    """M^{-1} for M (n, n) strictly diagonally dominant by rows or by columns. Under vmap over
    BATCH_LAST_MIN systems or more, the batch moves to the last axis (the module docstring)."""
    return _inverse_in_place(M)


@inverse_diagonally_dominant.defjvp
def _inverse_jvp(primals, tangents):
    """d(M^{-1}) = -M^{-1} dM M^{-1}: linear in dM, so reverse mode works too (custom_vmap
    alone does not support it)."""
    (M,), (dM,) = primals, tangents
    inverse = inverse_diagonally_dominant(M)
    return inverse, -inverse @ dM @ inverse


def _inverses(M):
    """The inverses of a batch M (batch, n, n): as (batch, n, n) below BATCH_LAST_MIN systems,
    else as (n, n, batch), the batch moved last (the module docstring)."""
    if M.shape[0] < BATCH_LAST_MIN:
        return jax.vmap(lambda m: _inverse_in_place(m, LEADING_UNROLL))(M)
    return _inverse_in_place(jnp.moveaxis(M, 0, -1))


@inverse_diagonally_dominant.fun.def_vmap
def _inverse_batched(axis_size, in_batched, M):
    """M (axis_size, n, n), batched on axis 0 (its only argument, so always batched)."""
    inverse = _inverses(M)
    return (inverse if axis_size < BATCH_LAST_MIN else jnp.moveaxis(inverse, -1, 0)), True


def _products(inverse, r, rho):
    """inverse @ r and rho @ inverse for one system, or a leading batch of them."""
    return (jnp.einsum("...st,...t->...s", inverse, r),
            jnp.einsum("...t,...ts->...s", rho, inverse))


@jax.custom_jvp
@custom_vmap
def values_and_visits(M, r, rho):
    """V = M^{-1} r and d^T = rho^T M^{-1} for M (n, n) strictly diagonally dominant by rows or
    by columns: the two solves of the exact policy gradient, from one inverse. Under vmap over
    BATCH_LAST_MIN systems or more, the batch moves to the last axis for the inverse and stays
    there for both products (the module docstring)."""
    return _products(_inverse_in_place(M), r, rho)


@values_and_visits.defjvp
def _values_and_visits_jvp(primals, tangents):
    """dV = M^{-1} (dr - dM V), d(d^T) = (drho^T - d^T dM) M^{-1}: linear in the tangents, so
    reverse mode works too."""
    (M, r, rho), (dM, dr, drho) = primals, tangents
    inverse = inverse_diagonally_dominant(M)
    values, visits = _products(inverse, r, rho)
    return (values, visits), (inverse @ (dr - dM @ values), (drho - visits @ dM) @ inverse)


@values_and_visits.fun.def_vmap
def _values_and_visits_batched(axis_size, in_batched, M, r, rho):
    """An unbatched M is inverted once; a batched one as in _inverse_batched, with the
    products of the batch-last inverse as n multiply-adds of static slices over the batch."""
    if not in_batched[0]:
        inverse = _inverse_in_place(M)
        return (r @ inverse.T, rho @ inverse), (in_batched[1], in_batched[2])
    r = r if in_batched[1] else jnp.broadcast_to(r, (axis_size,) + r.shape)
    inverse = _inverses(M)
    if axis_size < BATCH_LAST_MIN:
        return _products(inverse, r, rho), (True, True)
    n = M.shape[-1]                                                     # inverse (n, n, batch)
    r_last, rho_last = r.T, (rho.T if in_batched[2] else rho[:, None])  # (n, batch), (n, 1)
    values = sum(inverse[:, s] * r_last[s] for s in range(n))
    visits = sum(inverse[t] * rho_last[t] for t in range(n))
    return (values.T, visits.T), (True, True)


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
