"""The client axis over a device mesh (jax.sharding; XLA's SPMD partitioner).

`fedsim.engine.make_train(..., mesh=client_mesh(n))` constrains every array with a leading
client axis (client data, hyperparameters, weights, every client's state) to
`NamedSharding(mesh, P("clients"))` inside the compiled run; the global parameters are
replicated. The round function needs no change: vmaps over clients are split across devices,
clients in blocks are mapped by each device on its own (fedsim.engine.map_clients), and the
weighted sum over axis 0 becomes a cross-device reduction.

K not divisible by the device count is padded (inside the run) with copies of the last
client that carry weight 0: they compute but never reach the aggregate, the global metrics,
or the per-client metrics returned. Sampling participants would draw padded clients, so
partial participation needs K divisible by the device count.

Several hosts: every process runs the same program after `jax.distributed.initialize()`;
`jax.devices()` then lists every process's devices, the mesh spans them all, and `to_host`
gathers results (see the README, "Scaling out").
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh

from fedsim.errors import check_int

CLIENT_AXIS = "clients"


def client_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first `num_devices` devices (default: all), axis "clients"."""
    available = len(jax.devices())
    n = available if num_devices is None else num_devices
    check_int("devices", n, 1, available)
    return Mesh(np.asarray(jax.devices()[:n]), (CLIENT_AXIS,))


def padded_size(num_clients: int, num_devices: int) -> int:
    return -(-num_clients // num_devices) * num_devices


def to_host(tree):
    """numpy copies of (possibly sharded) arrays; with several processes, gathered from all."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def host_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def make_cpu_devices(count: int) -> None:
    """`count` XLA CPU devices (jax_num_cpu_devices), each running its programs on a thread of
    its own: for a mesh over the cores, or a spare device for a run's evaluation. Call it
    before JAX's first operation; a device count in XLA_FLAGS, or a backend already started,
    is left as it is."""
    if count > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS",
                                                                                  ""):
        try:
            jax.config.update("jax_num_cpu_devices", count)
        except RuntimeError:
            pass


def make_run_devices(devices: int = 1) -> None:
    """The CPU devices `fedsim run tabular --devices N` makes: N for its mesh, and at least 2
    where there are 2 cores, one the rounds do not use, for the evaluation
    (fedsim.tabular.experiment)."""
    make_cpu_devices(max(devices, min(2, host_cores())))
