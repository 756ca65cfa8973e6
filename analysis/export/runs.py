"""What every export carries of a run, read from the store through analysis.load: its identity and status, its
config, its per-epoch history, its run-level numbers (metrics.json: params, MACs, FLOPs, peak memory, run time...),
when it trained (not when it was exported), and what it ran on (the toolkit's commit, the hardware and GPU driver,
torch, and the sha256 of the data it trained on), so that an exported number can still be traced.

A run-level number is exported as `run/<name>` in every format: `train_time_s` of an epoch and `run/train_time_s` of
the whole run are two numbers, and a format that keeps the latest value of a name must not mix them."""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ablations.store import CONFIG_KEYS, EXPORTED_DATA, METRIC_FIELDS
from analysis.load import load_data, load_history, load_runs, sweep_name
from analysis.provenance import NOT_RECORDED

RUN_LEVEL = "run/"  # the prefix of a run-level number's name in every format

# metrics.json's facts of the machine and software (hardware: the GPU's name on a GPU, else the CPU's), then
# data.json's fingerprints of the two splits, then what the run settled on where its config left a choice
# (precision_used, ...), and when it finished.
USED = tuple(name for name in METRIC_FIELDS if name.endswith("_used"))
PROVENANCE = (
    "toolkit_commit",
    "device",
    "hardware",
    "driver",
    "torch_version",
    *EXPORTED_DATA[1:],
    *USED,
    "finished_at",
)


@dataclass(frozen=True)
class Run:
    sweep: str
    run_id: str
    status: str
    config: dict[str, Any]  # every RunConfig key
    provenance: dict[str, str | None]  # PROVENANCE; None where the run did not record it
    final: dict[str, float]  # metrics.json's numbers (test_acc, params, ...), where the run finished
    history: pd.DataFrame  # epoch, metric, value: one row per number of history.json
    finished_at: float | None  # metrics.json's finished_at as Unix seconds; None where the run did not finish

    @property
    def started_at(self) -> float | None:
        """When the run started: finished_at less its wall time (metrics.json records no start)."""
        if self.finished_at is None:
            return None
        return self.finished_at - self.final.get("wall_time_s", self.final.get("train_time_s", 0.0))

    def run_level(self) -> dict[str, float]:
        """The run-level numbers under their exported names, `run/<name>`."""
        return {f"{RUN_LEVEL}{name}": value for name, value in self.final.items()}

    def epoch_times(self) -> dict[int, float]:
        """When each epoch ended, in Unix seconds: counted back from finished_at by the epochs' own times
        (epoch_time_s), the last one ending when the run did; empty where the run has no finished_at."""
        if self.finished_at is None:
            return {}
        durations = {epoch: values.get("epoch_time_s", 0.0) for epoch, values in self.epochs().items()}
        ended, times = self.finished_at, {}
        for epoch in sorted(durations, reverse=True):
            times[epoch] = max(ended, self.started_at)
            ended -= durations[epoch]
        return dict(sorted(times.items()))

    def facts(self) -> dict[str, str]:
        """The provenance as text, "not recorded" where missing: for formats whose fields cannot be empty."""
        return {key: NOT_RECORDED if value is None else str(value) for key, value in self.provenance.items()}

    def epochs(self) -> dict[int, dict[str, float]]:
        """The history by epoch: {1: {"test_acc": 0.5, ...}, ...}."""
        by_epoch = self.history.groupby("epoch")
        return {int(epoch): dict(zip(rows["metric"], rows["value"], strict=True)) for epoch, rows in by_epoch}


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and pd.isna(value))


def _numbers(row: dict) -> dict[str, float]:
    names = (name for name in METRIC_FIELDS if name in row)
    return {
        name: row[name]
        for name in names
        if isinstance(row[name], int | float) and not isinstance(row[name], bool) and _present(row[name])
    }


def _unix_seconds(text: Any) -> float | None:
    return datetime.fromisoformat(text).timestamp() if isinstance(text, str) and text else None


def read_runs(sweep: Path) -> list[Run]:
    """Every run of the sweep folder, in the store's order; AnalysisError if it is not one or a file is damaged."""
    runs = load_runs([sweep]).merge(load_data([sweep]).drop(columns="sweep"), on="run_id", how="left")
    history = load_history([sweep])
    name = sweep_name(sweep)
    by_run = dict(tuple(history.groupby("run_id", sort=False)))  # one pass, not a filter of every row per run
    made = []
    for row in runs.to_dict("records"):
        own = by_run.get(row["run_id"], history.iloc[:0])[["epoch", "metric", "value"]].reset_index(drop=True)
        made.append(
            Run(
                sweep=name,
                run_id=row["run_id"],
                status=row["status"],
                config={key: row[key] for key in CONFIG_KEYS},
                provenance={key: row[key] if _present(row.get(key)) else None for key in PROVENANCE},
                final=_numbers(row),
                history=own.astype({"epoch": int, "value": float}),
                finished_at=_unix_seconds(row.get("finished_at")),
            )
        )
    return made
