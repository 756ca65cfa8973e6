"""The sweep as one long Parquet table, `<out>/<sweep>.parquet`: a row per run, epoch and metric of history.json
(sweep, run_id, status, epoch, time, metric, value; time: when the epoch ended, UTC), each row with the run's config
keys, provenance and run-level numbers (`run/params`, `run/macs`, `run/train_time_s`...) as columns, so that pandas,
polars or DuckDB filter and pivot it without the toolkit, and plot accuracy against MACs without a join. A run that
recorded no epoch has no rows."""

from pathlib import Path

import pandas as pd

from ablations import atomic
from ablations.store import CONFIG_KEYS, METRIC_FIELDS
from analysis.export.runs import PROVENANCE, RUN_LEVEL, Run

COLUMNS = ["sweep", "run_id", "status", "epoch", "time", "metric", "value", *CONFIG_KEYS, *PROVENANCE]


def _rows(run: Run) -> pd.DataFrame:
    ended = run.epoch_times()
    time = pd.to_datetime(run.history["epoch"].map(ended), unit="s", utc=True)
    return run.history.assign(
        sweep=run.sweep, run_id=run.run_id, status=run.status, time=time, **run.config, **run.provenance
    ).assign(**run.run_level())


def table(runs: list[Run]) -> pd.DataFrame:
    """The run-level columns are those of METRIC_FIELDS that any run recorded, empty where a run did not."""
    run_level = [f"{RUN_LEVEL}{name}" for name in METRIC_FIELDS if any(name in run.final for run in runs)]
    frames = [_rows(run) for run in runs if len(run.history)]
    columns = COLUMNS + run_level
    return pd.concat(frames, ignore_index=True).reindex(columns=columns) if frames else pd.DataFrame(columns=columns)


def write(runs: list[Run], out: Path) -> Path:
    """Written whole, then renamed over an earlier export of the same sweep: a reader sees one or the other."""
    path = Path(out) / f"{runs[0].sweep}.parquet"
    atomic.write_bytes(path, table(runs).to_parquet(index=False))
    return path
