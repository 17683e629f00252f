"""How close to the machine's limit: FLOPs and bytes counted by XLA, and the limits
measured beside them (a large matmul's FLOP/s, an in-cache stream's bytes/s: a roofline).

XLA's cost analysis counts a loop's body once, whatever its trip count (checked: a scan of
5 matmuls reports the flops of one). `program_cost` corrects for that from the jaxpr: for
every scan it adds (length - unrolled copies) times the body's own corrected count, each
body compiled on its own. Custom calls (LAPACK's solves on the CPU) count as zero, so a
program that uses them is not counted here. Its bytes are what XLA's fusions read and write
(the traffic between fusions, through the caches), not what reaches DRAM.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

COUNTS = ("flops", "bytes accessed")   # XLA's names, in the order of the arrays below


def _xla_cost(closed_jaxpr) -> np.ndarray:
    fn = jex_core.jaxpr_as_fun(closed_jaxpr)
    args = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in closed_jaxpr.in_avals]
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return np.array([float(cost.get(name, 0.0)) for name in COUNTS])


def _sub_jaxprs(eqn):
    for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(name)
        if sub is not None:
            yield sub if hasattr(sub, "jaxpr") else jex_core.ClosedJaxpr(sub, ())


def _loop_correction(jaxpr) -> np.ndarray:
    """What XLA's counts of `jaxpr` miss: for every scan inside it (through nested calls),
    the iterations beyond the unrolled copies XLA counted, at their own corrected count."""
    extra = np.zeros(len(COUNTS))
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            body, length = eqn.params["jaxpr"], eqn.params["length"]
            unroll = eqn.params.get("unroll", 1)
            # unroll u: XLA's body holds u copies, plus a copy for the remainder (length % u)
            u = length if unroll is True else min(max(int(unroll), 1), length)
            counted = u + (1 if length % u else 0) if u < length else length
            if length > counted:
                extra += (length - counted) * (_xla_cost(body) + _loop_correction(body.jaxpr))
            extra += counted * _loop_correction(body.jaxpr)
        elif eqn.primitive.name in ("while", "cond"):
            if eqn.primitive.name == "while":
                raise ValueError("program_cost: a while loop's trip count is not known; "
                                 "count a program with static loops")
            # cond: XLA counts every branch; a branch's own scans are not corrected here
        else:
            for sub in _sub_jaxprs(eqn):
                extra += _loop_correction(sub.jaxpr)
    return extra


def program_cost(fn, *args) -> dict:
    """{"flops", "bytes"} of fn(*args): XLA's cost analysis with each scan counted as many
    times as it runs."""
    closed = jax.make_jaxpr(fn)(*args)
    flops, bytes_ = _xla_cost(closed) + _loop_correction(closed.jaxpr)
    return {"flops": float(flops), "bytes": float(bytes_)}


def client_step_cost(problem, local_steps: int) -> dict:
    """{"flops", "bytes"} per client-step of a problem (fedsim.bench.workloads.Problem): one
    local step of every client (the task's direction from its initial private state, and a
    plain ascent step: an optax client optimiser's few flops per parameter are left out),
    divided by the number of clients."""
    from fedsim.engine import keys as K_

    task, params0, data, weights, hparams, step_size = problem
    num_clients = weights.shape[0]

    def step(theta, data_k, hparams_k, k):
        key = K_.client_step_key(K_.client_round_key(jax.random.key(0), 0, k), 0)
        private, personal = task.init_private(data_k, key), task.init_personal(data_k, key)
        grad = task.direction(theta, personal, private, data_k, hparams_k, key).params
        return jax.tree.map(lambda p, g: p + step_size * g, theta, grad)

    thetas = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_clients,) + x.shape), params0)
    cost = program_cost(jax.vmap(step), thetas, data, hparams.task, jnp.arange(num_clients))
    return {name: value / num_clients for name, value in cost.items()}


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


def stream_bandwidth(megabytes=(1, 2, 4, 8), passes: int = 100, repeats: int = 5) -> dict:
    """The bytes/s of an elementwise update x <- a x + b (each pass reads and writes x) on
    arrays that fit this CPU's caches, the fastest over the sizes: the in-cache bandwidth that
    XLA's fusions' traffic (program_cost's bytes) is measured against."""
    best = {"megabytes": None, "bytes_per_s": 0.0}
    for mb in megabytes:
        x = jnp.ones(int(mb * 2 ** 20) // 4, jnp.float32)
        run = jax.jit(lambda x: jax.lax.fori_loop(0, passes, lambda i, x: 0.999 * x + 1e-3, x))
        jax.block_until_ready(run(x))
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(run(x))
            rate = 2 * x.nbytes * passes / (time.perf_counter() - start)
            if rate > best["bytes_per_s"]:
                best = {"megabytes": mb, "bytes_per_s": rate}
    return best
