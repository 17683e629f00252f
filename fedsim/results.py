"""Result files: atomic writes, tidy CSV (also appended chunk by chunk), JSON and npz.

Who may write a folder is `fedsim.rundir`'s business; this module only writes files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np


def _file_mode() -> int:
    """0666 less the process's umask: what open() would give (mkstemp alone gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=plain_json) + "\n").encode())


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def plain_json(x):
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


Rows = Iterable[Mapping] | Mapping[str, np.ndarray]
"""A CSV's rows: dicts, or columns (name -> equal-length numeric arrays, the fast path)."""


def _csv_bytes(columns: list[str], rows: Rows, header: bool = True) -> bytes:
    if isinstance(rows, Mapping):
        return _table_bytes(columns, rows, header)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([format_value(row[c]) for c in columns])
    return buffer.getvalue().encode()


def _table_bytes(columns: list[str], table: Mapping[str, np.ndarray], header: bool) -> bytes:
    """The bytes the rows' path writes (format_value), from columns: one format string per
    row instead of a dict and a csv.writer call (4x faster on a run's 10^5 client rows)."""
    arrays = [np.asarray(table[c]) for c in columns]
    for name, a in zip(columns, arrays):
        if a.dtype.kind not in "biuf":
            raise TypeError(f"CSV column {name!r}: numeric arrays only (got {a.dtype})")
    template = ",".join("{:.10g}" if a.dtype.kind == "f" else "{}" for a in arrays) + "\n"
    lines = map(template.format, *(a.tolist() for a in arrays))
    return ((",".join(columns) + "\n" if header else "") + "".join(lines)).encode()


def concat_tables(tables: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Column tables one after the other (same columns)."""
    return {c: np.concatenate([t[c] for t in tables]) for c in tables[0]} if tables else {}


def write_csv(path: Path, columns: list[str], rows: Rows) -> None:
    atomic_write_bytes(path, _csv_bytes(columns, rows))


def read_csv_rows(path: Path) -> list[dict]:
    """Rows of a CSV written here, numbers parsed back (ints as int, the rest as float)."""
    def parse(text):
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    with open(path, newline="") as f:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def append_csv(path: Path, columns: list[str], rows: Rows, keep: int) -> int:
    """Cut `path` back to its first `keep` bytes (what a saved checkpoint vouches for), append
    `rows` (with the header if the file is new), flush to disk; return the new length.

    A run killed between an append and its next checkpoint leaves rows that the resumed run
    cuts off and writes again, so the file ends byte-identical to an uninterrupted run's.
    """
    data = _csv_bytes(columns, rows, header=keep == 0)
    with open(path, "r+b" if Path(path).exists() else "wb") as f:
        f.truncate(keep)
        f.seek(keep)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def write_npz(path: Path, arrays: Mapping) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


T_975 = {1: 12.71, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def mean_ci(values) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval over seeds (0 for one seed; the normal
    quantile past 10 seeds)."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(T_975.get(len(v) - 1, 1.96) * v.std(ddof=1) / np.sqrt(len(v)))
