"""Read sweeps from the result store into tidy pandas tables: one row per run, and the per-epoch history in long form.

It reads the run files themselves (config.json, metrics.json, history.json), not summary.csv, so every config key
and metric is there with its JSON type. Several sweeps load into one table with a `sweep` column.
"""

import warnings
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from ablations.config import ConfigError, RunConfig
from ablations.store import (
    CONFIG,
    CONFIG_KEYS,
    DATA,
    DONE,
    EXPORTED_DATA,
    HISTORY,
    METRICS,
    RUNS,
    UNFINISHED,
    StoreError,
    check_done_metrics,
    read_config_values,
    read_data,
    read_history,
    read_metrics,
)
from analysis.errors import AnalysisError


def _read(reader: Callable[..., Any], *args: Any) -> Any:
    """A run file read (or checked) by the store's own reader, its StoreError turned into an AnalysisError (same
    message)."""
    try:
        return reader(*args)
    except StoreError as error:
        raise AnalysisError(str(error)) from None


def done(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that finished with status done: the only ones whose numbers enter a table or a figure."""
    return runs[runs["status"] == DONE]


def check_config(config: dict, path: Path) -> None:
    """AnalysisError naming `path` unless its values are ones a run accepts (RunConfig.validate): a hand edit such
    as "kernel_size": "3" would otherwise make a variant of its own."""
    try:
        RunConfig(**config).validate()
    except ConfigError as error:
        raise AnalysisError(f"{path}: {error}") from None


def run_dirs(sweep: Path) -> list[Path]:
    """The run folders of a sweep, in a stable order; raises AnalysisError if `sweep` is not a sweep folder."""
    runs = Path(sweep) / RUNS
    if not runs.is_dir():
        raise AnalysisError(f"{sweep} is not a sweep folder: expected {runs} with one folder per run")
    return sorted(path for path in runs.iterdir() if path.is_dir() and (path / CONFIG).exists())


def sweep_name(sweep: Path) -> str:
    return Path(sweep).resolve().name


def _sweep_runs(sweeps: Iterable[Path | str]) -> Iterator[tuple[str, Path]]:
    """(sweep name, run folder) for every run of every sweep, in order."""
    for sweep in sweeps:
        for run_dir in run_dirs(Path(sweep)):
            yield sweep_name(sweep), run_dir


def load_runs(sweeps: Iterable[Path | str]) -> pd.DataFrame:
    """One row per run: sweep, run_id, every config key, then metrics.json's fields.

    A run with no metrics.json yet (running, or killed) has status "unfinished". A done run's metrics are checked
    (check_done_metrics): a value of the wrong type or range is an AnalysisError naming the file. A run id met
    again in a later sweep is the same config and seed, so only its first occurrence is kept (with a warning), not
    counted twice.
    """
    rows = []
    for sweep, run_dir in _sweep_runs(sweeps):
        metrics_path = run_dir / METRICS
        metrics = _read(read_metrics, metrics_path) if metrics_path.exists() else {"status": UNFINISHED, "reason": ""}
        if metrics["status"] == DONE:
            _read(check_done_metrics, metrics, metrics_path)
        config = _read(read_config_values, run_dir / CONFIG)
        check_config(config, run_dir / CONFIG)
        rows.append({"sweep": sweep, "run_id": run_dir.name, **config, **metrics})
    if not rows:
        return pd.DataFrame(columns=["sweep", "run_id", *CONFIG_KEYS, "status", "reason"])
    runs = pd.DataFrame(rows)
    repeated = runs.duplicated("run_id")
    if repeated.any():
        warnings.warn(f"{repeated.sum()} run(s) appear in more than one sweep; kept the first of each", stacklevel=2)
    return runs[~repeated].reset_index(drop=True)


def load_history(sweeps: Iterable[Path | str], run_ids: Collection[str] | None = None) -> pd.DataFrame:
    """Every run's per-epoch record in long form: sweep, run_id, epoch, metric, value (one row per number). Only the
    runs of `run_ids` when given: a history is read only where it is drawn (one can be long)."""
    frames = []
    for sweep, run_dir in _sweep_runs(sweeps):
        if run_ids is not None and run_dir.name not in run_ids:
            continue
        history_path = run_dir / HISTORY
        records = _read(read_history, history_path) if history_path.exists() else []
        if records:
            wide = pd.DataFrame(records).assign(sweep=sweep, run_id=run_dir.name)
            frames.append(wide.melt(id_vars=["sweep", "run_id", "epoch"], var_name="metric", value_name="value"))
    if not frames:
        return pd.DataFrame(columns=["sweep", "run_id", "epoch", "metric", "value"])
    return pd.concat(frames, ignore_index=True).drop_duplicates(["run_id", "epoch", "metric"])


def load_data(sweeps: Iterable[Path | str]) -> pd.DataFrame:
    """The data each run trained on, as its data.json recorded it: sweep, run_id, data (its label), train_sha256,
    test_sha256 (the fingerprints of the finished splits); empty where a run predates data records."""
    rows = []
    for sweep, run_dir in _sweep_runs(sweeps):
        path = run_dir / DATA
        record = _read(read_data, path) if path.exists() else {}
        fields = {key: record.get(key) for key in EXPORTED_DATA}
        rows.append({"sweep": sweep, "run_id": run_dir.name, **fields})
    return pd.DataFrame(rows, columns=["sweep", "run_id", *EXPORTED_DATA]).drop_duplicates("run_id")


def history_gaps(runs: pd.DataFrame, history: pd.DataFrame) -> dict[str, str]:
    """The done runs whose training curve is missing, cut short or longer than the run, run id -> why ("no
    history.json"), so that a report can name them and leave them out instead of drawing a wrong curve or fewer
    curves without a word."""
    epochs = history.groupby("run_id")["epoch"].nunique()
    gaps = {}
    for row in done(runs).to_dict("records"):
        found, expected = int(epochs.get(row["run_id"], 0)), row.get("epochs_completed")
        if not found:
            gaps[row["run_id"]] = f"no {HISTORY} (missing or empty)"
        elif pd.notna(expected) and found < expected:
            gaps[row["run_id"]] = f"{HISTORY} has {found} of {int(expected)} epochs"
        elif pd.notna(expected) and found > expected:
            gaps[row["run_id"]] = f"its {HISTORY} has {found} epochs, the run {int(expected)}"
    return gaps
