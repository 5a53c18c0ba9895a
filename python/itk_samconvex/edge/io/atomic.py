"""The one way itk-samconvex writes a file: a temporary sibling, then one rename.

Guarantees, for every output of every command and Python function:

* **All or nothing.** The bytes go to ``.samconvex-tmp.<pid>.<random>.<name>`` in the target's
  folder (same file system) and are renamed onto ``<name>`` in one ``os.replace``. A reader
  sees the old file or the complete new one, never a partial one.
* **No debris.** A process killed while writing leaves its temporary sibling behind. The next
  write into that folder deletes temporaries of this pattern whose process is gone (same
  host; a live process's temporaries are never touched, nor is any other file).
* **Inputs are sacred.** A target that is, or resolves to (symlinks followed), one of the
  ``inputs`` given is refused, even with ``overwrite``.
* **No silent replacement.** An existing target is replaced only with ``overwrite``.
* New files get the permissions a plain ``open`` would (0666 minus the umask).

For fault tests (``benchmarks/kill_points.py``): with ``SAMCONVEX_STOP_BEFORE_RENAME=<name>``
in the environment, the process stops itself (SIGSTOP) when the temporary sibling of an
output called ``<name>`` is complete but not yet renamed, the one moment a fast write cannot
be caught from outside; the test then kills it there.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import signal
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ...errors import OutputError

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
TEMP_PREFIX = ".samconvex-tmp."
_TEMP_PATTERN = re.compile(r"^\.samconvex-tmp\.(\d+)\.[0-9a-f]{12}\.")
STOP_BEFORE_RENAME_ENV = "SAMCONVEX_STOP_BEFORE_RENAME"


# ---------------------------------------------------------------------------------------------
# temporary siblings


def default_file_mode() -> int:
    """Permissions of a new file under the current umask (mkstemp alone gives 0600).

    Reads the umask from /proc (Linux) so as not to change it, even briefly, in a
    multi-threaded worker; elsewhere it is read by setting and restoring it.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def temp_sibling(path: Path) -> Path:
    """A fresh temporary name beside ``path`` that ends with ``path``'s own name (so that
    format detection by suffix, e.g. ``.nii.gz``, sees the real suffix)."""
    return path.with_name(f"{TEMP_PREFIX}{os.getpid()}.{uuid.uuid4().hex[:12]}.{path.name}")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporaries of dead processes in ``folder``; return what was deleted."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_PATTERN.match(entry.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    if removed:
        logger.info(
            "removed %d stale temporary file(s) of a killed run in %s: %s",
            len(removed),
            folder,
            ", ".join(p.name for p in removed),
        )
    return removed


# ---------------------------------------------------------------------------------------------
# inputs are never outputs


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when both paths exist and are one file (symlinks followed)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_inputs(target: Path, inputs: Iterable[PathLike | None]) -> None:
    """Raise OutputError when ``target`` is, or resolves to, one of ``inputs``."""
    for source in inputs:
        if source is None:
            continue
        if same_file(target, source):
            raise OutputError(
                f"output {target} is the input {source}; itk-samconvex never writes over an "
                "input, even with --overwrite: choose another output folder (-o) or move the "
                "input elsewhere."
            )


# ---------------------------------------------------------------------------------------------
# the write


def atomic_write(
    path: PathLike,
    write_to: Callable[[Path], None],
    *,
    overwrite: bool = False,
    inputs: Iterable[PathLike | None] = (),
) -> Path:
    """Write ``path`` by calling ``write_to(temporary_path)`` and renaming the result.

    Args:
        path: the target; its folder must exist.
        write_to: writes the complete file to the path it is given.
        overwrite: replace an existing target (else FileExistsError).
        inputs: paths the target must not be (checked with symlinks followed).

    Returns:
        ``path`` as a Path.

    Raises:
        FileExistsError: the target exists and ``overwrite`` is false.
        OutputError: the target is an input, or its folder is missing or not writable.
    """
    path = Path(path)
    inputs = list(inputs)
    refuse_inputs(path, inputs)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} exists; pass --overwrite (overwrite=True) to replace it "
            "or choose another output."
        )
    if not path.parent.is_dir():
        raise OutputError(
            f"cannot write {path}: its folder {path.parent} does not exist; "
            "create it first or choose another output."
        )
    remove_stale_temps(path.parent)
    temp = temp_sibling(path)
    try:
        write_to(temp)
        if not temp.exists():
            raise OutputError(f"writing {path} produced no file (the writer failed silently).")
        os.chmod(temp, default_file_mode())
        if os.environ.get(STOP_BEFORE_RENAME_ENV) == path.name:
            os.kill(os.getpid(), signal.SIGSTOP)
        refuse_inputs(path, inputs)  # again: an input may have been linked there meanwhile
        if path.exists() and not overwrite:
            raise FileExistsError(
                f"{path} appeared while it was being written; pass --overwrite to replace it."
            )
        os.replace(temp, path)
    except PermissionError as error:
        raise OutputError(
            f"cannot write {path}: permission denied ({error.strerror}); choose "
            "a folder you can write to."
        ) from error
    except OSError as error:
        if isinstance(error, FileExistsError | OutputError):
            raise
        if error.errno == errno.ENOSPC:
            raise OutputError(
                f"cannot write {path}: the disk is full; free space or choose "
                "another output folder."
            ) from error
        raise
    finally:
        with contextlib.suppress(OSError):
            if temp.exists():
                os.unlink(temp)
    return path


def write_text(
    path: PathLike, text: str, *, overwrite: bool = False, inputs: Iterable[PathLike | None] = ()
) -> Path:
    """Write UTF-8 text atomically."""

    def write_to(temp: Path) -> None:
        with open(temp, "x", encoding="utf-8", newline="") as handle:
            handle.write(text)

    return atomic_write(path, write_to, overwrite=overwrite, inputs=inputs)


def json_safe(value: Any) -> Any:
    """A JSON-ready copy: numpy scalars and arrays become Python values, NaN/inf None, keys
    strings, paths strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return json_safe(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


def write_json(
    path: PathLike, data: Any, *, overwrite: bool = False, inputs: Iterable[PathLike | None] = ()
) -> Path:
    """Write JSON atomically (indented; NaN and inf written as null)."""
    text = json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n"
    return write_text(path, text, overwrite=overwrite, inputs=inputs)


# ---------------------------------------------------------------------------------------------
# output folders


def make_output_folder(path: PathLike, what: str = "output folder") -> list[Path]:
    """Create ``path`` (and missing parents); return the folders created, outermost first.

    Raises:
        OutputError: with the path, the reason and the fix, for every way this can fail (a
            file in the way, no permission, a read-only or full file system...).
    """
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is" if probe == path else f"lies under {probe}, which is"
        raise OutputError(
            f"cannot use {what} {path}: it {where} a file, not a folder; choose "
            "another -o folder or move that file."
        )
    missing.reverse()
    try:
        for folder in missing:
            folder.mkdir()
    except FileExistsError:
        if not path.is_dir():
            raise OutputError(
                f"cannot use {what} {path}: a file of that name is in the way; "
                "choose another -o folder."
            ) from None
    except PermissionError as error:
        _remove_empty(missing)
        raise OutputError(
            f"cannot create {what} {path}: permission denied in "
            f"{Path(error.filename or path).parent}; choose a folder you can "
            "write to (e.g. under your home folder)."
        ) from error
    except OSError as error:
        _remove_empty(missing)
        reason = error.strerror or str(error)
        fix = {
            errno.EROFS: "the file system is read-only; choose a writable folder",
            errno.ENOSPC: "the disk is full; free space or choose another folder",
            errno.ENOTDIR: "a part of the path is a file; fix the path",
        }.get(error.errno or 0, "choose another -o folder")
        raise OutputError(f"cannot create {what} {path} ({reason}); {fix}.") from error
    if not os.access(path, os.W_OK | os.X_OK):
        _remove_empty(missing)
        raise OutputError(
            f"cannot write into {what} {path}: permission denied; choose a folder you can write to."
        )
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty


@contextlib.contextmanager
def output_folder(path: PathLike, what: str = "output folder") -> Iterator[Path]:
    """Create ``path`` for the block; if the block fails, remove the folders this call
    created when they are still empty (a failed run leaves no new empty folder)."""
    created = make_output_folder(path, what)
    try:
        yield Path(path)
    except BaseException:
        _remove_empty(created)
        raise


__all__ = [
    "TEMP_PREFIX",
    "atomic_write",
    "default_file_mode",
    "json_safe",
    "make_output_folder",
    "output_folder",
    "refuse_inputs",
    "remove_stale_temps",
    "same_file",
    "temp_sibling",
    "write_json",
    "write_text",
]
