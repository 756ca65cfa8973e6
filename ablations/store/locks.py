"""The locks of a result store: one sweep works in a sweep folder at a time (it holds the folder's .lock), and a
SLURM job trains its run only while holding the run folder's. A lock that cannot be held (another user's, a
filesystem without flock) is a one-line StoreError, never a silent go-ahead: `Locks` moves the locks elsewhere
(--lock-dir) or, by the user's explicit choice, drops them (--no-lock).
"""

import contextlib
import fcntl
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ablations import atomic
from ablations.store.files import AccessError, StoreError, not_permitted, owner
from ablations.store.schema import LOCK, RUNS


def hold_lock(path: Path, wait: bool = True) -> IO[str] | None:
    """Hold an exclusive lock on `path` until the returned file is closed (or this process ends). Without `wait`,
    None when another process holds it. StoreError where it cannot be held: another user's lock file, or a
    filesystem whose flock does not work (Lustre without -o flock, NFS without lockd), which would let two sweeps
    or jobs train one run at once; the user then chooses --lock-dir or --no-lock (`Locks`)."""
    created = not path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path, "a+")  # the caller closes it
    except PermissionError:
        if not path.exists():  # the folder is another user's
            raise AccessError(
                f"cannot create the lock {path}: its folder belongs to {owner(path.parent)} (Permission denied); "
                "ask them for access, or use another --out"
            ) from None
        raise not_permitted(path, "opened for its lock") from None
    except OSError as error:
        raise atomic.WriteError(path, error) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        lock.close()
        return None
    except OSError as error:  # ENOLCK, EOPNOTSUPP, EINVAL...: this filesystem does not lock
        lock.close()
        if created:  # nothing was locked: leave the folder as it was
            path.unlink(missing_ok=True)
        raise StoreError(
            f"cannot lock {path} ({error.strerror}): its filesystem has no working file locks, so two sweeps or "
            "jobs could train one run at once; choose --lock-dir DIR on a filesystem where locks work (a local "
            "disk for a sweep on one machine), or --no-lock if you make sure of that yourself"
        ) from None
    return lock


@dataclass(frozen=True)
class Locks:
    """Where a store's locks are: beside the files they guard (the default), in `folder` (--lock-dir: a
    filesystem whose flock works, when the results' does not), or nowhere (`off`, --no-lock: the user makes sure
    that one sweep works in the folder and one job trains a run at a time)."""

    folder: Path | None = None
    off: bool = False

    def __post_init__(self) -> None:
        if self.folder is not None and self.off:
            raise StoreError("--lock-dir and --no-lock exclude each other: choose where the locks are, or none")

    def path(self, root: Path, run_id: str | None = None) -> Path:
        """The lock of the sweep folder `root` (no `run_id`) or of one run: beside it, or under --lock-dir in a
        folder named after the store's absolute path (the same on every node that mounts it there)."""
        if self.folder is None:
            return root / LOCK if run_id is None else root / RUNS / run_id / LOCK
        where = str(root.resolve())
        folder = self.folder / f"{Path(where).name}-{hashlib.sha256(where.encode()).hexdigest()[:12]}"
        return folder / (LOCK if run_id is None else f"{run_id}{LOCK}")

    def hold_sweep(self, root: Path) -> contextlib.AbstractContextManager:
        """Hold the lock of the sweep folder `root` (released when the returned file is closed or the process
        ends); StoreError naming the other sweep's process if one holds it, WriteError if it cannot be written."""
        if self.off:
            return contextlib.nullcontext()
        path = self.path(root)
        lock = hold_lock(path, wait=False)
        if lock is None:
            holder = path.read_text().strip() or "a process that is starting"
            raise StoreError(f"{root} is in use by another sweep ({holder}): wait for it to end, or use another --out")
        try:
            lock.seek(0)
            lock.truncate()
            lock.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
            lock.flush()
        except OSError as error:  # disk full: no sweep starts, so no lock file is left either
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                lock.close()
            raise atomic.WriteError(path, error) from None
        return lock

    def hold_run(self, root: Path, run_id: str) -> contextlib.AbstractContextManager:
        """Hold one run's lock (a SLURM job trains its run only while holding it), waiting for another holder."""
        return contextlib.nullcontext() if self.off else hold_lock(self.path(root, run_id))
