"""The sweep as TensorBoard event files, `<out>/tensorboard/<sweep>/<run_id>/`: a scalar per metric and epoch, and
the run's hparams (its config, status and provenance, with its metrics), so that TensorBoard's HPARAMS tab
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
