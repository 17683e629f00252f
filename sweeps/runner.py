"""A resumable sweep: cells run in order, each finished cell is one atomically written file.

Killed at any moment (even kill -9) or interrupted (Ctrl-C stops after the cell in
progress), a sweep loses at most that cell: on the next run with the same config the
finished cells are read back and the rest computed, so no row is lost or duplicated.
Every cell records the fingerprint of the code that computed it (fedsim.provenance); a cell
from other code is computed again, or with `reuse_cells` reused and counted as such in the
summary. metrics.csv and summary.json are rebuilt from the cell files, and the folder
belongs to one sweep (fedsim.rundir).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fedsim.interrupt import stop_if_requested
from fedsim.provenance import SWEEPS, code_fingerprint
from fedsim.results import read_json, write_csv, write_json
from fedsim.rundir import RunFolder
from theory.checks import Verdict

CELLS = "cells"


@dataclass(frozen=True)
class Sweep:
    """name; config (JSON-able, everything that defines the results); cells (dicts with an
    "id"); run_cell(config, cell) -> {"rows": [...], "info": {...}}; summarize(config,
    {id: result}) -> (verdicts, extra summary dict); columns of metrics.csv."""

    name: str
    config: dict
    cells: list[dict]
    run_cell: Callable[[dict, dict], dict]
    summarize: Callable[[dict, dict], tuple[list[Verdict], dict]]
    columns: list[str]


def run_sweep(sweep: Sweep, out: Path, progress: bool = True, reuse_cells: bool = False) -> dict:
    """Run (or resume) `sweep` in `out`; returns its summary, with how many cells were
    computed this run, reused, and reused although other code computed them."""
    with RunFolder(Path(out), {"sweep": sweep.name, **sweep.config}) as folder:
        return _run(sweep, folder.path, progress, reuse_cells)


def _run(sweep: Sweep, out: Path, progress: bool, reuse_cells: bool) -> dict:
    from tqdm.auto import tqdm

    code = code_fingerprint(SWEEPS)
    cell_dir = out / CELLS
    cell_dir.mkdir(exist_ok=True)
    results, computed, foreign = {}, 0, 0
    start = time.perf_counter()
    with tqdm(sweep.cells, desc=f"sweep {sweep.name}", unit="cell", disable=not progress) as bar:
        for cell in bar:
            path = cell_dir / f"{cell['id']}.json"
            saved = read_json(path) if path.exists() else None
            if saved is not None and (saved.get("code") == code or reuse_cells):
                foreign += saved.get("code") != code
                results[cell["id"]] = saved
                continue
            bar.set_postfix_str(cell["id"])
            result = {**sweep.run_cell(sweep.config, cell), "code": code}
            write_json(path, result)
            results[cell["id"]] = result
            computed += 1
            stop_if_requested(f"sweep {sweep.name} stopped after cell {cell['id']}; finished "
                              f"cells are saved in {out}; run the same command to resume")
    rows = [row for cell in sweep.cells for row in results[cell["id"]]["rows"]]
    write_csv(out / "metrics.csv", sweep.columns, rows)
    verdicts, extra = sweep.summarize(sweep.config, results)
    summary = {"sweep": sweep.name, "claims": [v.as_dict() for v in verdicts],
               "passed": all(v.passed for v in verdicts), "cells": len(sweep.cells),
               "cells_computed_this_run": computed,
               "cells_reused": len(sweep.cells) - computed,
               "cells_reused_from_other_code": foreign, "code": code, **extra}
    write_json(out / "summary.json", summary)
    summary["seconds_this_run"] = time.perf_counter() - start
    return summary
