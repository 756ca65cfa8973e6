"""The sweep as offline W&B runs, `<out>/wandb/offline-run-<time>-<run_id>/`, one per run, which `wandb sync
<out>/wandb/offline-run-*` uploads later (nothing here touches the network): project <sweep>, run id and name the
store's run id, its config, status and provenance as config, a history step per epoch, its final numbers as the
summary. W&B's own capture of this machine (git, system metrics, hardware) is off: it would describe the machine
that exported, not the one that trained."""

import shutil
import tempfile
from pathlib import Path

from ablations.store import DONE
from analysis.export.runs import Run


def write_run(run: Run, out: Path) -> None:
    import wandb

    settings = wandb.Settings(
        mode="offline",
        silent=True,
        console="off",
        disable_git=True,
        save_code=False,
        x_disable_stats=True,
        x_disable_meta=True,
        x_disable_machine_info=True,
    )
    config = {**run.config, "status": run.status, **run.provenance}
    made = wandb.init(
        project=run.sweep, id=run.run_id, name=run.run_id, dir=out, config=config, tags=[run.status], settings=settings
    )
    try:
        for epoch, metrics in run.epochs().items():
            made.log(metrics, step=epoch)
        made.summary.update(run.final)
    finally:
        made.finish(exit_code=0 if run.status == DONE else 1)


def write(runs: list[Run], out: Path) -> Path:
    """A run's earlier offline folders are set aside while its new one is written, then removed (or put back if
    the write fails): a second export replaces the first, so `wandb sync` finds one folder per run."""
    root = Path(out) / "wandb"
    root.mkdir(parents=True, exist_ok=True)
    for run in runs:
        earlier = sorted(root.glob(f"offline-run-*-{run.run_id}"))
        aside = Path(tempfile.mkdtemp(prefix=f".{run.run_id}.", suffix=".old", dir=root))
        for path in earlier:
            path.rename(aside / path.name)
        try:
            write_run(run, Path(out))
        except BaseException:
            for path in root.glob(f"offline-run-*-{run.run_id}"):
                shutil.rmtree(path, ignore_errors=True)  # the half-written new folder
            for path in earlier:
                (aside / path.name).rename(path)
            raise
        finally:
            shutil.rmtree(aside, ignore_errors=True)
    return root
