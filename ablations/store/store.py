"""The result store of a sweep: <sweep folder>/runs/<run_id>/ per run, and summary.csv rebuilt from them.

Every file is written atomically, so a sweep killed at any moment leaves only whole files (and perhaps a
`.name.*.tmp` that the next sweep or run removes: atomic.drop_stale_temps). The run files are the truth;
summary.csv is only ever derived from them, so it can always be rebuilt and never disagrees with them for long. A
run is finished iff its metrics.json exists; an unfinished run with a checkpoint.pt resumes from it.

A run's result is never rewritten: config.json and data.json are written once, when the run folder is made, and a
finished run's files are only read. data.json records the data the run trains on; a rerun on other data is refused
(`check_run`). sweep.json keeps every design ever swept into the folder, each with its run ids, so that the report
can tell one design's runs from another's. The files' contents are declared in ablations.store.schema, read and
written by ablations.store.files; the locks are ablations.store.locks.

A run file that cannot be read is damaged (`find_damaged`) and set aside with a fate stated per file
(`damage_fate`).
"""

import contextlib
import csv
import dataclasses
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ablations import atomic
from ablations.config import LEGACY_RUN_ID_LENGTH, NOT_IDENTITY, RunConfig
from ablations.design import Design, file_content, read_file
from ablations.store.files import (
    SET_ASIDE,
    AccessError,
    Damaged,
    StoreError,
    epochs_completed,
    not_permitted,
    owner,
    read_config,
    read_data,
    read_history,
    read_metrics,
    read_object,
    set_aside,
    write_data,
    write_metrics,
)
from ablations.store.locks import Locks
from ablations.store.schema import (
    CHECKPOINT,
    CONFIG,
    DATA,
    DATA_PLACE,
    DESIGN,
    DIVERGED,
    DONE,
    FAILED,
    HISTORY,
    METRIC_COLUMNS,
    METRICS,
    RANK_FAULT,
    RUNS,
    STUDY_COPY,
    SUMMARY,
    SUMMARY_COLUMNS,
    UNFINISHED,
    config_values,
)


def describe_data(record: dict) -> str:
    """A data.json record in a few words: its label, classes, image counts, pipeline and fingerprints."""
    pipeline = f", {record['pipeline']}" if "pipeline" in record else ""
    return (
        f"{record.get('data', '?')} ({len(record.get('classes', []))} classes, {record.get('train_images')} train / "
        f"{record.get('test_images')} test images{pipeline}, sha256 {str(record.get('train_sha256'))[:12]}/"
        f"{str(record.get('test_sha256'))[:12]})"
    )


# The fields of a data.json record in words, in the order a difference is named: the fingerprints last (they differ
# whenever the pipeline does: a held split hashes its decoded pixels, a streamed one its files).
DATA_WORDS = {
    "pipeline": "the pipeline",
    "classes": "the classes",
    "image_size": "the image size",
    "train_images": "the number of training images",
    "test_images": "the number of test images",
    "skipped_classes": "the classes left out",
    "train_sha256": "the training images' fingerprint",
    "test_sha256": "the test images' fingerprint",
}
PIPELINE_WORDS = {"held": "held on the device", "streamed": "streamed from files, each crop cut from the full image"}


def data_difference(recorded: dict, seen: dict) -> str:
    """The first way two data.json records differ, in words: "the pipeline differs (held on the device then,
    streamed from files ... now)"."""
    for key, words in DATA_WORDS.items():
        if key == "pipeline" and not (key in recorded and key in seen):
            continue  # a record older than the key: its pipeline is not known
        if recorded.get(key) != seen.get(key):
            if key.endswith("sha256"):
                return f"{words} differs"
            then, now = (
                PIPELINE_WORDS.get(v, v) if key == "pipeline" else v for v in (recorded.get(key), seen.get(key))
            )
            return f"{words} differs ({then} then, {now} now)"
    return "nothing but the place differs"


def same_data(a: dict, b: dict) -> bool:
    """Whether two data.json records describe the same images through the same pipeline (a record older than
    `pipeline` matches either: its images' fingerprints still tell the pipelines apart)."""
    ignored = {*DATA_PLACE, *(() if "pipeline" in a and "pipeline" in b else ("pipeline",))}
    return {k: v for k, v in a.items() if k not in ignored} == {k: v for k, v in b.items() if k not in ignored}


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


BESIDE = Locks()  # the default: each lock beside what it guards


class Store:
    def __init__(self, root: Path, locks: Locks = BESIDE) -> None:
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
            readers = ((CONFIG, read_config), (METRICS, read_metrics), (HISTORY, read_history), (DATA, read_data))
            for name, reader in readers:
                try:
                    if (run_dir / name).exists():
                        read = reader(run_dir / name, epochs) if name == HISTORY else reader(run_dir / name)
                        epochs = read.epochs if name == CONFIG else epochs
                except PermissionError:  # the run folder itself is another user's, closed to this one
                    raise not_permitted(run_dir, "read") from None
                except Damaged as error:
                    self.damaged[run_dir / name] = error.why
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
        aside, run_dir = f"set aside as {SET_ASIDE.format(name=path.name, time='<time>')}", path.parent
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
        """Set each damaged file aside (files.set_aside: kept, never deleted) and return the new paths: the sweep
        then does what `damage_fate` says."""
        moved = [set_aside(path) for path in self.damaged]
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
            recorded = read_data(run_dir / DATA)
            if not same_data(recorded, data):
                raise StoreError(
                    f"{run_dir} was trained on {describe_data(recorded)}, but {seen} {describe_data(data)}: "
                    f"{data_difference(recorded, data)}; a result on other data needs another --out"
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
                write_data(run_dir, data[cfg.run_id()])

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

    def summary_rows(self) -> tuple[list[dict], set[str]]:
        """One row per run folder: its config (schema.config_values), its state and metrics; and the config keys
        the runs' config.json files hold as written."""
        rows, written = [], set()
        for config_path in sorted(self.runs.glob(f"*/{CONFIG}")):
            run_dir, config = config_path.parent, read_object(config_path)
            written.update(config)
            state = self.state(run_dir)
            row = {"run_id": run_dir.name, **config_values(config), **(self.metrics(run_dir) or {})}
            row.update(status=state.status, reason=state.reason, epochs_completed=state.epochs)
            rows.append(row)
        return rows, written

    def check_folder(self) -> None:
        """StoreError unless the toolkit's files in the folder are its own: a sweep never overwrites another's."""
        if self.summary.exists():
            with open(self.summary) as f:
                header = f.readline()
            if not header.startswith("run_id,"):
                raise StoreError(f"{self.summary} was not written by this toolkit: move it away, or use another --out")
        self.read_designs()

    def lock_sweep(self) -> contextlib.AbstractContextManager:
        """Hold the folder's lock for this sweep (Locks.hold_sweep)."""
        return self.locks.hold_sweep(self.root)

    def lock_run(self, run_id: str) -> contextlib.AbstractContextManager:
        """Hold one run's lock (Locks.hold_run)."""
        return self.locks.hold_run(self.root, run_id)

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
        rows, written = self.summary_rows()
        present = written if rows else set(SUMMARY_COLUMNS)
        columns = [c for c in SUMMARY_COLUMNS if c in present or c in METRIC_COLUMNS or c == "run_id"]
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        if not self.summary.exists() or self.summary.read_text() != text.getvalue():
            atomic.write_text(self.summary, text.getvalue())
        return self.summary
