"""The result store in the formats researchers look at first, written after the fact from a sweep folder, so that
training needs none of their packages: `python -m analysis.export SWEEP --to parquet|tensorboard|wandb|mlflow`.

Module map, each importing only those above it:

    __init__.py        the formats: the module that writes each, the package it needs and the extra that brings it
    runs.py            what every format carries of a run, read through analysis.load: its config, status,
                       per-epoch history, final numbers, and what it ran on (commit, hardware, driver, torch, the
                       data's sha256)
    to_parquet.py      one long table, run x epoch x metric
    to_tensorboard.py  TensorBoard event files, one folder per run, with its hparams
    to_wandb.py        an offline W&B run per run, which `wandb sync` uploads later
    to_mlflow.py       an MLflow file store, one MLflow run per run
    __main__.py        the command: parse, check the format's package, read the sweep, write

Every format can be written again into the same folder: a run's earlier export is replaced, never duplicated.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    module: str  # analysis.export.<module> has write(runs, out) -> the path it wrote
    package: str  # the package it imports
    extra: str  # the optional extra of pyproject.toml that installs it


FORMATS = {
    "parquet": Format("to_parquet", "pyarrow", "export-parquet"),
    "tensorboard": Format("to_tensorboard", "tensorboard", "export-tensorboard"),
    "wandb": Format("to_wandb", "wandb", "export-wandb"),
    "mlflow": Format("to_mlflow", "mlflow", "export-mlflow"),
}
