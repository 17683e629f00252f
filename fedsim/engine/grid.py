"""Hyperparameter grids as nested vmaps: one compiled program for a whole grid.

A run is a pure function of named arguments (the PureJaxRL pattern), so a grid over seeds,
lambda values, step sizes, ... is `vmap` once per grid axis. `grid_vmap` builds the nest
from a declaration of which arguments vary along which axes; an argument that does not
vary along an axis is broadcast, not copied, so (for instance) the clients' transition
tensors are stored once for a whole seeds x lambda grid.

With `cells_per_block`, the cells instead run in blocks: the grid is flattened to one axis
of cells, `lax.map` runs `cells_per_block` of them at a time (vmapped), and the results
are reshaped back. This is `--client-block` for grids: a block's working set stays the size
of one run of cells_per_block x K clients (each block gathers its cells' arguments: nothing is
copied per cell), so a grid of G distinct cells costs what one run
of G K clients in the same blocks costs, instead of what G K clients at once cost.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fedsim.errors import require


def grid_vmap(fn: Callable, axes: Sequence[str], varies: Mapping[str, Sequence[str]],
              cells_per_block: int | None = None) -> Callable:
    """Map keyword-only `fn` over a grid with the named `axes` (outermost first).

    varies[arg] lists the axes argument `arg` varies along, in the order of `axes`; such an
    argument carries one leading dimension per listed axis. Results get one leading
    dimension per grid axis, in the order of `axes`.

        run = grid_vmap(one_run, ("lam", "seed"), {"lam": ["lam"], "key": ["seed"]})
        run(lam=lams (8, K), key=keys (16,), data=data)   # -> leaves with shape (8, 16, ...)

    cells_per_block: run the cells in blocks of this many (see above); None: all at once.
    """
    if cells_per_block is not None:
        require(isinstance(cells_per_block, int) and cells_per_block >= 1, "cells_per_block",
                cells_per_block, "must be a positive integer or None")
    for arg, along in varies.items():
        unknown = [a for a in along if a not in axes]
        require(not unknown, f"varies[{arg!r}]", list(along), f"must name axes among {list(axes)}")
        require(list(along) == [a for a in axes if a in along], f"varies[{arg!r}]", list(along),
                f"must list its axes in the order {list(axes)}")

    def nest(level: int) -> Callable:
        if level == len(axes):
            return fn
        inner, axis = nest(level + 1), axes[level]

        def mapped(**kwargs):
            swept = {k: v for k, v in kwargs.items() if axis in varies.get(k, ())}
            fixed = {k: v for k, v in kwargs.items() if k not in swept}
            require(bool(swept), "axes", axis, "must be varied by at least one argument")
            return jax.vmap(lambda swept: inner(**fixed, **swept))(swept)

        return mapped

    return nest(0) if cells_per_block is None else _in_blocks(fn, axes, varies, cells_per_block)


def _in_blocks(fn: Callable, axes: Sequence[str], varies: Mapping[str, Sequence[str]],
               cells_per_block: int) -> Callable:
    def mapped(**kwargs):
        swept = {k: v for k, v in kwargs.items() if varies.get(k)}
        fixed = {k: v for k, v in kwargs.items() if k not in swept}
        sizes = {axis: jax.tree.leaves(swept[arg])[0].shape[i]
                 for arg, along in varies.items() if arg in swept
                 for i, axis in enumerate(along)}
        missing = [a for a in axes if a not in sizes]
        require(not missing, "axes", missing, "must be varied by at least one argument")
        shape = tuple(sizes[a] for a in axes)
        # The cells are their grid indices; each block gathers its cells' arguments, so an
        # argument is stored once, not once per cell (an instance's P for every seed).
        index = jnp.stack(jnp.unravel_index(jnp.arange(int(np.prod(shape))), shape), axis=-1)

        def cell(i):
            own = {k: jax.tree.map(lambda leaf, k=k: leaf[tuple(i[axes.index(a)]
                                                                for a in varies[k])], v)
                   for k, v in swept.items()}
            return fn(**fixed, **own)

        out = jax.lax.map(cell, index, batch_size=cells_per_block)
        return jax.tree.map(lambda x: x.reshape(shape + x.shape[1:]), out)

    return mapped
