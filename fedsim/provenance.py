"""Where a result came from: the code that computed it and the machine it ran on.

`code_fingerprint(parts)` names the code a cached result depends on: fedsim's version, a
sha256 over the source files of the given parts of the project, and the versions of the
numerical packages. A cache stamped with one fingerprint is stale under another.
`provenance()` is what every results folder records about a run (versions, git commit,
devices, command line); it never imports JAX unless JAX is already loaded.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fedsim", "jax", "jaxlib", "flax", "optax", "numpy", "dp-accounting")

# What each kind of result depends on (paths relative to the project root).
ENGINE = ("fedsim/engine", "fedsim/algorithms", "fedsim/privacy", "fedsim/choices.py",
          "fedsim/errors.py", "fedsim/options.py")
SIMULATOR = ENGINE + ("fedsim/tabular", "fedsim/rl.py")
SWEEPS = SIMULATOR + ("theory", "sweeps")
MOVIELENS = ENGINE + ("fedsim/movielens", "fedsim/hub.py")
IMDB = ENGINE + ("fedsim/imdb", "fedsim/hub.py", "fedsim/rl.py")


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@functools.lru_cache(maxsize=None)
def code_fingerprint(parts: tuple[str, ...]) -> str:
    """"fedsim VERSION; src SHA256[:16]; jax ..., numpy ...": equal only for the same code.

    The hash covers every .py file under each part (path and bytes, in sorted order), so an
    edit anywhere in the code a result depends on changes it, and an edit elsewhere does not.
    """
    digest = hashlib.sha256()
    for part in parts:
        root = PROJECT_ROOT / part
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for path in files:
            digest.update(str(path.relative_to(PROJECT_ROOT)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    packages = ", ".join(f"{p} {version(p)}" for p in PACKAGES[1:] if p != "flax")
    return f"fedsim {version('fedsim')}; src {digest.hexdigest()[:16]}; {packages}"


def git_state() -> dict:
    """The commit of the project's checkout and whether it has uncommitted changes, where the
    code runs from a git checkout (an installed copy has neither)."""
    def git(*args):
        done = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True,
                              text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        if commit is None:
            return {"git_commit": None, "git_dirty": None}
        return {"git_commit": commit, "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def devices() -> dict:
    """The JAX devices, if JAX is loaded (a run has loaded it by the time it finishes)."""
    jax = sys.modules.get("jax")
    if jax is None:
        return {"device_kind": None, "device_count": None}
    found = jax.devices()
    return {"device_kind": found[0].device_kind, "device_platform": found[0].platform,
            "device_count": len(found)}


def provenance() -> dict:
    return {"versions": {p: version(p) for p in PACKAGES},
            "python": platform.python_version(), "platform": platform.platform(),
            "host": socket.gethostname(), "command": list(sys.argv), **git_state()}
