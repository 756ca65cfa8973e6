"""The sweep as TensorBoard event files, `<out>/tensorboard/<sweep>/<run_id>/`: a scalar per metric and epoch, and
the run's hparams (its config, status and provenance, with its metrics), so that TensorBoard's HPARAMS tab
compares the runs. Written with torch's SummaryWriter, which stores scalars as 32-bit floats."""

from pathlib import Path

from ablations import atomic
from analysis.export.runs import Run


def write_run(run: Run, folder: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    epochs = run.epochs()
    last = epochs[max(epochs)] if epochs else {}
    with SummaryWriter(log_dir=str(folder)) as writer:
        for epoch, metrics in epochs.items():
            for name, value in metrics.items():
                writer.add_scalar(name, value, epoch)
        # add_hparams would write into a sub-folder of its own: the hparams summaries go beside the scalars instead.
        values = {**run.config, "status": run.status, **run.facts()}
        for summary in hparams(values, last):
            writer.file_writer.add_summary(summary)


def write(runs: list[Run], out: Path) -> Path:
    """Each run's folder is written whole, then swapped in for its earlier export (atomic.write_folder): a second
    export replaces the first, it never adds a second set of event files."""
    root = Path(out) / "tensorboard" / runs[0].sweep
    for run in runs:
        atomic.write_folder(root / run.run_id, lambda staging, run=run: write_run(run, staging))
    return root
