"""Memory a run will need, estimated from its sizes before anything is allocated.

A run whose estimate exceeds 80% of this machine's memory is refused with the estimate, the
machine's memory and the options that drive the largest part, instead of a numpy or XLA
allocation traceback (or minutes of swapping) later.
"""

from __future__ import annotations

import os

FLOAT = 4       # float32 bytes
FRACTION = 0.8  # of physical memory a run may plan to use


class TooLarge(ValueError):
    """A run that cannot fit in this machine's memory."""


def machine_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PB"


def check_fits(parts: list[tuple[str, float, str]], limit: float | None = None) -> float:
    """parts: (what, bytes, the options that set its size). Raises TooLarge naming the largest
    part if the total exceeds `limit` (default 80% of this machine's memory); returns the total."""
    total = float(sum(b for _, b, _ in parts))
    available = machine_memory()
    limit = FRACTION * available if limit is None else limit
    if total > limit:
        what, size, options = max(parts, key=lambda p: p[1])
        raise TooLarge(f"the run needs about {human(total)} of memory, more than this machine "
                       f"can give it ({human(limit)} of {human(available)}); the largest part is "
                       f"{what} ({human(size)}): reduce {options}")
    return total
