"""The client axis sharded over a device mesh (jax.sharding; XLA's SPMD partitioner).

Every array with a leading client axis (client data, private state, the parameters each
client holds, aggregation weights) is placed with `NamedSharding(mesh, P("clients"))`; the
global parameters are replicated. The round function needs no change: vmaps over clients
are split across devices and the weighted sum over axis 0 becomes a cross-device reduction.

K not divisible by the device count is padded with copies of the last client that carry
weight 0: they compute but never reach the aggregate, the global metrics, or the results
(callers drop the padded rows of per-client outputs). Sampling participants would draw
padded clients, so partial participation needs K divisible by the device count.
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
    """Place every leaf with its `client_axis` split over the mesh (the rest replicated)."""
    def place(x):
        spec = [None] * x.ndim
        spec[client_axis] = CLIENT_AXIS
        return jax.device_put(x, NamedSharding(mesh, PartitionSpec(*spec)))

    return jax.tree.map(place, tree)


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
