"""A run's state on disk: any pytree of arrays (PRNG keys included), saved atomically.

`save_state(path, tree, meta)` writes one npz (leaves as arrays, `meta` as JSON);
`load_state(path, like)` reads it back into the structure, shapes, dtypes and device
placement of `like` (the freshly initialised state of the same run), or returns None with
the reason when the file does not fit it.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from fedsim.results import write_npz

_META = "__meta__"


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def save_state(path: Path, tree, meta: dict) -> None:
    leaves = jax.tree.leaves(tree)
    arrays = {f"leaf{i}": np.asarray(jax.random.key_data(x) if _is_key(x) else x)
              for i, x in enumerate(leaves)}
    arrays[_META] = np.asarray(json.dumps(meta))
    write_npz(path, arrays)


def load_state(path: Path, like) -> tuple[object, dict] | tuple[None, str]:
    """(state, meta), or (None, why it cannot be used)."""
    try:
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in saved.files}
    except (OSError, ValueError, EOFError) as error:
        return None, f"unreadable ({error})"
    meta = json.loads(str(arrays.pop(_META, "{}")))
    leaves, treedef = jax.tree.flatten(like)
    if len(arrays) != len(leaves):
        return None, "holds another state structure"
    restored = []
    for i, ref in enumerate(leaves):
        value = arrays[f"leaf{i}"]
        if _is_key(ref):
            value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(ref))
        if value.shape != ref.shape or value.dtype != ref.dtype:
            return None, f"holds leaf {i} as {value.dtype}{value.shape}, not {ref.dtype}{ref.shape}"
        restored.append(jax.device_put(value, ref.sharding))
    return jax.tree.unflatten(treedef, restored), meta
