"""Results folders: atomic writes, tidy CSV, and one run per folder."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from fedsim.errors import ConfigError

CONFIG = "config.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_plain) + "\n").encode())


def _plain(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"cannot write {type(x).__name__} to JSON")


def format_value(x) -> str:
    """Floats with 10 significant digits: stable bytes for equal runs, enough for gaps."""
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.10g}"
    return str(x)


def write_csv(path: Path, columns: list[str], rows: Iterable[Mapping]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_value(row[c]) for c in columns])
    atomic_write_bytes(path, buffer.getvalue().encode())


def write_npz(path: Path, arrays: Mapping) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def prepare_out_dir(out: Path, config: dict) -> Path:
    """Create `out`, or accept it if it holds this very run; refuse anything else.

    Raises ConfigError (before any compilation) if the folder holds a run with another
    config, or files that are not a fedsim run.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError("out", str(out), "must be a folder (a file of that name exists)")
    config = json.loads(json.dumps(config, default=_plain))
    existing = out / CONFIG
    if existing.exists():
        previous = json.loads(existing.read_text())
        if previous != config:
            differing = sorted(_differences(previous, config))
            raise ConfigError("out", str(out), "must be empty or hold a run with the same config; "
                              f"it holds a different run (differs in: {', '.join(differing)})")
    elif out.exists() and any(out.iterdir()):
        raise ConfigError("out", str(out), "must be empty or hold a fedsim run; it holds other files")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _differences(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in set(a) | set(b):
            yield from _differences(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b:
        yield prefix.rstrip(".")
