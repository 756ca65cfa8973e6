"""The result store of a sweep: <sweep folder>/runs/<run_id>/ per run, and summary.csv rebuilt from them.

Every file is written atomically, so a sweep killed at any moment leaves only whole files (and perhaps a
`.name.*.tmp` that the next start removes). The run files are the truth; summary.csv is only ever derived
from them, so it can always be rebuilt and never disagrees with them for long. A run is finished iff its
metrics.json exists; an unfinished run with a checkpoint.pt resumes from it.

A run's result is never rewritten: config.json and data.json are written once, when the run folder is made, and a
finished run's files are only read (a key added to RunConfig later is filled in with its default when read).
data.json records the data the run trains on (classes, image counts, a sha256 of each finished split); a rerun on
other data is refused (`check_run`). sweep.json keeps every design ever swept into the folder, each with its run
ids, so that the report can tell one design's runs from another's. One sweep works in a folder at a time: it
holds the folder's .lock (`lock_sweep`); a SLURM job holds its run folder's (`hold_lock`).

This module owns the run folder's contract and every on-disk format: its file names, the run statuses, the fields
of metrics.json (`METRIC_FIELDS`, which summary.csv's columns and the report's checks derive from), and, through
ablations.design, sweep.json. The engine writes the files and analysis reads them, both through these names; the
store imports neither of them.
"""

import csv
import dataclasses
import fcntl
import io
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ablations import atomic
from ablations.config import LEGACY_RUN_ID_LENGTH, NOT_IDENTITY, RunConfig
from ablations.design import Design, file_content, read_file
from convmixer.arguments import PRECISIONS

# A run folder: its config, the engine's per-epoch history, resumable state and final metrics, and its log.
CONFIG, HISTORY, CHECKPOINT, METRICS, LOG = "config.json", "history.json", "checkpoint.pt", "metrics.json", "log.txt"
RUNS, SUMMARY = "runs", "summary.csv"  # in the sweep folder: one folder per run, and the table derived from them
DESIGN, STUDY_COPY = "sweep.json", "study.toml"  # the sweep's designs (ablations.design), the study file it came from
DATA = "data.json"  # in a run folder: the data it trained on (`check_run` compares a rerun's with it)
LOCK = ".lock"  # in the sweep folder (one sweep at a time) and, under SLURM, in each run folder (one job per run)
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


def _one_of(words: Iterable[str]) -> str:
    *others, last = map(repr, words)
    return f"{', '.join(others)} or {last}"


@dataclass(frozen=True)
class Field:
    """One field of metrics.json: who writes it, what a value may be, and whether a done run needs it."""

    writer: str  # "both": the engine and record_failure; "engine" (on a GPU only: "gpu"); "failure": record_failure
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


class StoreError(RuntimeError):
    """A store file that cannot be read; the message names it."""


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except ValueError as error:  # JSONDecodeError, or UnicodeDecodeError for a binary file
        raise StoreError(f"{path} is not valid JSON ({error}); delete it to redo that run") from None
    except OSError as error:  # a folder where the file should be, no permission
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


def read_history(path: Path) -> list[dict]:
    """A run's history.json: one object per completed epoch, each with its 'epoch' number."""
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
    None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(path, "a+")  # the caller closes it
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        lock.close()
        return None
    except OSError:  # a shared filesystem without locks (Lustre without -o flock): nothing to hold
        pass
    return lock


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
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.runs = self.root / RUNS
        self.summary = self.root / SUMMARY
        self.damaged: dict[Path, str] = {}  # run files that cannot be read, and why: read as absent

    def find_damaged(self) -> dict[Path, str]:
        """Every run file that cannot be read (a hand edit, a disk error), and why. The store then reads them as
        absent, so one damaged file does not stop every sweep into the folder until someone deletes it."""
        for run_dir in sorted(self.runs.iterdir()) if self.runs.is_dir() else []:
            for name, reader in ((CONFIG, read_config), (METRICS, read_metrics), (HISTORY, read_history)):
                try:
                    if (run_dir / name).exists():
                        reader(run_dir / name)
                except StoreError as error:
                    self.damaged[run_dir / name] = str(error).removesuffix("; delete it to redo that run")
        return self.damaged

    def set_aside_damaged(self) -> list[Path]:
        """Rename each damaged file to <name>.damaged-<time> (kept, never deleted) and return the new paths: the
        sweep then writes config.json again and retrains a run whose metrics.json was damaged."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = []
        for path in self.damaged:
            moved.append(path.with_name(f"{path.name}.damaged-{stamp}"))
            os.replace(path, moved[-1])
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
        resumable = (run_dir / CHECKPOINT).exists() and self.readable(run_dir / HISTORY)
        return RunState(UNFINISHED, "", epochs_completed(run_dir) if resumable else 0)

    def check_run(self, cfg: RunConfig, data: dict | None) -> None:
        """StoreError (one line) unless the folder of `cfg` may take this run: its config.json describes this run,
        its data.json (if any) the same images as `data` (this sweep's, when it was loaded), and it is not held
        under the shorter id of an older toolkit."""
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
        if data is not None and (run_dir / DATA).exists():
            recorded = read_object(run_dir / DATA)
            if not same_data(recorded, data):
                raise StoreError(
                    f"{run_dir} was trained on {describe_data(recorded)}, but this sweep's data is "
                    f"{describe_data(data)}: a result on other data needs another --out"
                )

    def prepare(self, configs: list[RunConfig], data: dict[str, dict] | None = None) -> None:
        """Make each run's folder with its config.json and data.json (`data` by run id), so that summary.csv lists
        the whole sweep from the start; files already there are kept as they are. Drop stale temps."""
        for stale in self.root.glob(f".{SUMMARY}.*.tmp"):
            stale.unlink(missing_ok=True)
        for cfg in configs:
            run_dir = self.run_dir(cfg)
            if not (run_dir / CONFIG).exists():
                atomic.write_json(run_dir / CONFIG, cfg.to_dict())
            # A finished run without data.json predates data records: what it trained on is not known, so not written.
            if cfg.run_id() in (data or {}) and not (run_dir / DATA).exists() and self.metrics(run_dir) is None:
                atomic.write_json(run_dir / DATA, data[cfg.run_id()])

    def start_run(self, run_dir: Path) -> None:
        """Called by the one process about to train this run: temps left by a killed writer are garbage now."""
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in run_dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

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

    def lock_sweep(self) -> IO[str]:
        """Hold the folder's lock for this sweep (released when the returned file is closed or the process ends);
        StoreError naming the other sweep's process if one holds it."""
        lock = hold_lock(self.root / LOCK, wait=False)
        if lock is None:
            holder = (self.root / LOCK).read_text().strip() or "a process that is starting"
            raise StoreError(
                f"{self.root} is in use by another sweep ({holder}): wait for it to end, or use another --out"
            )
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
        lock.flush()
        return lock

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
