"""Input validation: one clear error, raised before anything is compiled.

Every check names the parameter, the value it was given and what is allowed, so
that a sweep that dies on bad input says why in one line.
"""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """A parameter value that fedsim cannot run with."""

    def __init__(self, name: str, value: Any, allowed: str):
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(f"{name} = {value!r} is not allowed: {allowed}")


class DataError(FileNotFoundError):
    """Missing or corrupt data, with where we looked and what to do."""


def require(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(name, value, allowed)


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    allowed = f"must be an integer >= {lo}" if hi is None else f"must be an integer in [{lo}, {hi}]"
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and value >= lo and (hi is None or value <= hi)
    require(ok, name, value, allowed)
    return value


def check_real(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
               lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real number in an interval, open or closed at each end."""
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    interval = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    require(ok, name, value, f"must be a finite number in {interval}")
    return float(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    require(value in choices, name, value, f"must be one of {', '.join(choices)}")
    return value
