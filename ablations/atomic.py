"""Crash-safe file writes: write to a temporary file in the same folder, fsync, then rename over the target.

A reader (or a sweep restarted after SIGKILL) sees either the old file or the new one, never half of one.
A write that fails raises WriteError, one line naming the file ("disk full writing <path>"), whatever the writer.
"""

import errno
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def torch_save(obj: Any, path: Path) -> None:
    # Serialised in memory first: torch.save straight into a file on a full disk fails with a RuntimeError from
    # its zip writer ("unexpected pos ..."), which hides both the cause and the file.
    import torch  # here, not at the top: the store and every --help import this module, and torch takes seconds

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic_write(path, lambda f: f.write(buffer.getbuffer()))
