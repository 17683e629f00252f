"""The client axis sharded over a device mesh (jax.sharding; XLA's SPMD partitioner).

Every array with a leading client axis (client data, private state, the parameters each
client holds, aggregation weights) is placed with `NamedSharding(mesh, P("clients"))`; the
global parameters are replicated. The round function needs no change: vmaps over clients
are split across devices and the weighted sum over axis 0 becomes a cross-device reduction.

K not divisible by the device count is padded with copies of the last client that carry
weight 0: they compute but never reach the aggregate, the global metrics, or the results
(callers drop the padded rows of per-client outputs). Sampling participants would draw
padded clients, so partial participation needs K divisible by the device count.

Several hosts: every process runs the same program after `jax.distributed.initialize()`;
`jax.devices()` then lists every process's devices, the mesh spans them all, and `to_host`
gathers results (see the README, "Scaling out").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

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


def pad_clients(data, weights, num_devices: int):
    """(data, weights) padded along axis 0 to a multiple of num_devices; pads have weight 0."""
    extra = padded_size(weights.shape[0], num_devices) - weights.shape[0]

    def pad(x):
        return jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)]) if extra else x

    weights = jnp.concatenate([weights, jnp.zeros(extra, weights.dtype)]) if extra else weights
    return jax.tree.map(pad, data), weights


def shard_clients(tree, mesh: Mesh, client_axis: int = 0):
    """Place every leaf with its `client_axis` split over the mesh (the rest replicated).

    Every process holds the whole (host) array and hands each of its devices that device's
    slice, which is how a global array is built with several processes (jax.distributed).
    """
    def place(x):
        spec = [None] * x.ndim
        spec[client_axis] = CLIENT_AXIS
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, NamedSharding(mesh, PartitionSpec(*spec)),
                                            lambda index: host[index])

    return jax.tree.map(place, tree)


def to_host(tree):
    """numpy copies of (possibly sharded) arrays; with several processes, gathered from all."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
