"""Saved configurations: `load_config("DIR/config.json")` gives back the run's config object.

Every run writes its config as JSON with a "task" field (and a run id, which is not part of
the configuration); `fedsim run --config DIR/config.json --out NEW` re-runs it exactly.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from fedsim.errors import ConfigError
from fedsim.rundir import read_config


def _config_classes() -> dict:
    from fedsim.imdb.config import IMDbRunConfig
    from fedsim.movielens.config import MovieLensRunConfig
    from fedsim.tabular.config import TabularRunConfig

    return {"tabular": TabularRunConfig, "movielens": MovieLensRunConfig, "imdb": IMDbRunConfig}


def from_dict(cls, values: dict, where: str = "config"):
    """A (nested, frozen) config dataclass from its `dataclasses.asdict` form; JSON lists
    become tuples. Unknown or missing keys are a ConfigError naming them."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(where, unknown, f"are not fields of {cls.__name__}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, f"{where}.{name}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def load_config(path: str | Path):
    """The TabularRunConfig, MovieLensRunConfig or IMDbRunConfig saved in a run's config.json."""
    saved = read_config(Path(path))
    task = saved.pop("task", None)
    classes = _config_classes()
    if task not in classes:
        raise ConfigError("config", str(path), f"must be the config.json of a `fedsim run` "
                          f"(task {' or '.join(classes)}); it has task {task!r}")
    return from_dict(classes[task], saved)
