"""How close to the machine's limit: FLOPs counted by XLA, and a peak measured beside them.

XLA's cost analysis counts a loop's body once, whatever its trip count (checked: a scan of
5 matmuls reports the flops of one). `program_flops` corrects for that from the jaxpr: for
every scan it adds (length - unrolled copies) times the body's own corrected count, each
body compiled on its own. Custom calls (LAPACK's solves on the CPU) count as zero, so a
program that uses them is not counted here.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core


def _xla_flops(closed_jaxpr) -> float:
    fn = jex_core.jaxpr_as_fun(closed_jaxpr)
    args = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in closed_jaxpr.in_avals]
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0))


def _sub_jaxprs(eqn):
    for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(name)
        if sub is not None:
            yield sub if hasattr(sub, "jaxpr") else jex_core.ClosedJaxpr(sub, ())


def _loop_correction(jaxpr) -> float:
    """What XLA's count of `jaxpr` misses: for every scan inside it (through nested calls),
    the iterations beyond the unrolled copies XLA counted, at their own corrected count."""
    extra = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            body, length = eqn.params["jaxpr"], eqn.params["length"]
            unroll = eqn.params.get("unroll", 1)
            # unroll u: XLA's body holds u copies, plus a copy for the remainder (length % u)
            u = length if unroll is True else min(max(int(unroll), 1), length)
            counted = u + (1 if length % u else 0) if u < length else length
            if length > counted:
                extra += (length - counted) * (_xla_flops(body) + _loop_correction(body.jaxpr))
            extra += counted * _loop_correction(body.jaxpr)
        elif eqn.primitive.name in ("while", "cond"):
            if eqn.primitive.name == "while":
                raise ValueError("program_flops: a while loop's trip count is not known; "
                                 "count a program with static loops")
            # cond: XLA counts every branch; a branch's own scans are not corrected here
        else:
            for sub in _sub_jaxprs(eqn):
                extra += _loop_correction(sub.jaxpr)
    return extra


def program_flops(fn, *args) -> float:
    """The floating-point operations of fn(*args), by XLA's cost analysis with each scan
    counted as many times as it runs."""
    closed = jax.make_jaxpr(fn)(*args)
    return _xla_flops(closed) + _loop_correction(closed.jaxpr)


def client_step_flops(problem, local_steps: int) -> float:
    """FLOPs per client-step of a problem (fedsim.bench.workloads.Problem): one local step of
    every client (the task's direction from its initial private state, and a plain ascent
    step: an optax client optimiser's few flops per parameter are left out), divided by the
    number of clients."""
    from fedsim.engine import keys as K_

    task, params0, data, weights, hparams, step_size = problem
    num_clients = weights.shape[0]

    def step(theta, data_k, hparams_k, k):
        key = K_.client_step_key(K_.client_round_key(jax.random.key(0), 0, k), 0)
        private, personal = task.init_private(data_k, key), task.init_personal(data_k, key)
        grad = task.direction(theta, personal, private, data_k, hparams_k, key).params
        return jax.tree.map(lambda p, g: p + step_size * g, theta, grad)

    thetas = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_clients,) + x.shape), params0)
    flops = program_flops(jax.vmap(step), thetas, data, hparams.task, jnp.arange(num_clients))
    return flops / num_clients


def matmul_peak(n: int = 2048, repeats: int = 5) -> dict:
    """The FLOP/s of a large float32 matmul (2 n^3 flops), fastest of `repeats`: the
    device's practical peak for the FLOP fractions in the bench's table."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda a: a @ a).lower(a).compile()
    jax.block_until_ready(mm(a))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(mm(a))
        best = min(best, time.perf_counter() - start)
    return {"n": n, "flops_per_s": 2 * n ** 3 / best}
