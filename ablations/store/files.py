"""Reading and writing the run files that ablations.store.schema declares, and the one rule for a file that cannot
be read: a `Damaged` error, one line naming the file and why, which carries its own advice (for a run file: how to
redo that run), and `set_aside`, the one way a damaged file is put out of the way (kept, never deleted).

A file this user may not read or replace (another user's) is not damage but an AccessError naming its owner.
"""

import json
import os
import pwd
import time
from pathlib import Path

from ablations import atomic
from ablations.config import RunConfig
from ablations.store.schema import (
    CONFIG,
    DATA,
    DATA_FIELDS,
    DONE,
    FINISHED,
    HISTORY,
    HISTORY_BYTES_PER_EPOCH,
    HISTORY_FIELDS,
    METRIC_FIELDS,
    METRICS,
    RANK_FAULT,
    RUNS,
    UNDECLARED_HISTORY_FIELD,
    config_values,
    first_bad_field,
)

# The one word for a file set aside: <name>.damaged-<time>, beside it.
SET_ASIDE = "{name}.damaged-{time}"


class StoreError(RuntimeError):
    """A store file that cannot be read; the message names it."""


class AccessError(StoreError):
    """A store file this user may not read or replace (another user's): refused, never taken for damage."""


class Damaged(StoreError):
    """A file that cannot be read (a hand edit, a disk error): `why` names it, and the message adds what to do."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{why}; {redo_advice(path)}" if is_run_file(path) else why)
        self.path, self.why = Path(path), why


def is_run_file(path: Path) -> bool:
    return Path(path).name in (CONFIG, METRICS, HISTORY, DATA) and Path(path).parent.parent.name == RUNS


def redo_advice(path: Path) -> str:
    """What redoes the run of a damaged run file. Deleting the file alone would not always: a done run without its
    history.json stays done, and without config.json or data.json the sweep only writes them again. A run whose
    folder is gone is trained again from scratch."""
    return f"delete its run folder {Path(path).parent} to redo that run"


def set_aside(path: Path) -> Path:
    """Rename `path` to <name>.damaged-<time> beside it and return the new path."""
    aside = path.with_name(SET_ASIDE.format(name=path.name, time=time.strftime("%Y%m%d-%H%M%S")))
    try:
        os.replace(path, aside)
    except PermissionError:
        raise not_permitted(path, "set aside") from None
    return aside


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
        raise Damaged(path, f"{path} is not valid JSON ({error})") from None
    except OSError as error:  # a folder where the file should be, a disk error
        raise Damaged(path, f"{path} cannot be read ({error.strerror})") from None


def read_object(path: Path, required: tuple[str, ...] = ()) -> dict:
    """A JSON object file with every `required` key, as config.json and metrics.json are (a hand edit may have
    left anything)."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise Damaged(path, f"{path} is not accepted: expected a JSON object, found {type(value).__name__}")
    missing = [key for key in required if key not in value]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise Damaged(path, f"{path} is not accepted: it has no {missing[0]!r} key{more}")
    return value


def read_config_values(path: Path) -> dict:
    """A run's config.json as values of every RunConfig key (schema.config_values: a key the run predates is its
    default)."""
    return config_values(read_object(path))


def read_config(path: Path) -> RunConfig:
    return RunConfig(**read_config_values(path))


def read_metrics(path: Path) -> dict:
    """A finished run's metrics.json: an object whose status is one of FINISHED, and, of a done run, with the
    values check_done_metrics asks for (the sweep must not call done what the report refuses)."""
    metrics = read_object(path, ("status",))
    if metrics["status"] not in FINISHED:  # any other status would count the run as neither done nor failed
        raise Damaged(path, f"{path}: status {metrics['status']!r} is not accepted: expected {', '.join(FINISHED)}")
    if metrics["status"] == DONE:
        check_done_metrics(metrics, path)
    return metrics


def check_done_metrics(metrics: dict, path: Path) -> None:
    """Damaged (naming `path` and the key) unless a done run's metrics have the types and ranges the report
    computes with: a hand edit or a damaged file must not become a number in a table."""
    for key, spec in METRIC_FIELDS.items():
        if key not in metrics and spec.done_needs:
            raise Damaged(path, f"{path} is not accepted: a {DONE} run needs {key!r}")
        value = metrics.get(key)
        if (value is not None or spec.done_needs) and not spec.check(value):
            raise Damaged(
                path, f"{path}: {key}={json.dumps(value)} is not accepted for a {DONE} run: expected {spec.accepted}"
            )


def read_history(path: Path, epochs: int | None = None) -> list[dict]:
    """A run's history.json: one record per completed epoch, each with its 'epoch' and HISTORY_FIELDS of their types
    (and any undeclared key of a number: schema.UNDECLARED_HISTORY_FIELD). Given the run's `epochs`, a file far
    larger than such a run writes is refused before it is parsed."""
    size = path.stat().st_size
    if epochs is not None and size > epochs * HISTORY_BYTES_PER_EPOCH:
        raise Damaged(path, f"{path} is not accepted: {size:,} bytes, more than a run of {epochs} epochs writes")
    records = read_json(path)
    if not isinstance(records, list) or not all(isinstance(record, dict) and "epoch" in record for record in records):
        raise Damaged(path, f"{path} is not accepted: expected a JSON list of objects, each with 'epoch'")
    for number, record in enumerate(records, 1):
        why = first_bad_field(record, HISTORY_FIELDS, UNDECLARED_HISTORY_FIELD)
        if why:
            raise Damaged(path, f"{path} is not accepted: in its record {number}, {why}")
    return records


def read_data(path: Path) -> dict:
    """A run's data.json: an object of DATA_FIELDS of their types."""
    record = read_object(path)
    why = first_bad_field(record, DATA_FIELDS)
    if why:
        raise Damaged(path, f"{path} is not accepted: {why}")
    return record


def _check_declared(name: str, values: dict, fields: dict, where: str) -> None:
    undeclared = sorted(set(values) - set(fields))
    if undeclared:  # a new field is declared first, so that the readers, summary.csv and the exports know it
        raise ValueError(f"{name} field {undeclared[0]!r} is not declared in ablations.store.{where}")


def write_metrics(run_dir: Path, metrics: dict) -> None:
    """Write a finished run's metrics.json; ValueError for a field METRIC_FIELDS does not declare."""
    _check_declared(METRICS, metrics, METRIC_FIELDS, "METRIC_FIELDS")
    atomic.write_json(run_dir / METRICS, metrics)


def write_history(run_dir: Path, history: list[dict]) -> None:
    """Write a run's history.json; ValueError for a field HISTORY_FIELDS does not declare."""
    for record in history[-1:]:  # every record is made alike: the newest stands for them
        _check_declared(HISTORY, record, HISTORY_FIELDS, "HISTORY_FIELDS")
    atomic.write_json(run_dir / HISTORY, history)


def write_data(run_dir: Path, record: dict) -> None:
    """Write a run's data.json; ValueError for a field DATA_FIELDS does not declare."""
    _check_declared(DATA, record, DATA_FIELDS, "DATA_FIELDS")
    atomic.write_json(run_dir / DATA, record)


def write_rank_fault(run_dir: Path, rank: int, cause: str) -> None:
    """Record, for rank 0, the one line that stopped `rank` (> 0) of a run on several processes (Store.rank_faults)."""
    atomic.write_text(run_dir / RANK_FAULT.format(rank), cause + "\n")


def epochs_completed(run_dir: Path) -> int:
    """How many epochs the run's history.json records (0 before the first epoch ends)."""
    return len(read_history(run_dir / HISTORY)) if (run_dir / HISTORY).exists() else 0
