"""Command-line options generated from the config dataclasses: one source of truth.

A config field that the command line sets is declared with `option(...)`: its flag, help,
type, choices and argparse group live beside its default, and `add_options` turns a
dataclass's fields into arguments, `from_args` turns parsed arguments back into the
dataclass. Why a small generator rather than tyro: the flags keep their established names,
short forms and one-line errors (tests pin them), nested configs share one flat namespace
(`--clients`, not `--instance.num-clients`), and `--help` stays free of JAX and of a new
dependency. Validation stays in each config's `validate()`, called once at the boundary.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any


_OURS = ("flag", "short", "group", "convert", "cli_default")


def option(default: Any, help: str, *, flag: str | None = None, short: str | None = None,
           group: str | None = None, convert=None, cli_default: Any = dataclasses.MISSING,
           **argparse_kwargs) -> Any:
    """A dataclass field set by `--flag` (default: the field name with dashes), in the
    argparse group titled `group`. convert: applied to a parsed value that is not None
    before it reaches the dataclass; cli_default: the command line's default when it differs
    from the field's (e.g. None for "derived from another option"). Other keywords (type,
    choices, metavar, nargs, action, dest) go to argparse's add_argument; dest defaults to
    the field name."""
    meta = {"flag": flag, "short": short, "group": group, "help": help, "convert": convert,
            "cli_default": cli_default, **argparse_kwargs}
    return dataclasses.field(default=default, metadata={"cli": meta})


FLAG = argparse.BooleanOptionalAction   # --name / --no-name


def _options(cls):
    return [(f, f.metadata["cli"]) for f in dataclasses.fields(cls) if "cli" in f.metadata]


def flag_of(field: dataclasses.Field) -> str:
    return field.metadata["cli"]["flag"] or "--" + field.name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser, cls, groups: dict | None = None) -> dict:
    """Add an argument for every option of `cls` (in field order) to `parser`, in the argparse
    group each names (created on first use and kept in `groups`, so that several configs can
    share one). Returns the groups."""
    groups = {} if groups is None else groups
    for field, meta in _options(cls):
        title = meta["group"]
        if title not in groups:
            groups[title] = parser.add_argument_group(title) if title else parser
        names = [flag_of(field)] + ([meta["short"]] if meta["short"] else [])
        kwargs = {k: v for k, v in meta.items() if k not in _OURS}
        kwargs.setdefault("dest", field.name)
        if "choices" not in kwargs and kwargs.get("action") not in ("store_true", FLAG):
            kwargs.setdefault("metavar", flag_of(field)[2:].upper().replace("-", "_"))
        kwargs["default"] = (field.default if meta["cli_default"] is dataclasses.MISSING
                             else meta["cli_default"])
        groups[title].add_argument(*names, **kwargs)
    return groups


def from_args(cls, args: argparse.Namespace, **given):
    """cls built from the parsed arguments of its options; `given` supplies the other fields
    (nested configs) or overrides."""
    values = {}
    for field, meta in _options(cls):
        value = getattr(args, meta.get("dest", field.name))
        values[field.name] = meta["convert"](value) if meta["convert"] and value is not None \
            else value
    return cls(**{**values, **given})


# ---- argument types (their __name__ is what argparse's error says was expected) ----------

def count(text: str) -> int:
    """An integer, also written as 1e6 (the sizes of large runs usually are)."""
    try:
        return int(text)
    except ValueError:
        value = float(text)   # ValueError here: argparse reports "invalid integer value"
        if not value.is_integer():
            raise ValueError(text)
        return int(value)


def step_size(text: str):
    return text if text == "mei" else float(text)


def weighting(text: str):
    return text if text in ("uniform", "samples") else [float(w) for w in text.split(",")]


def numbers(text: str) -> float | tuple[float, ...]:
    values = tuple(float(v) for v in text.split(","))
    return values[0] if len(values) == 1 else values


count.__name__ = "integer"
numbers.__name__ = weighting.__name__ = "list of numbers"
step_size.__name__ = 'number or "mei"'
