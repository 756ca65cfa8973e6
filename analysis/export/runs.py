"""What every export carries of a run, read from the store through analysis.load: its identity and status, its
config, its per-epoch history, its final numbers, and what it ran on (the toolkit's commit, the hardware and GPU
driver, torch, and the sha256 of the data it trained on), so that an exported number can still be traced."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ablations.store import CONFIG_KEYS, EXPORTED_DATA, METRIC_FIELDS
from analysis.load import load_data, load_history, load_runs, sweep_name
from analysis.provenance import NOT_RECORDED

# metrics.json's facts of the machine and software (hardware: the GPU's name on a GPU, else the CPU's), then
# data.json's fingerprints of the two splits.
PROVENANCE = ("toolkit_commit", "device", "hardware", "driver", "torch_version", *EXPORTED_DATA[1:])


@dataclass(frozen=True)
class Run:
    sweep: str
    run_id: str
    status: str
    config: dict[str, Any]  # every RunConfig key
    provenance: dict[str, str | None]  # PROVENANCE; None where the run did not record it
    final: dict[str, float]  # metrics.json's numbers (test_acc, params, ...), where the run finished
    history: pd.DataFrame  # epoch, metric, value: one row per number of history.json

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
            )
        )
    return made
