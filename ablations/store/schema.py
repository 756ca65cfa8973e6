"""What each file of a run folder holds, declared once: the file names, the run statuses, and the fields of
config.json (with its one rule for keys added later), metrics.json, history.json, data.json, checkpoint.pt and the
rank fault files.

The engine and the sweep write these files and analysis reads them, all through these declarations: a new epoch
metric or data field is one entry here, which the writer checks, the readers (ablations.store.files) validate by
type, summary.csv and the exports all see.
"""

import dataclasses
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ablations.config import RunConfig
from convmixer.arguments import AUTOCAST_PRECISIONS

# A run folder: its config, the engine's per-epoch history, resumable state and final metrics, and its log.
CONFIG, HISTORY, CHECKPOINT, METRICS, LOG = "config.json", "history.json", "checkpoint.pt", "metrics.json", "log.txt"
DATA = "data.json"  # in a run folder: the data it trained on (`Store.check_run` compares a rerun's with it)
RUNS, SUMMARY = "runs", "summary.csv"  # in the sweep folder: one folder per run, and the table derived from them
DESIGN, STUDY_COPY = "sweep.json", "study.toml"  # the sweep's designs (ablations.design), the study file it came from
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
    """One field of a run file: who writes it, what a value may be, and whether a done run needs it."""

    writer: str  # metrics.json: "both": the engine and record_failure; "engine" (on a GPU only: "gpu"; on several
    # processes: "ddp"; streaming with bad_images=skip: "skip"); "failure": record_failure. Other files: who composes it
    check: Callable[[Any], bool]  # a value, when there and not null, passes it
    accepted: str  # the check in words, for the one-line error
    done_needs: bool = False  # a done run must have it (the report computes with it)
    column: bool = False  # a column of summary.csv


def _text(writer: str, column: bool = False) -> Field:
    return Field(writer, lambda value: isinstance(value, str), "a string", column=column)


def _flag(writer: str) -> Field:
    return Field(writer, lambda value: isinstance(value, bool), "true or false")


# metrics.json: every field the engine (a finished run) and record_failure (a failed one) write. The summary.csv
# columns keep this order.
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
    "precision_used": Field("engine", lambda value: value in AUTOCAST_PRECISIONS, _one_of(AUTOCAST_PRECISIONS)),
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

# history.json: a list with one record per completed epoch, written by the engine after each epoch (and kept in
# the checkpoint to resume from); every record has its `epoch`, and the analysis draws its curves from the others.
HISTORY_FIELDS = {
    "epoch": Field("engine", _positive_int, "a positive integer"),
    "train_loss": Field("engine", _number, "a finite number"),
    "train_acc": Field("engine", _fraction, "a number in [0, 1]"),
    "lr": Field("engine", _number, "a finite number"),
    "train_time_s": Field("engine", _seconds, "a number >= 0"),
    "train_images_per_s": Field("engine", _positive, "a positive number"),
    "test_loss": Field("engine", _number, "a finite number"),
    "test_acc": Field("engine", _fraction, "a number in [0, 1]"),
    "epoch_time_s": Field("engine", _seconds, "a number >= 0"),
}
# A history.json key not declared above (a newer toolkit's epoch metric) is read if its value is a number, so that an
# older toolkit keeps a newer run's curves instead of setting its history aside; the engine never writes one.
UNDECLARED_HISTORY_FIELD = Field("newer toolkit", _number, "a finite number")
# A history.json record is a dozen numbers (about 300 bytes): a file of more bytes than this per epoch of its run was
# not written by the engine, and is refused unparsed (a 254 MB one cost every sweep start 35 s and 1.3 GB).
HISTORY_BYTES_PER_EPOCH = 16_384

# data.json: where the data was (written by the sweep's plan) and what it is (the loaded splits' identity), so that
# a rerun on other data is refused; an export carries the `exported` fields.
DATA_FIELDS = {
    "data": _text("plan"),  # the dataset's label
    "data_root": _text("plan"),  # as RunConfig.recorded() holds it
    "classes": Field("splits", _texts, "a list of strings"),
    "image_size": Field("splits", _positive_int, "a positive integer"),
    "train_images": Field("splits", _positive_int, "a positive integer"),
    "test_images": Field("splits", _positive_int, "a positive integer"),
    "train_sha256": _text("splits"),
    "test_sha256": _text("splits"),
    "skipped_classes": Field("splits", _texts, "a list of strings"),  # only where classes were skipped
}
DATA_PLACE = ("data", "data_root")  # where the data was, not what it is: a moved archive is the same data
EXPORTED_DATA = ("data", "train_sha256", "test_sha256")  # what an export says of the data

# checkpoint.pt: the keys the engine saves and needs to resume (and "skipped_images" where it skipped any).
CHECKPOINT_KEYS = ("run_id", "epoch", "model", "optimizer", "scaler", "history", "wall_time_s")

# config.json: RunConfig.to_dict() of the run, written once when its folder is made.
CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(RunConfig))
CONFIG_DEFAULTS = RunConfig().to_dict()
SUMMARY_COLUMNS = ("run_id", *CONFIG_KEYS, *METRIC_COLUMNS)


def config_values(written: dict) -> dict:
    """config.json's one rule for keys added to RunConfig after a run: the run ran with that key's default (a new
    key defaults to the old behaviour), so it is read as the default and never written back."""
    return {key: written.get(key, default) for key, default in CONFIG_DEFAULTS.items()}


def first_bad_field(values: dict, fields: dict[str, Field], undeclared: Field | None = None) -> str:
    """Why `values` (one record of a run file) do not fit `fields`, in a few words; "" when they do. A key `fields`
    does not declare is refused, unless `undeclared` says what its value may be."""
    for key, value in values.items():
        if key not in fields and undeclared is None:
            return f"{key!r} is not a field of it ({', '.join(fields)})"
        spec = fields.get(key, undeclared)
        if value is not None and not spec.check(value):
            return f"{key}={json.dumps(value)} is not accepted: expected {spec.accepted}"
    return ""
