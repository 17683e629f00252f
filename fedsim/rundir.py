"""A results folder belongs to one run, from its first moment to its last.

`RunFolder(out, config)` used as a context manager:
  1. creates `out` (or says in one line why it cannot), and takes an exclusive lock on
     `out/.lock` (`flock`) for the life of the run: a second run on the folder, with the
     same or another config, is refused naming the holder;
  2. writes `config.json` (the config plus a run id) atomically before any work, or, if the
     folder already holds a run, accepts it only with the same config (then the run
     resumes from what was saved) and refuses anything else;
  3. records `provenance.json`: versions, git commit, devices, command line, and one
     attempt per start with its start and end times and how it ended.
A lock left by a process that died (kill -9, a crash) is detected, since the kernel drops a
dead process's `flock` but its holder note stays in the file, and reported as such, never
silently taken over.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
import uuid
from pathlib import Path

from fedsim import provenance as prov
from fedsim.errors import ConfigError
from fedsim.interrupt import Interrupted
from fedsim.results import plain_json, write_json

CONFIG, PROVENANCE, LOCK = "config.json", "provenance.json", ".lock"
OWN_FILES = {CONFIG, PROVENANCE, LOCK}


def new_run_id() -> str:
    return prov.now().replace(":", "").replace("-", "") + "-" + uuid.uuid4().hex[:8]


def _differences(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in set(a) | set(b):
            yield from _differences(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b:
        yield prefix.rstrip(".")


def read_config(path: Path) -> dict:
    """A saved config.json, without its run id (what defines the run)."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError("config", str(path), f"must be a readable config.json ({error})")
    if not isinstance(saved, dict):
        raise ConfigError("config", str(path), "must hold a JSON object")
    saved.pop("run_id", None)
    return saved


class RunFolder:
    """The folder of one run (see the module docstring). Attributes once entered: path,
    run_id, config, resumed (the folder already held this run), stale (holder note of a
    run that died there, or None)."""

    def __init__(self, out: Path, config: dict, name: str = "out"):
        self.path, self.name = Path(out), name
        self.config = json.loads(json.dumps(config, default=plain_json))
        self.run_id, self.resumed, self.stale, self._fd = None, False, None, None

    def _refuse(self, allowed: str):
        raise ConfigError(self.name, str(self.path), allowed)

    def __enter__(self) -> "RunFolder":
        out = self.path
        if out.exists() and not out.is_dir():
            self._refuse("must be a folder (a file of that name exists)")
        try:
            out.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            self._refuse(f"cannot be created or written ({error.strerror or error})")
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = self._holder()
            os.close(self._fd)
            self._fd = None
            if error.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                self._refuse(f"cannot be locked ({error.strerror})")
            self._refuse("is in use by another run (" + _describe(holder) + "): wait for it "
                         "to finish or choose another folder")
        try:
            self._take()
        except BaseException:
            self._release()
            raise
        return self

    def _holder(self) -> dict | None:
        try:
            text = os.pread(self._fd, 1 << 16, 0).decode()
            return json.loads(text) if text.strip() else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {"note": "unreadable lock note"}

    def _take(self) -> None:
        out = self.path
        self.stale = self._holder()   # we hold the lock, so its last holder is gone
        if self.stale:   # reported, never taken over silently
            print(f"fedsim: note: {out} was left by a run that stopped without finishing "
                  f"({_describe(self.stale)}); resuming from what it saved", file=sys.stderr)
        existing = out / CONFIG
        if existing.exists():
            previous = read_config(existing)
            if previous != self.config:
                differing = sorted(_differences(previous, self.config))
                differing = ", ".join(differing[:6]) + (
                    f" and {len(differing) - 6} more" if len(differing) > 6 else "")
                self._refuse("must be empty or hold a run with the same config; it holds a "
                             f"different run (differs in: {differing})")
            self.run_id = json.loads(existing.read_text()).get("run_id") or new_run_id()
            self.resumed = True
        else:
            foreign = sorted(p.name for p in out.iterdir() if p.name not in OWN_FILES)
            if foreign:
                self._refuse("must be empty or hold a fedsim run; it holds other files "
                             f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''})")
            self.run_id = new_run_id()
            write_json(existing, {"run_id": self.run_id, **self.config})
        started = prov.now()
        note = {"pid": os.getpid(), "host": prov.socket.gethostname(), "run_id": self.run_id,
                "started": started, "command": " ".join(sys.argv)}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(note).encode(), 0)
        os.fsync(self._fd)
        record = self._provenance()
        record.setdefault("run_id", self.run_id)
        record.update({k: v for k, v in prov.provenance().items() if k != "command"})
        record.setdefault("attempts", []).append(
            {"pid": note["pid"], "host": note["host"], "command": list(sys.argv),
             "started": started, "ended": None, "status": "running",
             **({"after_stale_lock": self.stale} if self.stale else {})})
        write_json(out / PROVENANCE, record)

    def _provenance(self) -> dict:
        try:
            return json.loads((self.path / PROVENANCE).read_text())
        except (OSError, json.JSONDecodeError):
            return {}


    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            status = "complete"
        elif issubclass(exc_type, Interrupted):
            status = "interrupted"
        else:
            status = f"failed: {exc_type.__name__}: {exc}"[:500]
        try:
            record = self._provenance()
            if record.get("attempts"):
                record["attempts"][-1].update({"ended": prov.now(), "status": status,
                                               **prov.devices()})
                write_json(self.path / PROVENANCE, record)
        finally:
            self._release(clear=True)

    def _release(self, clear: bool = False) -> None:
        if self._fd is None:
            return
        if clear:   # a clean end: no holder note, so the next run knows nobody died here
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _describe(holder: dict | None) -> str:
    if not holder:
        return "holder unknown"
    if "pid" not in holder:
        return holder.get("note", "holder unknown")
    return (f"pid {holder['pid']} on {holder['host']}, run {holder['run_id']}, started "
            f"{holder['started']}: {holder['command']}")
