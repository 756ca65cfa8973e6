"""The sweep as TensorBoard event files, `<out>/tensorboard/<sweep>/<run_id>/`: a scalar per metric and epoch at
the time the epoch ended (not the export's), the run-level numbers as `run/<name>` scalars at its last step, and the
run's hparams (its config, status and provenance, with its run-level numbers), so that TensorBoard's HPARAMS tab
compares the runs. Written with torch's SummaryWriter, which stores scalars as 32-bit floats."""

import contextlib
import threading
from collections.abc import Iterator
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


@contextlib.contextmanager
def thread_errors() -> Iterator[None]:
    """SummaryWriter writes its event file from a thread of its own: a full disk there printed that thread's
    traceback. The first such error is kept and raised here instead, after the block."""
    caught = []
    before, threading.excepthook = threading.excepthook, lambda args: caught.append(args.exc_value)
    try:
        yield
    finally:
        threading.excepthook = before
    if caught:
        raise caught[0]


def write(runs: list[Run], out: Path) -> Path:
    """Each run's folder is written whole, then swapped in for its earlier export (atomic.write_folder): a second
    export replaces the first, it never adds a second set of event files."""
    root = Path(out) / "tensorboard" / runs[0].sweep
    for run in runs:
        with atomic.naming_failures(root / run.run_id), thread_errors():  # SummaryWriter's errors name no file
            atomic.write_folder(root / run.run_id, lambda staging, run=run: write_run(run, staging))
    return root
