"""The sweep as one long Parquet table, `<out>/<sweep>.parquet`: a row per run, epoch and metric of history.json
(sweep, run_id, status, epoch, metric, value), each row with the run's config keys and provenance as columns, so
that pandas, polars or DuckDB filter and pivot it without the toolkit. A run that recorded no epoch has no rows."""

from pathlib import Path

import pandas as pd

from ablations import atomic
from ablations.store import CONFIG_KEYS
from analysis.export.runs import PROVENANCE, Run

COLUMNS = ["sweep", "run_id", "status", "epoch", "metric", "value", *CONFIG_KEYS, *PROVENANCE]


def table(runs: list[Run]) -> pd.DataFrame:
    frames = [
        run.history.assign(sweep=run.sweep, run_id=run.run_id, status=run.status, **run.config, **run.provenance)
        for run in runs
        if len(run.history)
    ]
    return pd.concat(frames, ignore_index=True)[COLUMNS] if frames else pd.DataFrame(columns=COLUMNS)


def write(runs: list[Run], out: Path) -> Path:
    """Written whole, then renamed over an earlier export of the same sweep: a reader sees one or the other."""
    path = Path(out) / f"{runs[0].sweep}.parquet"
    atomic.write_bytes(path, table(runs).to_parquet(index=False))
    return path
