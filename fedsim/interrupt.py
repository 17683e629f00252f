"""Ctrl-C and SIGTERM stop a run at its next safe point, never in the middle of anything.

`install()` replaces Python's KeyboardInterrupt with a flag: compilation, a device call or
an atomic write in progress finishes undisturbed (an interrupt landing inside XLA's
compiler could crash the process). Long loops call `stop_if_requested(where)` between
pieces of work that have been saved, and the command line turns the `Interrupted` it
raises into one line and exit status 130. A second Ctrl-C stops at once, losing only the
piece in progress.
"""

from __future__ import annotations

import os
import signal

_requested: int | None = None


class Interrupted(Exception):
    """Raised at a safe point after Ctrl-C or SIGTERM; its message says what was kept."""


def _handler(signum, frame):
    global _requested
    if _requested is not None:   # the second one: stop now
        os.write(2, b"fedsim: interrupted again: stopped at once; what was saved is kept\n")
        os._exit(130)
    _requested = signum


def install() -> dict:
    """Defer SIGINT and SIGTERM to the next safe point (main thread only); a request that
    arrived under an earlier install() stays pending. Returns the handlers it replaced."""
    return {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}


def restore(previous: dict) -> None:
    """Put back the handlers install() replaced and forget any request."""
    global _requested
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    _requested = None


def requested() -> bool:
    return _requested is not None


def stop_if_requested(kept: str) -> None:
    """At a safe point: raise Interrupted(kept) if a stop was requested. `kept` says what is
    saved and how to go on, e.g. "stopped after round 40 of 100; re-run to resume"."""
    if _requested is not None:
        raise Interrupted(kept)
