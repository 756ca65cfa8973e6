"""The result store of a sweep: results/<sweep>/runs/<run_id>/ per run, and summary.csv rebuilt from them.

Every file is written atomically, so a sweep killed at any moment leaves only whole files (and perhaps a
`.name.*.tmp` that the next start removes). The run files are the truth; summary.csv is only ever derived
from them, so it can always be rebuilt and never disagrees with them for long. A run is finished iff its
metrics.json exists; an unfinished run with a checkpoint.pt resumes from it.

This module owns the run folder's contract: its file names, the run states and the readers of its JSON files.
The engine writes the files and analysis reads them, both by these names; the store imports neither of them.
"""

import csv
import dataclasses
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ablations import atomic
from ablations.config import RunConfig

# A run folder: its config, the engine's per-epoch history, resumable state and final metrics, and its log.
CONFIG, HISTORY, CHECKPOINT, METRICS, LOG = "config.json", "history.json", "checkpoint.pt", "metrics.json", "log.txt"
RUNS, SUMMARY = "runs", "summary.csv"  # in the sweep folder: one folder per run, and the table derived from them
DESIGN, STUDY_COPY = "sweep.json", "study.toml"  # the sweep's design (read by analysis), the study file it came from
METRIC_COLUMNS = (
    "status", "reason", "test_acc", "params", "macs", "flops",
    "train_images_per_s", "peak_memory_mb", "train_time_s", "epochs_completed",
)  # fmt: skip
SUMMARY_COLUMNS = ("run_id", *(f.name for f in dataclasses.fields(RunConfig)), *METRIC_COLUMNS)
# Every status a run can have, in one vocabulary for the store, the sweep's console and the report.
DONE, DIVERGED, FAILED, UNFINISHED = "done", "diverged", "failed", "unfinished"
FINISHED = (DONE, DIVERGED, FAILED)  # the statuses a metrics.json may hold
STATUSES = (*FINISHED, UNFINISHED)  # unfinished: no metrics.json yet (not started, running, or killed)


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


def read_metrics(path: Path) -> dict:
    """A finished run's metrics.json: an object whose status is one of FINISHED."""
    metrics = read_object(path, ["status"])
    if metrics["status"] not in FINISHED:  # any other status would count the run as neither done nor failed
        raise StoreError(
            f"{path}: status {metrics['status']!r} is not accepted: expected {', '.join(FINISHED)}; "
            "delete it to redo that run"
        )
    return metrics


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

    def run_dir(self, run: RunConfig | str) -> Path:
        """The folder of a run, given its config or its id."""
        return self.runs / (run if isinstance(run, str) else run.run_id())

    def metrics(self, run_dir: Path) -> dict | None:
        """The run's metrics.json, or None while it is unfinished."""
        return read_metrics(run_dir / METRICS) if (run_dir / METRICS).exists() else None

    def state(self, run_dir: Path) -> RunState:
        metrics = self.metrics(run_dir)
        if metrics is not None:
            epochs, transient = metrics.get("epochs_completed") or 0, metrics.get("transient") is True
            return RunState(metrics["status"], metrics.get("reason", ""), epochs, transient)
        # Epochs count only with a checkpoint to resume them from (history.json is written just before it).
        return RunState(UNFINISHED, "", epochs_completed(run_dir) if (run_dir / CHECKPOINT).exists() else 0)

    def prepare(self, configs: list[RunConfig]) -> None:
        """Write each run's config.json (so summary.csv lists the whole sweep from the start); drop stale temps."""
        for stale in self.root.glob(f".{SUMMARY}.*.tmp"):
            stale.unlink(missing_ok=True)
        for cfg in configs:
            path = self.run_dir(cfg) / CONFIG
            if not path.exists() or read_json(path) != cfg.to_dict():
                atomic.write_json(path, cfg.to_dict())

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
        atomic.write_json(run_dir / METRICS, metrics)
        return metrics

    def drop_checkpoint(self, run_dir: Path) -> None:
        """A done or diverged run will not train again (a failed one may resume), so its checkpoint is dead weight."""
        if self.state(run_dir).status in (DONE, DIVERGED):
            (run_dir / CHECKPOINT).unlink(missing_ok=True)

    def summary_rows(self) -> list[dict]:
        rows = []
        for config_path in sorted(self.runs.glob(f"*/{CONFIG}")):
            run_dir = config_path.parent
            state = self.state(run_dir)
            row = {"run_id": run_dir.name, **read_object(config_path), **(self.metrics(run_dir) or {})}
            row.update(status=state.status, reason=state.reason, epochs_completed=state.epochs)
            rows.append({column: row.get(column) for column in SUMMARY_COLUMNS})
        return rows

    def write_design(self, design: dict, study_text: str | None) -> None:
        """Record what the sweep is (its preset, fixed keys, baseline, axes, seeds) and the study file as written."""
        atomic.write_json(self.root / DESIGN, design)
        if study_text is not None:
            atomic.write_text(self.root / STUDY_COPY, study_text)

    def write_summary(self) -> Path:
        """Rebuild summary.csv from the run folders (atomically: a reader never sees half a table)."""
        text = io.StringIO()
        writer = csv.DictWriter(text, SUMMARY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.summary_rows())
        atomic.write_text(self.summary, text.getvalue())
        return self.summary
