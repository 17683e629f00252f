"""A resumable sweep: cells run in order, each finished cell is one atomically written file.

Killed at any moment (even kill -9), a sweep loses at most the cell in progress: on the next
run with the same config the finished cells are read back and the rest computed, so no row
is lost or duplicated. metrics.csv and summary.json are rebuilt from the cell files, and a
folder holding a sweep with another config is refused (fedsim.results.prepare_out_dir).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fedsim.results import prepare_out_dir, write_csv, write_json
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


def run_sweep(sweep: Sweep, out: Path, progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    config = {"sweep": sweep.name, **sweep.config}
    out = prepare_out_dir(Path(out), config)
    write_json(out / "config.json", config)
    cell_dir = out / CELLS
    cell_dir.mkdir(exist_ok=True)
    results, computed = {}, 0
    start = time.perf_counter()
    bar = tqdm(sweep.cells, desc=f"sweep {sweep.name}", unit="cell", disable=not progress)
    for cell in bar:
        path = cell_dir / f"{cell['id']}.json"
        if path.exists():
            results[cell["id"]] = json.loads(path.read_text())
            continue
        bar.set_postfix_str(cell["id"])
        result = sweep.run_cell(sweep.config, cell)
        write_json(path, result)
        results[cell["id"]] = result
        computed += 1
    bar.close()
    rows = [row for cell in sweep.cells for row in results[cell["id"]]["rows"]]
    write_csv(out / "metrics.csv", sweep.columns, rows)
    verdicts, extra = sweep.summarize(sweep.config, results)
    summary = {"sweep": sweep.name, "claims": [v.as_dict() for v in verdicts],
               "passed": all(v.passed for v in verdicts), "cells": len(sweep.cells),
               "cells_computed_this_run": computed, **extra}
    write_json(out / "summary.json", summary)
    summary["seconds_this_run"] = time.perf_counter() - start
    return summary
