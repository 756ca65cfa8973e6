"""The sweep as an MLflow file store, `<out>/mlruns`: experiment <sweep>, one MLflow run per run, named by its run
id, with its config as params, a metric step per epoch, its run-level numbers as `run/<name>` metrics at its last
step, its status and provenance as tags (the commit also as mlflow.source.git.commit). The run starts and ends when
the training did (finished_at less wall_time_s, and finished_at), each epoch's metrics are stamped with the time
it ended: an MLflow run lasts as long as its training. `mlflow ui --backend-store-uri <out>/mlruns` shows it (with
the full mlflow package: the export's extra brings mlflow-skinny, which has no UI).

MLflow 3 keeps the file store in maintenance mode and refuses it unless MLFLOW_ALLOW_FILE_STORE is set: this
module sets it for its own process, since a folder of plain files is what an export after the fact should leave
(`mlflow migrate-filestore` moves it into a database)."""

import os
import shutil
import time
from pathlib import Path

from ablations import atomic
from ablations.store import DONE, UNFINISHED
from analysis.export.runs import Run

TAG = "convmixer."  # the prefix of this toolkit's tags
WHOLE = f"{TAG}exported"  # set last on a run: one without it was cut short (a kill) and is removed by the next export
BATCH = 1000  # the most metrics one log_batch takes


def _millis(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def drop_unreadable(store: Path) -> None:
    """Remove what a full disk or a kill left that MLflow cannot read: a folder whose meta.yaml is missing or
    empty (its own client fails on the whole store then). An experiment's folder is removed only with no
    readable run inside."""
    import yaml

    def readable(folder: Path) -> bool:
        try:
            return isinstance(yaml.safe_load((folder / "meta.yaml").read_text()), dict)
        except (OSError, ValueError, yaml.YAMLError):
            return False

    for experiment in [folder for folder in store.glob("[!.]*") if folder.is_dir()]:
        runs = [folder for folder in experiment.iterdir() if folder.is_dir() and folder.name != "tags"]
        for run in runs:
            if not readable(run):
                shutil.rmtree(run)
        if not readable(experiment) and not any(run.exists() for run in runs):
            shutil.rmtree(experiment)


def write_run(client, experiment_id: str, run: Run) -> str:
    from mlflow.entities import Metric, Param

    tags = {f"{TAG}run_id": run.run_id, f"{TAG}status": run.status}
    tags |= {f"{TAG}{key}": value for key, value in run.facts().items()}
    if run.provenance["toolkit_commit"]:
        tags["mlflow.source.git.commit"] = run.provenance["toolkit_commit"]
    started = _millis(run.started_at)
    made = client.create_run(experiment_id, start_time=started, run_name=run.run_id, tags=tags).info.run_id
    ended, last = run.epoch_times(), max(run.epochs(), default=0)
    finished = _millis(run.finished_at) or round(time.time() * 1000)  # a run with no finished_at: the export's
    metrics = [
        Metric(name, value, _millis(ended.get(epoch)) or finished, epoch)
        for epoch, values in run.epochs().items()
        for name, value in values.items()
    ]
    metrics += [Metric(name, value, finished, last) for name, value in run.run_level().items()]
    client.log_batch(made, params=[Param(key, str(value)) for key, value in run.config.items()])
    for start in range(0, len(metrics), BATCH):
        client.log_batch(made, metrics=metrics[start : start + BATCH])
    if run.status != UNFINISHED:  # an unfinished run recorded no end: it stays RUNNING, as MLflow says of those
        client.set_terminated(made, status="FINISHED" if run.status == DONE else "FAILED", end_time=finished)
    client.set_tag(made, WHOLE, "true")
    return made


def write(runs: list[Run], out: Path) -> Path:
    """A run exported before is deleted (MLflow's deleted state, which `mlflow gc` purges) once its new export is
    written: a second export replaces the first, and a failed one leaves the first in place. What a kill or a full
    disk left that MLflow cannot read is removed first; a run cut short (without WHOLE) is replaced like any earlier
    export, so the store holds one whole run per run id after every finished export."""
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    from mlflow.tracking import MlflowClient

    store = Path(out).resolve() / "mlruns"
    with atomic.naming_failures(store):
        drop_unreadable(store)
        client = MlflowClient(tracking_uri=store.as_uri())
        experiment = client.get_experiment_by_name(runs[0].sweep)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(runs[0].sweep)
    for run in runs:  # a run cut short by a kill is one of the `earlier`: its run's next export removes it
        with atomic.naming_failures(f"{store / experiment_id} (the MLflow run of {run.run_id})"):
            earlier = client.search_runs([experiment_id], f"tags.`{TAG}run_id` = '{run.run_id}'")
            write_run(client, experiment_id, run)
            for old in earlier:
                client.delete_run(old.info.run_id)
    return store
