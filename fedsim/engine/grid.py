"""Hyperparameter grids as nested vmaps: one compiled program for a whole grid.

A run is a pure function of named arguments (the PureJaxRL pattern), so a grid over seeds,
lambda values, step sizes, ... is `vmap` once per grid axis. `grid_vmap` builds the nest
from a declaration of which arguments vary along which axes; an argument that does not
vary along an axis is broadcast, not copied, so (for instance) the clients' transition
tensors are stored once for a whole seeds x lambda grid.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import jax

from fedsim.errors import require


def grid_vmap(fn: Callable, axes: Sequence[str], varies: Mapping[str, Sequence[str]]) -> Callable:
    """Map keyword-only `fn` over a grid with the named `axes` (outermost first).

    varies[arg] lists the axes argument `arg` varies along, in the order of `axes`; such an
    argument carries one leading dimension per listed axis. Results get one leading
    dimension per grid axis, in the order of `axes`.

        run = grid_vmap(one_run, ("lam", "seed"), {"lam": ["lam"], "key": ["seed"]})
        run(lam=lams (8, K), key=keys (16,), data=data)   # -> leaves with shape (8, 16, ...)
    """
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

    return nest(0)
