"""The sweep as TensorBoard event files, `<out>/tensorboard/<sweep>/<run_id>/`: a scalar per metric and epoch at
the time the epoch ended (not the export's), the run-level numbers as `run/<name>` scalars at its last step, and the
run's hparams (its config, status and provenance, with its run-level numbers), so that TensorBoard's HPARAMS tab
compares the runs. Written with torch's SummaryWriter, which stores scalars as 32-bit floats."""

from pathlib import Path

from ablations import atomic
from analysis.export.runs import Run


def write_run(run: Run, folder: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    epochs, ended = run.epochs(), run.epoch_times()
    with SummaryWriter(log_dir=str(folder)) as writer:
        for epoch, metrics in epochs.items():
            for name, value in metrics.items():
                writer.add_scalar(name, value, epoch, walltime=ended.get(epoch))
        # The run-level numbers as scalars at the run's last step, which the HPARAMS tab shows beside its config.
        for name, value in run.run_level().items():
            writer.add_scalar(name, value, max(epochs, default=0), walltime=run.finished_at)
        # add_hparams would write into a sub-folder of its own: the hparams summaries go beside the scalars instead.
        values = {**run.config, "status": run.status, **run.facts()}
        for summary in hparams(values, run.run_level()):
            writer.file_writer.add_summary(summary)


def write(runs: list[Run], out: Path) -> Path:
    """Each run's folder is written whole, then swapped in for its earlier export (atomic.write_folder): a second
    export replaces the first, it never adds a second set of event files."""
    root = Path(out) / "tensorboard" / runs[0].sweep
    for run in runs:
        atomic.write_folder(root / run.run_id, lambda staging, run=run: write_run(run, staging))
    return root
