"""The pivot-free inverse of I - gamma P_pi, and its one-right-hand-side solve."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedsim.tabular.linalg import (inverse_diagonally_dominant, solve_diagonally_dominant,
                                   values_and_visits)


def _system(seed, n=12, gamma=0.95):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(n), size=n)
    return np.eye(n) - gamma * P, rng.normal(size=n)


def test_matches_numpy_for_matrix_and_transpose():
    for seed in range(5):
        M, _ = _system(seed)
        for A in (M, M.T):
            inv = inverse_diagonally_dominant(jnp.asarray(A, jnp.float32))
            np.testing.assert_allclose(inv, np.linalg.inv(A), rtol=2e-4, atol=2e-4)


def test_solve_matches_numpy_for_matrix_and_transpose():
    for seed in range(5):
        M, b = _system(seed)
        for A in (M, M.T):
            x = solve_diagonally_dominant(jnp.asarray(A, jnp.float32), jnp.asarray(b, jnp.float32))
            np.testing.assert_allclose(x, np.linalg.solve(A, b), rtol=2e-4, atol=2e-4)


def test_batched_solve_matches_each_system_solved_alone():
    """A batch (3, 4) of systems, solved with the batch moved last, against each alone and
    against numpy (float32: the same elimination, so agreement to rounding)."""
    systems = [_system(seed, n=7) for seed in range(12)]
    M = np.stack([m for m, _ in systems]).reshape(3, 4, 7, 7)
    b = np.stack([v for _, v in systems]).reshape(3, 4, 7)
    x = solve_diagonally_dominant(jnp.asarray(M, jnp.float32), jnp.asarray(b, jnp.float32))
    assert x.shape == (3, 4, 7)
    for i, j in np.ndindex(3, 4):
        alone = solve_diagonally_dominant(jnp.asarray(M[i, j], jnp.float32),
                                          jnp.asarray(b[i, j], jnp.float32))
        np.testing.assert_allclose(x[i, j], alone, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(x[i, j], np.linalg.solve(M[i, j], b[i, j]), rtol=2e-4,
                                   atol=2e-4)


@pytest.mark.parametrize("batch", [1, 3])
def test_vmapped_inverse_matches_each_system_alone(batch):
    """A batch (leading axes, or a vmap's) gives each system's inverse, also under a second
    vmap (a grid of cells over clients)."""
    M = np.stack([_system(seed, n=9)[0] for seed in range(2 * batch)]).astype(np.float32)
    alone = np.stack([inverse_diagonally_dominant(jnp.asarray(m)) for m in M])
    np.testing.assert_allclose(alone, np.linalg.inv(M.astype(np.float64)), rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(jax.jit(jax.vmap(inverse_diagonally_dominant))(M), alone,
                               rtol=1e-6, atol=1e-6)
    nested = jax.vmap(jax.vmap(inverse_diagonally_dominant))(M.reshape(2, batch, 9, 9))
    np.testing.assert_allclose(nested.reshape(alone.shape), alone, rtol=1e-6, atol=1e-6)
    leading = inverse_diagonally_dominant(M.reshape(2, batch, 9, 9))
    np.testing.assert_allclose(leading.reshape(alone.shape), alone, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 3])
def test_reverse_mode_through_the_batched_inverse(batch):
    """grad through the vmapped inverse (its custom jvp) equals each system's own."""
    systems = [_system(seed, n=5) for seed in range(batch)]
    M = jnp.asarray(np.stack([m for m, _ in systems]), jnp.float32)
    b = jnp.asarray(np.stack([v for _, v in systems]), jnp.float32)
    one = lambda m, v: jnp.sum((inverse_diagonally_dominant(m) @ v) ** 2)
    batched = jax.grad(lambda m: jnp.sum(jax.vmap(one)(m, b)))(M)
    for i in range(batch):
        np.testing.assert_allclose(batched[i], jax.grad(one)(M[i], b[i]), rtol=1e-5, atol=1e-6)


def _values_and_visits_numpy(M, r, rho):
    return np.linalg.solve(M, r), np.linalg.solve(M.T, rho)


@pytest.mark.parametrize("batch", [1, 3])
def test_values_and_visits_match_numpy_under_every_batching(batch):
    """M^{-1} r and rho^T M^{-1}: alone, vmapped, in a grid (two vmaps), with rho shared or
    per system, and with M shared."""
    systems = [_system(seed, n=9) for seed in range(2 * batch)]
    M = np.stack([m for m, _ in systems]).astype(np.float32)
    r = np.stack([v for _, v in systems]).astype(np.float32)
    rho = np.random.default_rng(0).dirichlet(np.ones(9), size=2 * batch).astype(np.float32)
    alone = [_values_and_visits_numpy(M[i].astype(np.float64), r[i], rho[i])
             for i in range(2 * batch)]
    want = [np.stack(x) for x in zip(*alone)]
    tol = dict(rtol=2e-4, atol=2e-4)
    for i in range(2):
        for got, w in zip(values_and_visits(M[i], r[i], rho[i]), want):
            np.testing.assert_allclose(got, w[i], **tol)
    for got, w in zip(jax.jit(jax.vmap(values_and_visits))(M, r, rho), want):
        np.testing.assert_allclose(got, w, **tol)
    grid = jax.vmap(jax.vmap(values_and_visits))(M.reshape(2, batch, 9, 9), r.reshape(2, batch, 9),
                                                rho.reshape(2, batch, 9))
    for got, w in zip(grid, want):
        np.testing.assert_allclose(got.reshape(w.shape), w, **tol)
    V, d = jax.vmap(values_and_visits, (0, 0, None))(M, r, rho[0])
    np.testing.assert_allclose(V, want[0], **tol)
    np.testing.assert_allclose(d, [np.linalg.solve(m.T.astype(np.float64), rho[0]) for m in M],
                               **tol)
    V, d = jax.vmap(values_and_visits, (None, 0, 0))(M[0], r, rho)
    np.testing.assert_allclose(V, [np.linalg.solve(M[0].astype(np.float64), v) for v in r], **tol)
    np.testing.assert_allclose(d, [np.linalg.solve(M[0].T.astype(np.float64), w) for w in rho],
                               **tol)


@pytest.mark.parametrize("batch", [1, 3])
def test_values_and_visits_derivatives_match_finite_differences(batch):
    """Reverse mode through values_and_visits, vmapped or not, against central differences
    in float64."""
    systems = [_system(seed, n=5) for seed in range(batch)]
    M = np.stack([m for m, _ in systems])
    r = np.stack([v for _, v in systems])
    rho = np.random.default_rng(1).dirichlet(np.ones(5), size=batch)
    weights = np.random.default_rng(2).normal(size=(2, batch, 5))

    def f(M, r, rho):
        V, d = (jax.vmap(values_and_visits)(M, r, rho) if batch > 1
                else values_and_visits(M[0], r[0], rho[0]))
        return jnp.sum(weights[0] * V) + jnp.sum(weights[1] * d ** 2)

    with jax.enable_x64():
        args = [jnp.asarray(x, jnp.float64) for x in (M, r, rho)]
        grads = jax.grad(f, argnums=(0, 1, 2))(*args)
        eps = 1e-6
        for i, (x, g) in enumerate(zip((M, r, rho), grads)):
            for idx in list(np.ndindex(x.shape))[:40]:
                e = np.zeros_like(x)
                e[idx] = eps
                plus, minus = list(args), list(args)
                plus[i], minus[i] = args[i] + e, args[i] - e
                fd = (f(*plus) - f(*minus)) / (2 * eps)
                np.testing.assert_allclose(g[idx], fd, rtol=1e-5, atol=1e-8)


def test_vmapped_solve_joins_the_batch():
    """Under vmap (one or two levels, either argument unbatched) the solve's batching rule folds
    the vmapped axis into its systems' batch: each system's answer, as solved alone."""
    systems = [_system(seed, n=6) for seed in range(12)]
    M = jnp.asarray(np.stack([m for m, _ in systems]).reshape(3, 4, 6, 6), jnp.float32)
    b = jnp.asarray(np.stack([v for _, v in systems]).reshape(3, 4, 6), jnp.float32)
    alone = lambda m, v: solve_diagonally_dominant(m, v)
    want = np.stack([[alone(M[i, j], b[i, j]) for j in range(4)] for i in range(3)])
    np.testing.assert_allclose(jax.jit(jax.vmap(jax.vmap(alone)))(M, b), want, rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_allclose(jax.vmap(alone)(M, b), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(alone, (None, 0))(M[0, 0], b[:, 0]),
                               [alone(M[0, 0], b[i, 0]) for i in range(3)], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(alone, (0, None))(M[:, 0], b[0, 0]),
                               [alone(M[i, 0], b[0, 0]) for i in range(3)], rtol=1e-6, atol=1e-6)


def test_gradient_matches_finite_differences():
    M, b = _system(7, n=5)
    f = lambda m: jnp.sum((inverse_diagonally_dominant(m) @ jnp.asarray(b)) ** 2)
    with jax.enable_x64():
        grad = jax.grad(f)(jnp.asarray(M, jnp.float64))
        eps, fd = 1e-6, np.zeros_like(M)
        for idx in np.ndindex(M.shape):
            e = np.zeros_like(M)
            e[idx] = eps
            fd[idx] = (f(jnp.asarray(M + e)) - f(jnp.asarray(M - e))) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-8)


def test_large_batch_of_solves_completes():
    """Regression: 40k batched jnp.linalg.solve calls hung XLA's CPU runtime; ours must not.

    Run in a subprocess with a time limit, so a regression fails this test instead of
    hanging the suite.
    """
    code = textwrap.dedent("""
        import jax, jax.numpy as jnp
        from fedsim.tabular.oracles import client_gradient
        S, A = 3, 2
        P = jnp.full((S, A, S), 1.0 / S); r = jnp.ones((S, A)); rho = jnp.full((S,), 1.0 / S)
        keys = jax.random.split(jax.random.key(0), 40000)
        grads = jax.jit(jax.vmap(lambda k: client_gradient(
            jax.random.normal(k, (S, A)), P, r, rho, 0.5)))(keys)
        print(bool(jnp.all(jnp.isfinite(grads))))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"
