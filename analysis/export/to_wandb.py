"""The sweep as offline W&B runs, `<out>/wandb/offline-run-<time>-<run_id>/`, one per run, which `wandb sync
<out>/wandb/offline-run-*` uploads later (nothing here touches the network): project <sweep>, run id and name the
store's run id, its config, status and provenance as config, a history step per epoch stamped with the time
the epoch ended, its run-level numbers in the summary as `run/<name>` (the summary's plain names stay the last
epoch's). W&B's own capture of this machine (git, code, installed packages, system metrics, hardware) is off: it
would describe the machine that exported, not the one that trained. The offline folder's name and the run's start
are the export's time: wandb.init sets them itself; the run's own start and end are in its config (finished_at) and
summary (run/wall_time_s)."""

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from ablations import atomic
from ablations.store import DONE
from analysis.export.runs import Run


def write_run(run: Run, out: Path) -> None:
    import wandb

    settings = wandb.Settings(
        mode="offline",
        silent=True,
        console="off",
        disable_git=True,
        disable_code=True,
        save_code=False,
        x_save_requirements=False,
        host="",  # else the exporting machine's name
        x_disable_stats=True,
        x_disable_meta=True,
        x_disable_machine_info=True,
    )
    config = {**run.config, "status": run.status, **run.provenance}
    made = wandb.init(
        project=run.sweep, id=run.run_id, name=run.run_id, dir=out, config=config, tags=[run.status], settings=settings
    )
    try:
        ended = run.epoch_times()
        for epoch, metrics in run.epochs().items():
            stamp = {"_timestamp": ended[epoch]} if epoch in ended else {}  # when the epoch ended, not the export
            made.log(metrics | stamp, step=epoch)
        made.summary.update(run.run_level())
    finally:
        made.finish(exit_code=0 if run.status == DONE else 1)


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """W&B logs to a file beside the run: on a full disk each failed log line printed a `--- Logging error ---`
    traceback (571 lines before the error itself). Python's logging keeps such failures to itself here."""
    before, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        yield
    finally:
        logging.raiseExceptions = before


def write(runs: list[Run], out: Path) -> Path:
    """A run's new offline folder is written whole in a staging folder (W&B names it by the time), swapped in
    (atomic.publish_folder), and only then are its earlier ones removed: a second export replaces the first, so
    `wandb sync` finds one folder per run, and a failed one leaves the earlier as it was."""
    root = Path(out) / "wandb"
    root.mkdir(parents=True, exist_ok=True)
    for run in runs:
        atomic.recover_folder(root / run.run_id)  # the staging folders of a killed export
        earlier = sorted(root.glob(f"offline-run-*-{run.run_id}"))
        with (
            atomic.naming_failures(root / run.run_id),
            quiet_logging(),
            atomic.staging_folder(root / run.run_id) as staging,
        ):
            write_run(run, staging)
            (made,) = (staging / "wandb").glob(f"offline-run-*-{run.run_id}")
            atomic.publish_folder(made, root / made.name)
        for path in earlier:
            if path.name != made.name:
                shutil.rmtree(path, ignore_errors=True)
    return root
