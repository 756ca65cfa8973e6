"""Runs one config inside its run folder, and ends it in the sweep: the steps every launcher shares (local, SLURM,
in-process).

train_run does the training, checkpointing and metrics; this wraps it with the run's log.txt (the one file of a
run that holds the machine's absolute data_root) and turns any exception (CUDA out of memory included) into a
metrics.json with status "failed" and a one-line reason, so that one bad run is recorded and the sweep goes on. An
interrupt (Ctrl-C, SIGTERM) is not a failure: the run stays unfinished and resumes from its last checkpoint next
time.

end_run is the sweep process's side: once a run's worker or job is gone, the run has metrics.json (written by
execute_run) or gets one recording why it ended, the sweep's checkpoint policy is applied (a done or diverged run's
checkpoint is dropped unless the plan keeps checkpoints), and the progress display and summary.csv learn of it.
The plan hands each launcher its `EndRun` (end_run with the sweep's store, progress and policy bound).

A run on several processes fails in one line naming each rank that stopped and why, rank 0's error last:
`rank 1: DataError: ...; rank 0: RuntimeError: ... Connection closed by peer ...`. Every launcher (local ranks,
SLURM tasks, torchrun) gets it the same way: a rank other than 0 records its cause in the run folder as it stops
(follow_run), and rank 0 reads those when it records the failure (record_exception); the local launcher adds the
causes it alone sees (a rank's signal or exit code) through `rank_error` too, so this module owns the line's format.
A run's processes are an argument: the launcher that starts them hands each its `Ranks` (engine/distributed.py).
"""

import contextlib
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ablations.config import ConfigError, RunConfig
from ablations.store import FAILED, LOG, Store, write_rank_fault
from ablations.sweep.progress import SweepProgress

if TYPE_CHECKING:
    from ablations.engine.distributed import Ranks


def limit_cpu_threads(device: str) -> None:
    """One intra-op thread on a CPU device unless OMP_NUM_THREADS says otherwise: ConvMixers small enough to
    train on a CPU run several times faster single-threaded than with threads fighting over busy cores
    (measured 12x on a loaded 2-core VM). Parallelism on a CPU comes from --jobs-per-device instead."""
    # torch and the engine are imported in the worker that trains, not by the launchers' modules: the sweep
    # command imports those to parse its options, and its --help must not wait seconds for torch.
    import torch

    from convmixer.runtime import resolve_device

    if resolve_device(device).type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def check_processes(procs_per_run: int, configs: list[RunConfig]) -> None:
    """ConfigError unless every run can train on `procs_per_run` processes: at least one, and a batch_size that
    splits evenly over them (the engine computes each process's share once, in train_run)."""
    from ablations.engine.distributed import local_batch

    if procs_per_run < 1:
        raise ConfigError(f"--procs-per-run {procs_per_run} is not accepted: expected an integer >= 1")
    for batch_size in dict.fromkeys(cfg.batch_size for cfg in configs):
        local_batch(batch_size, procs_per_run)


def warn_oversubscribed(processes: int, device: str) -> None:
    """A one-line warning on stderr when a run's `processes` on this machine's `device` ("cpu" or "cuda") are more
    than its cores or GPUs: they run, but share them, each the slower."""
    import torch

    from convmixer.runtime import usable_cores

    kind = torch.device(device).type
    available, what = (usable_cores(), "CPU cores") if kind == "cpu" else (torch.cuda.device_count(), "GPUs")
    if processes > available:
        warning = f"warning: {processes} processes per run on {available} {what}: they share them, each the slower"
        print(warning, file=sys.stderr)


def torchrun_rank(environ: Mapping[str, str]) -> int | None:
    """This process's RANK when torchrun started it (its agent sets TORCHELASTIC_RUN_ID for every worker), else
    None: the toolkit's own launchers set RANK and WORLD_SIZE too, but never that."""
    if "TORCHELASTIC_RUN_ID" not in environ:
        return None
    rank = environ.get("RANK", "")
    return int(rank) if rank.isdigit() else 0  # a bad RANK is Ranks.from_env's one-line error, on this "rank 0"


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {text[:300]}"


# How long rank 0, failed, waits for the others' causes: a rank writes its own after closing its connections, which
# may be what ended rank 0's collective. Only a rank that left none (killed) makes it wait this long.
RANK_REPORT_S = 5.0


def rank_error(rank: int, cause: str) -> str:
    return f"rank {rank}: {cause}"


def name_ranks(faults: list[str], reason: str) -> str:
    """The failure line of a run on several processes: what stopped each other rank, then rank 0's `reason`."""
    return "; ".join([*faults, reason])


def record_exception(store: Store, run_dir: Path, error: Exception, device: str, world_size: int = 1) -> dict:
    """Record the exception that failed the run, in one line, through the store's record_failure; atomic.WriteError
    says whether the fault may pass (disk full), and then a plain rerun retries the run. As rank 0 of `world_size`
    processes, the line names what stopped the others too; one that left no cause was killed (or died in native
    code), which may not happen again: the failure is then transient too. If even that record cannot be written,
    the run stays unfinished (a rerun resumes it)."""
    reason, transient = one_line(error), getattr(error, "transient", False)
    if world_size > 1:
        faults = store.rank_faults(run_dir, world_size, wait_s=RANK_REPORT_S)
        reason = name_ranks([rank_error(r, cause) for r, cause in sorted(faults.items())], rank_error(0, reason))
        transient = transient or len(faults) < world_size - 1
    try:
        return store.record_failure(run_dir, reason, device, transient)
    except OSError as unwritten:
        return {"status": FAILED, "reason": f"{reason}; {unwritten}", "transient": True, "device": device}


def execute_run(
    cfg: RunConfig,
    store: Store,
    device: str,
    *,
    on_epoch: Callable[[dict], None] | None = None,
    ranks: "Ranks | None" = None,
) -> dict:
    """Train (or resume) `cfg` in its run folder on `device` and return its metrics; never raises on a bad run.
    `ranks`: this process is rank 0 of a run on several processes (its launcher starts the other ranks, which run
    `follow_run`, and gives each its place); it alone writes the run's files. None: the run's one process."""
    from ablations.engine.distributed import SINGLE
    from ablations.engine.train import train_run  # torch: see limit_cpu_threads

    run_dir = store.run_dir(cfg)
    store.start_run(run_dir)
    with open(run_dir / LOG, "a", buffering=1) as log_file:

        def log(line: str) -> None:
            try:
                log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            except OSError:  # a full disk: the run's metrics say what happened; the log line is not worth a crash
                pass

        log(f"start on {device} (host {socket.gethostname()}, pid {os.getpid()})")
        log(f"data_root {os.path.abspath(cfg.data_root)}")  # results record it portably (RunConfig.recorded)
        ranks = ranks or SINGLE
        try:
            metrics = train_run(cfg, run_dir, device=device, log=log, on_epoch=on_epoch, ranks=ranks)
        except (KeyboardInterrupt, SystemExit):
            log("interrupted: the run resumes from its last checkpoint next time")
            raise
        except Exception as error:  # a failed run is data for the sweep, not a crash
            log("".join(traceback.format_exception(error)).rstrip())
            metrics = record_exception(store, run_dir, error, device, ranks.world_size)
        log(f"finished: {metrics['status']}" + (f" ({metrics['reason']})" if metrics["reason"] else ""))
    return metrics


def follow_run(cfg: RunConfig, run_dir: Path, device: str, ranks: "Ranks") -> None:
    """Rank `ranks.rank` (not 0) of a run on several processes: train beside rank 0, which logs and writes the
    run's files; raises what stopped it, once it is recorded in one line for rank 0's failure record."""
    from ablations.engine.train import train_run

    limit_cpu_threads(device)
    try:
        train_run(cfg, run_dir, device=device, log=lambda line: None, ranks=ranks)
    except Exception as error:
        with contextlib.suppress(OSError):  # a full disk: rank 0 still records its own error
            write_rank_fault(run_dir, ranks.rank, one_line(error))
        raise


# A launcher's call when one of its runs has ended: end_run(run_id, why_it_died, device) with the sweep's part bound.
EndRun = Callable[[str, Callable[[], str], str], dict]


def end_run(
    store: Store,
    progress: SweepProgress,
    keep_checkpoints: bool,
    run_id: str,
    why_it_died: Callable[[], str],
    device: str,
) -> dict:
    """Record that a run's worker or job has ended and return its metrics. A run that ended without writing
    metrics.json (its process was killed: OOM killer, scancel, time limit) is recorded as failed, with the reason
    `why_it_died()` gives, as transient: the next plain rerun resumes it. A done or diverged run's checkpoint is
    dropped unless `keep_checkpoints` (a failed run may resume from it)."""
    run_dir = store.run_dir(run_id)
    os.listdir(run_dir)  # on NFS a directory read refreshes the cache: see a metrics.json written on another node
    metrics = store.metrics(run_dir)
    if metrics is None:
        metrics = store.record_failure(run_dir, why_it_died(), device, transient=True)
    if not keep_checkpoints:
        store.drop_checkpoint(run_dir)
    progress.finished(run_id, metrics)
    store.write_summary()
    return metrics
