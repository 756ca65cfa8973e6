"""The result store of a sweep: <sweep folder>/runs/<run_id>/ per run, and summary.csv rebuilt from them.

Every file is written atomically, so a sweep killed at any moment leaves only whole files (and perhaps a
`.name.*.tmp` that the next sweep or run removes: atomic.drop_stale_temps). The run files are the truth;
summary.csv is only ever derived from them, so it can always be rebuilt and never disagrees with them for long. A
run is finished iff its metrics.json exists; an unfinished run with a checkpoint.pt resumes from it.

A run's result is never rewritten: config.json and data.json are written once, when the run folder is made, and a
finished run's files are only read (a key added to RunConfig later is filled in with its default when read).
data.json records the data the run trains on (classes, image counts, a sha256 of each finished split); a rerun on
other data is refused (`check_run`). sweep.json keeps every design ever swept into the folder, each with its run
ids, so that the report can tell one design's runs from another's. One sweep works in a folder at a time: it
holds the folder's .lock (`lock_sweep`); a SLURM job holds its run folder's (`lock_run`). A lock that cannot be
held (another user's, a filesystem without flock) is a one-line StoreError, never a silent go-ahead: `Locks` moves
the locks elsewhere or, by the user's explicit choice, drops them.

A run file that cannot be read is damaged (`find_damaged`) and set aside with a fate stated per file
(`damage_fate`); one this user may not read or replace is not damage but an AccessError naming its owner.

This module owns the run folder's contract and every on-disk format: its file names, the run statuses, the fields
of metrics.json (`METRIC_FIELDS`, which summary.csv's columns and the report's checks derive from), and, through
ablations.design, sweep.json. The engine writes the files and analysis reads them, both through these names; the
store imports neither of them.
"""

import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import io
import json
import math
import os
import pwd
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ablations import atomic
from ablations.config import LEGACY_RUN_ID_LENGTH, NOT_IDENTITY, RunConfig
from ablations.design import Design, file_content, read_file
from convmixer.arguments import AUTOCAST_PRECISIONS as PRECISIONS

# A run folder: its config, the engine's per-epoch history, resumable state and final metrics, and its log.
CONFIG, HISTORY, CHECKPOINT, METRICS, LOG = "config.json", "history.json", "checkpoint.pt", "metrics.json", "log.txt"
RUNS, SUMMARY = "runs", "summary.csv"  # in the sweep folder: one folder per run, and the table derived from them
DESIGN, STUDY_COPY = "sweep.json", "study.toml"  # the sweep's designs (ablations.design), the study file it came from
DATA = "data.json"  # in a run folder: the data it trained on (`check_run` compares a rerun's with it)
LOCK = ".lock"  # in the sweep folder (one sweep at a time) and, under SLURM, in each run folder (one job per run)
# In a run folder on several processes: what stopped rank k (k > 0), one line, for rank 0's failure record; rank 0
# cannot learn it otherwise where the ranks share no pipe (SLURM tasks, torchrun). Removed when the run starts again.
RANK_FAULT = "rank{}.fault"
# Every status a run can have, in one vocabulary for the store, the sweep's console and the report.
DONE, DIVERGED, FAILED, UNFINISHED = "done", "diverged", "failed", "unfinished"
FINISHED = (DONE, DIVERGED, FAILED)  # the statuses a metrics.json may hold
STATUSES = (*FINISHED, UNFINISHED)  # unfinished: no metrics.json yet (not started, running, or killed)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fraction(value: Any) -> bool:
    return _number(value) and 0 <= value <= 1


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _positive_int(value: Any) -> bool:
    return _count(value) and value > 0


def _positive(value: Any) -> bool:
    return _number(value) and value > 0


def _seconds(value: Any) -> bool:
    return _number(value) and value >= 0


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _one_of(words: Iterable[str]) -> str:
    *others, last = map(repr, words)
    return f"{', '.join(others)} or {last}"


@dataclass(frozen=True)
class Field:
    """One field of metrics.json: who writes it, what a value may be, and whether a done run needs it."""

    writer: str  # "both": the engine and record_failure; "engine" (on a GPU only: "gpu"; on several processes:
    # "ddp"; streaming with bad_images=skip: "skip"); "failure": record_failure
    check: Callable[[Any], bool]  # a done run's value, when there and not null, passes it (others are not checked)
    accepted: str  # the check in words, for the one-line error
    done_needs: bool = False  # a done run must have it (the report computes with it)
    column: bool = False  # a column of summary.csv


def _text(writer: str, column: bool = False) -> Field:
    return Field(writer, lambda value: isinstance(value, str), "a string", column=column)


def _flag(writer: str) -> Field:
    return Field(writer, lambda value: isinstance(value, bool), "true or false")


# metrics.json: every field the engine (a finished run) and record_failure (a failed one) write, declared once. The
# summary.csv columns keep this order.
METRIC_FIELDS = {
    "status": Field("both", lambda value: value in FINISHED, _one_of(FINISHED), done_needs=True, column=True),
    "reason": _text("both", column=True),
    "test_acc": Field("engine", _fraction, "a number in [0, 1]", done_needs=True, column=True),
    "params": Field("engine", _positive_int, "a positive integer", done_needs=True, column=True),
    "macs": Field("engine", _positive_int, "a positive integer", done_needs=True, column=True),
    "flops": Field("engine", _positive_int, "a positive integer", column=True),
    "train_images_per_s": Field("engine", _positive, "a positive number", column=True),
    "peak_memory_mb": Field("engine", _positive, "a positive number", column=True),
    "train_time_s": Field("engine", _seconds, "a number >= 0", column=True),
    "epochs_completed": Field("both", _positive_int, "a positive integer", column=True),  # 0 only if failed
    "test_loss": Field("engine", _number, "a finite number"),
    "train_acc": Field("engine", _fraction, "a number in [0, 1]"),
    "train_loss": Field("engine", _number, "a finite number"),
    "wall_time_s": Field("engine", _seconds, "a number >= 0"),
    "precision_used": Field("engine", lambda value: value in PRECISIONS, _one_of(PRECISIONS)),
    "tf32_used": _flag("engine"),
    "compiled_graphs": Field("engine", _count, "an integer >= 0"),
    "warm_up_s": Field("engine", _seconds, "a number >= 0"),
    "channels_last_used": _flag("engine"),
    "depthwise_impl_used": _text("engine"),
    "processes": Field("ddp", _positive_int, "a positive integer"),  # of a run on several (DDP); 1 if absent
    # Streamed images bad_images=skip left out (train and test, every rank, every epoch; each counted once), and the
    # first few, each its one-line problem naming the file: absent where nothing could be skipped.
    "skipped_images": Field("skip", _count, "an integer >= 0"),
    "skipped_examples": Field("skip", _texts, "a list of strings"),
    "device": _text("both"),
    "hardware": _text("engine"),
    "driver": _text("gpu"),
    "torch_version": _text("engine"),
    "toolkit_commit": _text("engine"),
    "finished_at": _text("engine"),
    "transient": _flag("failure"),
}
METRIC_COLUMNS = tuple(name for name, spec in METRIC_FIELDS.items() if spec.column)
SUMMARY_COLUMNS = ("run_id", *(f.name for f in dataclasses.fields(RunConfig)), *METRIC_COLUMNS)


REDO = "; delete it to redo that run"  # the advice of a damaged run file's error where the sweep does not set it aside


class StoreError(RuntimeError):
    """A store file that cannot be read; the message names it."""


class AccessError(StoreError):
    """A store file this user may not read or replace (another user's): refused, never taken for damage."""


def owner(path: Path) -> str:
    """The name of the user who owns `path` (its uid where the system has no name for it)."""
    try:
        uid = path.stat().st_uid
    except OSError:
        return "an unknown user"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def not_permitted(path: Path, action: str) -> AccessError:
    return AccessError(
        f"{path} cannot be {action}: it belongs to {owner(path)} (Permission denied); ask them for access, "
        "or use another --out"
    )


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except PermissionError:  # another user's file: not damage, so never set aside nor redone
        raise not_permitted(path, "read") from None
    except ValueError as error:  # JSONDecodeError, or UnicodeDecodeError for a binary file
        raise StoreError(f"{path} is not valid JSON ({error}); delete it to redo that run") from None
    except OSError as error:  # a folder where the file should be, a disk error
        raise StoreError(f"{path} cannot be read ({error.strerror}); delete it to redo that run") from None


def read_object(path: Path, required: Iterable[str] = ()) -> dict:
    """A JSON object file with every `required` key, as config.json and metrics.json are (a hand edit may have
    left anything)."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise StoreError(
            f"{path} is not accepted: expected a JSON object, found {type(value).__name__}; delete it to redo that run"
        )
    missing = [key for key in required if key not in value]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise StoreError(f"{path} is not accepted: it has no {missing[0]!r} key{more}; delete it to redo that run")
    return value


def read_config(path: Path) -> RunConfig:
    """A run's config.json; a key it lacks (added to RunConfig after the run) gets its default, never written back."""
    values = read_object(path)
    known = {f.name for f in dataclasses.fields(RunConfig)}
    return RunConfig(**{key: value for key, value in values.items() if key in known})


def read_metrics(path: Path) -> dict:
    """A finished run's metrics.json: an object whose status is one of FINISHED."""
    metrics = read_object(path, ["status"])
    if metrics["status"] not in FINISHED:  # any other status would count the run as neither done nor failed
        raise StoreError(
            f"{path}: status {metrics['status']!r} is not accepted: expected {', '.join(FINISHED)}; "
            "delete it to redo that run"
        )
    return metrics


def write_metrics(run_dir: Path, metrics: dict) -> None:
    """Write a finished run's metrics.json; ValueError for a field METRIC_FIELDS does not declare (a new metric is
    declared there first, so that the validator and summary.csv know it)."""
    undeclared = sorted(set(metrics) - set(METRIC_FIELDS))
    if undeclared:
        raise ValueError(f"metrics.json field {undeclared[0]!r} is not declared in ablations.store.METRIC_FIELDS")
    atomic.write_json(run_dir / METRICS, metrics)


def write_rank_fault(run_dir: Path, rank: int, cause: str) -> None:
    """Record, for rank 0, the one line that stopped `rank` (> 0) of a run on several processes (Store.rank_faults)."""
    atomic.write_text(run_dir / RANK_FAULT.format(rank), cause + "\n")


# A history.json record is a dozen numbers (about 300 bytes): a file of more bytes than this per epoch of its run was
# not written by the engine, and is refused unparsed (a 254 MB one cost every sweep start 35 s and 1.3 GB).
HISTORY_BYTES_PER_EPOCH = 16_384


def read_history(path: Path, epochs: int | None = None) -> list[dict]:
    """A run's history.json: one object per completed epoch, each with its 'epoch' number. Given the run's `epochs`,
    a file far larger than such a run writes is refused before it is parsed."""
    size = path.stat().st_size
    if epochs is not None and size > epochs * HISTORY_BYTES_PER_EPOCH:
        raise StoreError(
            f"{path} is not accepted: {size:,} bytes, more than a run of {epochs} epochs writes; "
            "delete it to redo that run"
        )
    records = read_json(path)
    if not isinstance(records, list) or not all(isinstance(record, dict) and "epoch" in record for record in records):
        raise StoreError(
            f"{path} is not accepted: expected a JSON list of objects, each with 'epoch'; delete it to redo that run"
        )
    return records


def epochs_completed(run_dir: Path) -> int:
    """How many epochs the run's history.json records (0 before the first epoch ends)."""
    return len(read_history(run_dir / HISTORY)) if (run_dir / HISTORY).exists() else 0


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


def describe_data(record: dict) -> str:
    """A data.json record in a few words: its label, classes, image counts and fingerprints."""
    return (
        f"{record.get('data', '?')} ({len(record.get('classes', []))} classes, {record.get('train_images')} train / "
        f"{record.get('test_images')} test images, sha256 {str(record.get('train_sha256'))[:12]}/"
        f"{str(record.get('test_sha256'))[:12]})"
    )


# The fields of a data.json record that say where the data was, not what it is: a moved archive is the same data.
DATA_PLACE = ("data", "data_root")


def same_data(a: dict, b: dict) -> bool:
    """Whether two data.json records describe the same images."""
    return {k: v for k, v in a.items() if k not in DATA_PLACE} == {k: v for k, v in b.items() if k not in DATA_PLACE}


@dataclass(frozen=True)
class RunState:
    status: str  # one of STATUSES
    reason: str = ""
    epochs: int = 0  # epochs completed
    transient: bool = False  # failed for a reason that may pass (disk full, a killed worker): a rerun retries it

    def describe(self, total_epochs: int) -> str:
        if self.status == UNFINISHED:
            progress = f"epoch {self.epochs}/{total_epochs}" if self.epochs else "not started"
            return f"{UNFINISHED} ({progress})"
        return f"{self.status} ({self.reason})" if self.reason else self.status


class Store:
    def __init__(self, root: Path, locks: Locks = Locks()) -> None:
        self.root = Path(root)
        self.locks = locks
        self.runs = self.root / RUNS
        self.summary = self.root / SUMMARY
        self.damaged: dict[Path, str] = {}  # run files that cannot be read, and why: read as absent

    def find_damaged(self) -> dict[Path, str]:
        """Every run file that cannot be read (a hand edit, a disk error), and why. The store then reads them as
        absent, so one damaged file does not stop every sweep into the folder until someone deletes it. A run whose
        data.json is damaged trained on data nobody knows: its results count as damaged too. AccessError for a
        file this user may not read (another user's is not damage) or a damaged one it may not set aside."""
        for run_dir in sorted(self.runs.iterdir()) if self.runs.is_dir() else []:
            epochs = None  # the run's, from its config: a history far longer than that is not parsed
            readers = ((CONFIG, read_config), (METRICS, read_metrics), (HISTORY, read_history), (DATA, read_object))
            for name, reader in readers:
                try:
                    if (run_dir / name).exists():
                        read = reader(run_dir / name, epochs) if name == HISTORY else reader(run_dir / name)
                        epochs = read.epochs if name == CONFIG else epochs
                except PermissionError:  # the run folder itself is another user's, closed to this one
                    raise not_permitted(run_dir, "read") from None
                except AccessError:
                    raise
                except StoreError as error:
                    self.damaged[run_dir / name] = str(error).removesuffix(REDO)
            if run_dir / DATA in self.damaged:
                for name in (METRICS, HISTORY, CHECKPOINT):
                    if (run_dir / name).exists() and run_dir / name not in self.damaged:
                        self.damaged[run_dir / name] = f"{run_dir / name}: its run's {DATA} is damaged"
        for path in self.damaged:
            if not os.access(path.parent, os.W_OK | os.X_OK):
                raise AccessError(
                    f"{path} is damaged but cannot be set aside: its folder belongs to {owner(path.parent)} "
                    "(Permission denied); ask them to fix it, or use another --out"
                )
        return self.damaged

    def damage_fate(self, path: Path) -> str:
        """What set_aside_damaged and the sweep after it do with a damaged run file, in words (they do just that)."""
        aside, run_dir = f"set aside as {path.name}.damaged-<time>", path.parent
        if path.name == CONFIG:
            return f"{aside} and written again from this sweep's config"
        if path.name == DATA or run_dir / DATA in self.damaged:
            return f"{aside} and its run trained again from scratch (what it trained on is not known)"
        if path.name != HISTORY:
            return f"{aside} and its run redone"
        status = self.state(run_dir).status
        if status in (DONE, DIVERGED):
            return f"{aside}; the run stays {status}, without its training curves"
        if status == FAILED:  # a retry resumes from the checkpoint, whose history it writes again
            return f"{aside}; the failed run is without its training curves until it is retried"
        return f"{aside}; the run's training writes it again"

    def set_aside_damaged(self) -> list[Path]:
        """Rename each damaged file to <name>.damaged-<time> (kept, never deleted) and return the new paths: the
        sweep then does what `damage_fate` says."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = []
        for path in self.damaged:
            moved.append(path.with_name(f"{path.name}.damaged-{stamp}"))
            try:
                os.replace(path, moved[-1])
            except PermissionError:
                raise not_permitted(path, "set aside") from None
        self.damaged = {}
        return moved

    def readable(self, path: Path) -> bool:
        return path.exists() and path not in self.damaged

    def run_dir(self, run: RunConfig | str) -> Path:
        """The folder of a run, given its config or its id."""
        return self.runs / (run if isinstance(run, str) else run.run_id())

    def metrics(self, run_dir: Path) -> dict | None:
        """The run's metrics.json, or None while it is unfinished."""
        return read_metrics(run_dir / METRICS) if self.readable(run_dir / METRICS) else None

    def state(self, run_dir: Path) -> RunState:
        metrics = self.metrics(run_dir)
        if metrics is not None:
            epochs, transient = metrics.get("epochs_completed") or 0, metrics.get("transient") is True
            return RunState(metrics["status"], metrics.get("reason", ""), epochs, transient)
        # Epochs count only with a checkpoint to resume them from (history.json is written just before it).
        resumable = self.readable(run_dir / CHECKPOINT) and self.readable(run_dir / HISTORY)
        return RunState(UNFINISHED, "", epochs_completed(run_dir) if resumable else 0)

    def check_run(self, cfg: RunConfig, data: dict | None, seen: str = "this sweep's data is") -> None:
        """StoreError (one line) unless the folder of `cfg` may take this run: its config.json describes this run,
        its data.json (if any) the same images as `data` (this sweep's, when it was loaded; `seen` says whose),
        and it is not held under the shorter id of an older toolkit."""
        run_dir = self.run_dir(cfg)
        legacy = self.runs / cfg.run_id()[:LEGACY_RUN_ID_LENGTH]
        if legacy.is_dir() and not run_dir.exists():
            raise StoreError(
                f"{legacy} holds run {cfg.run_id()} under its 40-bit id of an older toolkit: "
                f"rename it first (mv {legacy} {run_dir})"
            )
        if self.readable(run_dir / CONFIG):
            recorded = read_config(run_dir / CONFIG)
            if recorded.run_id() != cfg.run_id():
                key = next(k for k, v in recorded.to_dict().items() if v != getattr(cfg, k) and k not in NOT_IDENTITY)
                raise StoreError(
                    f"{run_dir / CONFIG} is another run than {cfg.run_id()} ({key}={getattr(recorded, key)!r}, not "
                    f"{getattr(cfg, key)!r}): edited by hand? move that folder away"
                )
        if data is not None and self.readable(run_dir / DATA):
            recorded = read_object(run_dir / DATA)
            if not same_data(recorded, data):
                raise StoreError(
                    f"{run_dir} was trained on {describe_data(recorded)}, but {seen} {describe_data(data)}: a result "
                    "on other data needs another --out"
                )

    def prepare(self, configs: list[RunConfig], data: dict[str, dict] | None = None) -> None:
        """Make each run's folder with its config.json and data.json (`data` by run id), so that summary.csv lists
        the whole sweep from the start; files already there are kept as they are."""
        for cfg in configs:
            run_dir = self.run_dir(cfg)
            if not (run_dir / CONFIG).exists():
                atomic.write_json(run_dir / CONFIG, cfg.to_dict())
            # A finished run without data.json predates data records: what it trained on is not known, so not written.
            if cfg.run_id() in (data or {}) and not (run_dir / DATA).exists() and self.metrics(run_dir) is None:
                atomic.write_json(run_dir / DATA, data[cfg.run_id()])

    def drop_stale_temps(self) -> None:
        """Remove the temporary files a killed sweep left in the folder (of sweep.json, study.toml, summary.csv);
        a SLURM job of an earlier sweep still writing summary.csv holds its own, which stays."""
        atomic.drop_stale_temps(self.root)

    def start_run(self, run_dir: Path) -> None:
        """Called by the one process about to train this run: temps left by a killed writer are garbage now, and so
        are the causes its ranks left when it last failed."""
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.drop_stale_temps(run_dir, min_age_s=0)
        for path in run_dir.glob(RANK_FAULT.format("*")):
            path.unlink(missing_ok=True)

    def forget_failure(self, run_dir: Path) -> None:
        """Make a failed run unfinished again, so that it resumes from its last checkpoint (--retry-failed)."""
        (run_dir / METRICS).unlink(missing_ok=True)

    def record_failure(self, run_dir: Path, reason: str, device: str, transient: bool = False) -> dict:
        """`transient`: the failure may not happen again (disk full, a killed worker), so a plain rerun retries."""
        metrics = {
            "status": FAILED,
            "reason": reason,
            "transient": transient,
            "epochs_completed": epochs_completed(run_dir),
            "device": device,
        }
        write_metrics(run_dir, metrics)
        return metrics

    def rank_faults(self, run_dir: Path, world_size: int, wait_s: float = 0.0) -> dict[int, str]:
        """What stopped each rank 1..world_size-1 that recorded it (`write_rank_fault`), waiting up to `wait_s` for
        them all: a rank writes its cause after its peers may have seen it leave."""
        deadline = time.monotonic() + wait_s
        while True:
            os.listdir(run_dir)  # on NFS a directory read refreshes the cache: see a file written on another node
            paths = {rank: run_dir / RANK_FAULT.format(rank) for rank in range(1, world_size)}
            faults = {rank: path.read_text().strip() for rank, path in paths.items() if path.exists()}
            if len(faults) == world_size - 1 or time.monotonic() >= deadline:
                return faults
            time.sleep(0.1)

    def drop_checkpoint(self, run_dir: Path) -> None:
        """A done or diverged run will not train again (a failed one may resume), so its checkpoint is dead weight."""
        if self.state(run_dir).status in (DONE, DIVERGED):
            (run_dir / CHECKPOINT).unlink(missing_ok=True)

    def summary_rows(self) -> list[dict]:
        """One row per run folder: its config.json as written (a key the run predates stays empty), its state and
        metrics."""
        rows = []
        for config_path in sorted(self.runs.glob(f"*/{CONFIG}")):
            run_dir = config_path.parent
            state = self.state(run_dir)
            row = {"run_id": run_dir.name, **read_object(config_path), **(self.metrics(run_dir) or {})}
            row.update(status=state.status, reason=state.reason, epochs_completed=state.epochs)
            rows.append(row)
        return rows

    def check_folder(self) -> None:
        """StoreError unless the toolkit's files in the folder are its own: a sweep never overwrites another's."""
        if self.summary.exists():
            with open(self.summary) as f:
                header = f.readline()
            if not header.startswith("run_id,"):
                raise StoreError(f"{self.summary} was not written by this toolkit: move it away, or use another --out")
        self.read_designs()

    def lock_path(self, run_id: str | None = None) -> Path:
        """The lock of the sweep folder (no `run_id`) or of one run: beside it, or under --lock-dir in a folder
        named after this store's absolute path (the same on every node that mounts it there)."""
        if self.locks.folder is None:
            return self.root / LOCK if run_id is None else self.run_dir(run_id) / LOCK
        where = str(self.root.resolve())
        folder = self.locks.folder / f"{Path(where).name}-{hashlib.sha256(where.encode()).hexdigest()[:12]}"
        return folder / (LOCK if run_id is None else f"{run_id}{LOCK}")

    def lock_sweep(self) -> contextlib.AbstractContextManager:
        """Hold the folder's lock for this sweep (released when the returned file is closed or the process ends);
        StoreError naming the other sweep's process if one holds it, WriteError if the lock cannot be written."""
        if self.locks.off:
            return contextlib.nullcontext()
        path = self.lock_path()
        lock = hold_lock(path, wait=False)
        if lock is None:
            holder = path.read_text().strip() or "a process that is starting"
            raise StoreError(
                f"{self.root} is in use by another sweep ({holder}): wait for it to end, or use another --out"
            )
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

    def lock_run(self, run_id: str) -> contextlib.AbstractContextManager:
        """Hold one run's lock (a SLURM job trains its run only while holding it), waiting for another holder."""
        return contextlib.nullcontext() if self.locks.off else hold_lock(self.lock_path(run_id))

    def read_designs(self) -> list[Design]:
        """Every design swept into the folder, oldest first (ablations.design.read_file: both formats)."""
        path = self.root / DESIGN
        if not path.exists():
            return []
        try:
            return read_file(read_object(path))
        except ValueError as error:
            raise StoreError(f"{path} is not accepted: {error}") from None

    def add_design(self, design: Design, run_ids: list[str], study_text: str | None) -> int:
        """Record a sweep's design and its runs beside the designs already in sweep.json, unless one of them is the
        same; return its number (1: the first). The study file of design n is kept as study.toml (n = 1) or
        study-n.toml, and is never overwritten."""
        entry = Design.from_dict(dataclasses.replace(design, runs=run_ids).to_dict())  # as read back: lists
        designs = self.read_designs()
        for number, old in enumerate(designs, 1):
            if old.same_as(entry):
                return number
        if designs and designs[0].runs is None:  # the first format held one design: the folder's runs then
            runs = sorted(path.name for path in self.runs.glob("*") if (path / CONFIG).exists())
            designs[0] = dataclasses.replace(designs[0], runs=runs)
        designs.append(entry)
        atomic.write_json(self.root / DESIGN, file_content(designs))
        study = self.root / (STUDY_COPY if len(designs) == 1 else f"study-{len(designs)}.toml")
        if study_text is not None and not study.exists():
            atomic.write_text(study, study_text)
        return len(designs)

    def write_summary(self) -> Path:
        """Rebuild summary.csv from the run folders (atomically: a reader never sees half a table). Its config
        columns are the keys the runs' config.json files hold, so a rerun never adds or drops a column."""
        rows = self.summary_rows()
        present = set().union(*rows) if rows else set(SUMMARY_COLUMNS)
        columns = [c for c in SUMMARY_COLUMNS if c in present or c in METRIC_COLUMNS or c == "run_id"]
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        if not self.summary.exists() or self.summary.read_text() != text.getvalue():
            atomic.write_text(self.summary, text.getvalue())
        return self.summary
