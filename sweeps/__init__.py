"""Sweep drivers: `fedsim sweep rate|clients|tradeoff|fedkl|all|privacy [--quick] [--out DIR]`
("all" is the four theory sweeps; privacy needs the `privacy` extra, dp-accounting)."""

from __future__ import annotations

from pathlib import Path

from fedsim.results import write_json
from fedsim.rundir import RunFolder

SWEEPS = ("rate", "clients", "tradeoff", "fedkl")


def make_sweep(name: str, quick: bool):
    if name == "rate":
        from sweeps.rate import make_sweep as make
    elif name == "clients":
        from sweeps.clients import make_sweep as make
    elif name == "tradeoff":
        from sweeps.tradeoff import make_sweep as make
    elif name == "fedkl":
        from sweeps.fedkl import make_sweep as make
    elif name == "privacy":
        from sweeps.privacy import make_sweep as make
    else:
        raise ValueError(f"unknown sweep {name!r}")
    return make(quick)


def run_named(name: str, quick: bool, out: Path, progress: bool = True,
              reuse_cells: bool = False) -> dict:
    """Run one sweep, or with name "all" each into out/<name> (rate, clients, tradeoff, fedkl)."""
    from sweeps.runner import run_sweep

    if name != "all":
        return {name: run_sweep(make_sweep(name, quick), out, progress, reuse_cells)}
    with RunFolder(Path(out), {"sweep": "all", "quick": quick}) as folder:
        summaries = {n: run_sweep(make_sweep(n, quick), folder.path / n, progress, reuse_cells)
                     for n in SWEEPS}
        write_json(folder.path / "summary.json",
                   {"passed": all(s["passed"] for s in summaries.values()),
                    "claims": {n: s["claims"] for n, s in summaries.items()}})
    return summaries
