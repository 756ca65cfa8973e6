"""Runs one config inside its run folder: the part shared by the local worker processes and the SLURM jobs.

train_run does the training, checkpointing and metrics; this wraps it with the run's log.txt and turns any
exception (CUDA out of memory included) into a metrics.json with status "failed" and a one-line reason, so that
one bad run is recorded and the sweep goes on. An interrupt (Ctrl-C, SIGTERM) is not a failure: the run
stays unfinished and resumes from its last checkpoint next time.
"""

import os
import socket
import time
import traceback
from collections.abc import Callable

import torch

from ablations.config import RunConfig
from ablations.engine.train import train_run
from ablations.store import LOG, Store
from convmixer.runtime import resolve_device


def limit_cpu_threads(device: str) -> None:
    """One intra-op thread on a CPU device unless OMP_NUM_THREADS says otherwise: ConvMixers small enough to
    train on a CPU run several times faster single-threaded than with threads fighting over busy cores
    (measured 12x on a loaded 2-core VM). Parallelism on a CPU comes from --jobs-per-device instead."""
    if resolve_device(device).type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {text[:300]}"


def execute_run(
    cfg: RunConfig,
    store: Store,
    device: str,
    *,
    keep_checkpoints: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> dict:
    """Train (or resume) `cfg` in its run folder on `device` and return its metrics; never raises on a bad run."""
    run_dir = store.run_dir(cfg)
    store.start_run(run_dir)
    with open(run_dir / LOG, "a", buffering=1) as log_file:

        def log(line: str) -> None:
            log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

        log(f"start on {device} (host {socket.gethostname()}, pid {os.getpid()})")
        try:
            metrics = train_run(cfg, run_dir, device=device, log=log, on_epoch=on_epoch)
        except (KeyboardInterrupt, SystemExit):
            log("interrupted: the run resumes from its last checkpoint next time")
            raise
        except Exception as error:  # a failed run is data for the sweep, not a crash
            log("".join(traceback.format_exception(error)).rstrip())
            metrics = store.record_failure(run_dir, one_line(error), device)
        log(f"finished: {metrics['status']}" + (f" ({metrics['reason']})" if metrics["reason"] else ""))
    if not keep_checkpoints:
        store.drop_checkpoint(run_dir)
    return metrics
