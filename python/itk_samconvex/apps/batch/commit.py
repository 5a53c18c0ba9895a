"""The on-disk protocol of a batch: attempt folders, the atomic commit, the output lock.

* A task writes into its own attempt folder ``OUT/.samconvex-tmp/<name>.<id>/`` (``report.json``
  last) and renames the folder to ``OUT/<name>`` in one step. ``OUT/<name>`` therefore either
  does not exist or holds one complete set of outputs; a worker killed mid-write leaves only
  an attempt folder, which the next run removes (and the finishing attempt of the same pair
  counts as a lost attempt).
* When two attempts of the same pair race (Dask reschedules a task whose worker died, while
  the old worker still runs), the first rename wins and the loser discards its folder.
* A pair whose folder holds a readable ``report.json`` and the outputs it lists is complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any

from ...errors import SAMConvexError
from ..outputs import OUTPUT_NAMES

#: Hidden folder of in-progress attempts (same file system as the outputs: renames are atomic).
TMP_DIR = ".samconvex-tmp"
#: Lock file that keeps two batch runs from writing into one output folder.
LOCK_FILE = ".samconvex-batch.lock"
#: What an attempt folder records about its worker (for lost-attempt notes).
ATTEMPT_FILE = "attempt.json"


def attempt_folders(out: Path, name: str) -> list[Path]:
    """The attempt folders of pair ``name`` present in ``OUT/.samconvex-tmp``."""
    pattern = re.compile(rf"^{re.escape(name)}\.[0-9a-f]{{12}}$")
    folder = out / TMP_DIR
    try:
        return sorted(p for p in folder.iterdir() if pattern.match(p.name) and p.is_dir())
    except OSError:
        return []


def read_attempt(folder: Path) -> dict[str, Any]:
    """What a (possibly lost) attempt recorded about itself, or {}."""
    try:
        data = json.loads((folder / ATTEMPT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_complete(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a finished pair.

    Finished means ``report.json`` (written last) parses and every output it lists exists
    in ``folder`` (matched by file name, so a moved output folder still counts).
    """
    report_path = Path(folder) / OUTPUT_NAMES["report"]
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    outputs = report.get("outputs") if isinstance(report, dict) else None
    if not isinstance(outputs, dict) or "transform" not in outputs:
        return False
    return all((Path(folder) / Path(str(p)).name).is_file() for p in outputs.values())


def commit_attempt(attempt: Path, final: Path, overwrite: bool = False) -> bool:
    """Move a finished attempt folder to its final place in one rename.

    Args:
        attempt: the complete attempt folder (inside ``OUT/.samconvex-tmp``).
        final: ``OUT/<name>``.
        overwrite: replace a complete ``final`` (else a complete ``final`` wins).

    Returns:
        True when ``attempt`` became ``final``; False when another complete attempt was
        already in place (``attempt`` is then deleted).
    """
    aside = attempt.with_name(f"{attempt.name}.replaced")

    def set_aside() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.rename(final, aside)
        shutil.rmtree(aside, ignore_errors=True)

    for _ in range(3):
        if overwrite and final.exists():
            set_aside()
        try:
            os.rename(attempt, final)  # fails on a non-empty directory: never merges
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            if not overwrite and is_complete(final):
                shutil.rmtree(attempt, ignore_errors=True)
                return False
            set_aside()  # an incomplete folder (not a finished pair) is in the way
            continue
        return True
    raise OSError(f"could not move {attempt} to {final}: another process keeps replacing it")


class OutputLock:
    """Exclusive advisory lock on ``OUT/.samconvex-batch.lock`` (POSIX ``flock``)."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_FILE
        self.handle: Any = None

    def __enter__(self) -> OutputLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            return self
        self.handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            raise SAMConvexError(
                f"another `samconvex batch` is writing into {self.path.parent} (it holds "
                f"{self.path}); wait for it to finish or choose another -o folder."
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"{socket.gethostname()} pid {os.getpid()}\n")
        self.handle.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()  # closing releases the flock


def remove_attempts(out: Path) -> None:
    """Delete every attempt folder (only while holding the lock, with no task running)."""
    shutil.rmtree(out / TMP_DIR, ignore_errors=True)


__all__ = [
    "ATTEMPT_FILE",
    "LOCK_FILE",
    "TMP_DIR",
    "OutputLock",
    "attempt_folders",
    "commit_attempt",
    "is_complete",
    "read_attempt",
    "remove_attempts",
]
