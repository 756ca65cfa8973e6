"""Crash-safe file writes: write to a temporary file in the same folder, fsync, then rename over the target.

A reader (or a sweep restarted after SIGKILL) sees either the old file or the new one, never half of one.
A write that fails raises WriteError, one line naming the file ("disk full writing <path>"), whatever the writer.
A writer holds a lock on its temporary file until the rename, so that the temporaries a killed writer left behind
(`.<name>.*.tmp`) can be told from live ones and removed (`drop_stale_temps`).
"""

import errno
import fcntl
import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# A temporary file younger than this may belong to a writer between mkstemp and its lock: never removed.
STALE_AFTER_S = 5.0


class WriteError(OSError):
    """A file that could not be written, said in one line that names it."""

    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(error.errno, error.strerror or str(error), str(path))
        # Disk full or over quota: the same write succeeds once space is freed, so a rerun should retry it.
        self.transient = error.errno in DISK_FULL

    def __str__(self) -> str:
        if self.transient:
            return f"disk full writing {self.filename}"
        return f"cannot write {self.filename} ({self.strerror})"


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    try:
        _write_then_rename(path, write)
    except OSError as error:
        raise WriteError(path, error) from error


def _write_then_rename(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    drop_stale_temps(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _try_lock(fd)  # held until fd is closed: marks the temporary as live
        # mkstemp creates the file 0600; results are meant to be read by others (a shared cluster folder).
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _try_lock(fd: int) -> bool:
    """Whether an exclusive flock on fd was taken (False: another process holds it, or the filesystem has no locks)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def drop_stale_temps(folder: Path, name: str = "*", min_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporary files of `name` (any name: "*") in `folder` that a killed writer left: older than
    `min_age_s`, and no live writer holds their lock. On a filesystem without locks none is removed (live ones
    cannot be told apart). Returns the removed paths."""
    removed = []
    now = time.time()
    for tmp in Path(folder).glob(f".{name}.*.tmp"):
        try:
            if not tmp.is_file() or now - tmp.stat().st_mtime < min_age_s:
                continue
            with open(tmp, "rb") as f:
                if _try_lock(f.fileno()):
                    tmp.unlink()
                    removed.append(tmp)
        except OSError:  # gone already (its writer renamed it), or not ours to remove: left as it is
            continue
    return removed


def write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def torch_save(obj: Any, path: Path) -> None:
    # Serialised in memory first: torch.save straight into a file on a full disk fails with a RuntimeError from
    # its zip writer ("unexpected pos ..."), which hides both the cause and the file.
    import torch  # here, not at the top: the store and every --help import this module, and torch takes seconds

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic_write(path, lambda f: f.write(buffer.getbuffer()))
