"""Crash-safe writes of a whole file or a whole folder: the new one is written beside the old one under a temporary
name, then renamed over it, so that a reader (or a sweep restarted after SIGKILL) sees the old or the new, never
half of one.

A file (`write_json`, `write_text`, ...) is written to a temporary file in the same folder, fsynced and renamed.
A write that fails raises WriteError, one line naming the file ("disk full writing <path>"), whatever the writer.
A writer holds a lock on its temporary file until the rename, so that the temporaries a killed writer left behind
(`.<name>.*.tmp`) can be told from live ones and removed (`drop_stale_temps`).

A folder (a report, a run's export: `write_folder`) is written whole into a staging folder beside it, then swapped
in with two renames (`publish_folder`); what a kill between them leaves is put right by the next write
(`recover_folder`).
"""

import contextlib
import errno
import fcntl
import glob
import io
import json
import os
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
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


def link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)  # no bytes to write: the staging folder lies on the same file system
    except OSError:
        shutil.copy2(source, target)


def keep_files(target: Path, staging: Path, left_behind: Sequence[str] = ()) -> None:
    """Put into `staging` every file of the folder `target` that the new folder does not hold (the user's notes),
    so that the swap keeps them, except those matching a pattern of `left_behind` (old outputs the new folder no
    longer writes), which stay with the old folder."""
    for path in target.iterdir():
        kept = staging / path.name
        if kept.exists() or any(path.match(pattern) for pattern in left_behind):
            continue
        if path.is_symlink():
            os.symlink(os.readlink(path), kept)
        elif path.is_dir():
            shutil.copytree(path, kept, symlinks=True, copy_function=link_or_copy)
        else:
            link_or_copy(str(path), str(kept))


@contextlib.contextmanager
def naming_failures(path: Path | str) -> Iterator[None]:
    """Say which file or folder a write inside the block failed on: a library's OSError (a full disk) names none,
    so it (or an error it caused) becomes a WriteError naming `path`, one line."""
    try:
        yield
    except WriteError:
        raise
    except Exception as error:  # MLflow wraps the OSError in an exception of its own
        cause = error
        while cause is not None and not (isinstance(cause, OSError) and cause.strerror):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise WriteError(path, cause) from error


def failure(error: BaseException) -> str:
    """Why a write failed, in a few words: the OSError behind it (on a full disk matplotlib's PDF writer raises an
    AttributeError of its own while it cleans up after the ENOSPC), else the error itself."""
    cause = error
    while cause is not None and not (isinstance(cause, OSError) and cause.strerror):
        cause = cause.__cause__ or cause.__context__
    return cause.strerror if cause is not None else f"{type(error).__name__}: {error}"


@contextlib.contextmanager
def staging_folder(target: Path) -> Iterator[Path]:
    """A new empty folder beside `target` (on its file system, so that the swap renames without copying), with
    the permissions of `target` where it exists; removed, with whatever it still holds, when the block ends."""
    staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    staging.mkdir()
    try:
        if target.exists():
            os.chmod(staging, stat.S_IMODE(target.stat().st_mode))  # the swap keeps the folder's permissions
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_folder(staging: Path, target: Path) -> None:
    """Swap the finished `staging` folder in for the folder `target` with two renames (on one file system: no data
    to write), so that a reader sees the old folder or the new one, never a mix of both. A kill between the renames
    leaves the old one set aside as .<name>.old-*, which the next write puts back (`recover_folder`). A `target`
    not there yet is simply renamed into place."""
    if not target.exists():
        os.replace(staging, target)
        return
    old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(target: Path) -> None:
    """Clear what a killed folder write left beside `target`: a folder set aside by a publish killed between its
    two renames is put back (when no folder took its place), and the staging folders and set-aside folders of
    earlier kills are removed."""
    name = glob.escape(target.name)
    olds = sorted(target.parent.glob(f".{name}.old-*"))
    if olds and not target.exists():
        os.replace(olds.pop(), target)
    for leftover in [*olds, *target.parent.glob(f".{name}.*.tmp")]:
        shutil.rmtree(leftover, ignore_errors=True)


def write_folder(target: Path, fill: Callable[[Path], None]) -> None:
    """Write the folder `target` whole: `fill` writes every file into a staging folder, which then replaces
    `target` (publish_folder). If anything fails, `target` is as it was and no staging folder is left behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(target)
    with staging_folder(target) as staging:
        fill(staging)
        publish_folder(staging, target)
