"""The local launcher: one worker process per device slot, fed runs one at a time by the sweep process.

Each worker (spawned, so CUDA starts cleanly in it) asks for a run, trains it with execute_run and streams
its epochs back over a pipe. The sweep process hands out runs, drives the progress bars and rebuilds
summary.csv after each run. A worker that dies (OOM killer, segfault) has its run recorded as failed and is
replaced; a worker whose sweep process dies (SIGKILL) exits at once instead of training on unsupervised.

With --procs-per-run N a run trains on N processes (DDP): a slot is N GPUs (or, on the CPU, N processes on gloo)
and its worker is the run's rank 0, which starts the other ranks for each run with multiprocessing (spawned, like
the workers) and hands each its place, `Ranks` (rendezvous on this machine, a fresh port per run). torchrun itself
is not used here: the worker keeps its pipe to the sweep process (progress, metrics), and it sees each rank's exit
code, so that a run whose rank died fails in one line naming the rank: with its error, which the rank records as
every launcher's ranks do, or else its signal or exit code, each through execute.py's `rank_error`.

With a time limit (a GPU lent for minutes), a run is started only while the longest run of this sweep so far
would still finish in time, and runs still training at the limit are stopped: they stay unfinished and resume
from their last checkpoint on the next start.
"""

import argparse
import math
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING

from ablations.config import ConfigError, RunConfig
from ablations.store import FAILED, Store
from ablations.sweep.execute import EndRun, execute_run, follow_run, limit_cpu_threads, name_ranks, rank_error
from ablations.sweep.progress import SweepProgress

if TYPE_CHECKING:
    from ablations.engine.distributed import Ranks


def add_local_options(parser: argparse.ArgumentParser) -> None:
    """The sweep command's options of the local launcher (the command checks them against each other)."""
    parser.add_argument("--devices", default="auto", help="auto, cpu, cuda, or GPU indices: 0,1 (local launcher)")
    parser.add_argument(
        "--jobs-per-device", type=int, metavar="N",
        help="concurrent runs per device (default: 1 per GPU; on the CPU one per core, each run single-threaded)",
    )  # fmt: skip
    parser.add_argument(
        "--time-limit", type=float, metavar="MIN",
        help="local launcher: start no run that the longest run so far says would end after MIN minutes, and stop "
        "the runs in flight at MIN (they resume on the next start)",
    )  # fmt: skip


def local_devices(args: argparse.Namespace) -> list[str]:
    """The --devices and --jobs-per-device of the command line, checked (the latter filled in when not given) against
    the sweep's --procs-per-run (checked before); ConfigError in one line for a bad one, and for a --time-limit that
    is not a number of minutes > 0."""
    from convmixer.runtime import parse_devices, usable_cores  # torch: once the command line is parsed

    try:
        devices = parse_devices(args.devices)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if devices != ["cpu"] and len(devices) < args.procs_per_run:
        raise ConfigError(
            f"--procs-per-run {args.procs_per_run} is not accepted on {len(devices)} GPU(s) ({', '.join(devices)}): "
            "a run takes that many GPUs"
        )
    if args.jobs_per_device is None:
        args.jobs_per_device = max(1, usable_cores() // args.procs_per_run) if devices == ["cpu"] else 1
    if args.jobs_per_device < 1:
        raise ConfigError(f"--jobs-per-device {args.jobs_per_device} is not accepted: expected an integer >= 1")
    if args.time_limit is not None and not 0 < args.time_limit < math.inf:
        raise ConfigError(f"--time-limit {args.time_limit} is not accepted: expected a number of minutes > 0")
    return devices


def device_slots(devices: list[str], jobs_per_device: int, procs_per_run: int = 1) -> list[tuple[str, ...]]:
    """One worker slot per (device, job), interleaved: cuda:0, cuda:1, cuda:0, cuda:1. A sweep with fewer runs
    than slots takes the first ones, so N runs on N GPUs get one GPU each before any GPU gets a second run.
    A slot is the device of each of a run's processes, rank 0's first: with procs_per_run > 1 a GPU slot is that
    many GPUs ((cuda:0, cuda:1); GPUs left over stay idle), a CPU slot the CPU that many times (they share the
    cores)."""
    if devices == ["cpu"]:
        groups = [("cpu",) * procs_per_run]
    else:
        count = len(devices) // procs_per_run
        groups = [tuple(devices[i * procs_per_run : (i + 1) * procs_per_run]) for i in range(count)]
    return [group for _ in range(jobs_per_device) for group in groups]


def slot_name(devices: tuple[str, ...]) -> str:
    """A slot as the progress lines and failure records name it: cuda:0,cuda:1, or cpu."""
    return ",".join(dict.fromkeys(devices))


def _exit_with_sweep() -> None:
    """Block until the sweep process is gone, then end this worker: an orphan would race a restarted sweep."""
    multiprocessing.parent_process().join()
    os._exit(1)


def _worker_main(conn: Connection, devices: tuple[str, ...], store_root: Path) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep process's to handle; it stops us:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # unwind, so temps are cleaned up
    threading.Thread(target=_exit_with_sweep, daemon=True).start()
    limit_cpu_threads(devices[0])
    if devices[0].startswith("cuda"):
        import torch  # in the worker: the sweep process imports this module to parse its options

        torch.cuda.set_device(devices[0])
    store = Store(store_root)
    while True:
        conn.send(("ready",))
        task = conn.recv()
        if task is None:
            return
        cfg = RunConfig.from_dict(task)
        run_id = cfg.run_id()
        on_epoch = lambda record, run_id=run_id: conn.send(("epoch", run_id, record))  # noqa: E731
        if len(devices) == 1:
            metrics = execute_run(cfg, store, devices[0], on_epoch=on_epoch)
        else:
            metrics = RankGroup(cfg, store, devices).run(on_epoch)
        conn.send(("end", run_id, metrics))


def _rank_main(values: dict, run_dir: Path, device: str, ranks: "Ranks") -> None:
    """A rank other than 0 of a run: train beside its worker (rank 0); follow_run records what stopped it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_sweep, daemon=True).start()  # its worker gone, a rank has no one to follow
    try:
        follow_run(RunConfig.from_dict(values), run_dir, device, ranks)
    except Exception:  # recorded in the run folder for rank 0: no traceback on the sweep's console
        sys.exit(1)


# How long the other ranks may take to exit once rank 0 has ended its run: after a run, or an error that closed the
# group's connections, they end within seconds.
RANK_EXIT_S = 20


def free_port() -> int:
    """A TCP port free on this machine now, for a run's rendezvous (Ranks.master_port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RankGroup:
    """The processes of one run on several (--procs-per-run): this worker as rank 0, the others spawned for the run,
    each handed its `Ranks` (rendezvous on this machine, a fresh port per run)."""

    def __init__(self, cfg: RunConfig, store: Store, devices: tuple[str, ...]) -> None:
        from ablations.engine.distributed import Ranks  # torch: in the worker, not in the sweep process

        self.cfg, self.store, self.devices = cfg, store, devices
        port = free_port()
        self.ranks = [Ranks(rank, len(devices), rank, "127.0.0.1", port) for rank in range(len(devices))]

    def run(self, on_epoch: Callable[[dict], None]) -> dict:
        """Train the run on every rank; its metrics, with a failure naming the rank that died first and why."""
        context = multiprocessing.get_context("spawn")
        run_dir = self.store.run_dir(self.cfg)
        others = []
        for rank in range(1, len(self.devices)):
            args = (self.cfg.to_dict(), run_dir, self.devices[rank], self.ranks[rank])
            process = context.Process(target=_rank_main, args=args)
            process.start()
            others.append((rank, process))
        try:
            metrics = execute_run(self.cfg, self.store, self.devices[0], on_epoch=on_epoch, ranks=self.ranks[0])
        finally:
            hung = set()
            for rank, process in others:
                process.join(timeout=RANK_EXIT_S)
                if process.is_alive():  # stuck (a collective waits out its timeout, a stopped process never ends)
                    process.kill()
                    process.join()
                    hung.add(rank)
        # Rank 0's failure names the ranks that recorded their error (execute_run); the others are named here.
        reported = self.store.rank_faults(run_dir, len(self.devices))
        unreported = [(rank, process) for rank, process in others if rank not in reported]
        faults = [rank_error(rank, why) for rank, process in unreported if (why := exit_cause(process, rank in hung))]
        if metrics["status"] != FAILED or not faults:
            return metrics
        killed = any(process.exitcode < 0 for _, process in others)  # a signal may not come again: rerun resumes
        reason = name_ranks(faults, metrics["reason"])
        return self.store.record_failure(run_dir, reason, ",".join(self.devices), transient=killed)


def exit_cause(process: multiprocessing.process.BaseProcess, hung: bool) -> str:
    """How a rank's process that recorded no error ended, in a few words ("" if it ended well): its signal or exit
    code, or that it was still running RANK_EXIT_S after rank 0 had ended (`hung`: then this launcher killed it)."""
    if hung:
        return f"still running {RANK_EXIT_S} s after rank 0 ended: killed"
    if process.exitcode == 0:
        return ""
    if process.exitcode < 0:
        return f"killed by {signal.Signals(-process.exitcode).name}"
    return f"exited with code {process.exitcode}"


@dataclass
class Worker:
    devices: tuple[str, ...]  # its slot
    process: multiprocessing.process.BaseProcess
    conn: Connection
    run_id: str | None = None  # the run it is training
    started_at: float = 0.0  # time.monotonic() when it took that run
    healthy: bool = False  # it asked for work at least once, so it started fine


class LocalLauncher:
    trains_here = False  # in its workers

    def __init__(
        self, store: Store, devices: list[str], jobs_per_device: int, time_limit_s: float | None = None,
        procs_per_run: int = 1,
    ) -> None:  # fmt: skip
        self.store = store
        self.slots = device_slots(devices, jobs_per_device, procs_per_run)
        self.context = multiprocessing.get_context("spawn")
        self.time_limit_s = time_limit_s
        self.longest_run_s = 0.0  # the estimate of the next run's time: the longest this sweep has seen

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def start_worker(self, devices: tuple[str, ...]) -> Worker:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(target=_worker_main, args=(theirs, devices, self.store.root))
        process.start()
        theirs.close()
        return Worker(devices, process, ours)

    def run(self, configs: list[RunConfig], progress: SweepProgress, end_run: EndRun) -> dict[str, dict]:
        """Train every config, each ended by `end_run`; return {run_id: metrics} of those that ran (all of them
        unless workers kept dying)."""
        self.pending = deque(configs)
        self.progress, self.end_run, self.results = progress, end_run, {}
        self.restarts_left = len(configs)
        self.deadline = time.monotonic() + (self.time_limit_s if self.time_limit_s is not None else float("inf"))
        workers = [self.start_worker(devices) for devices in self.slots[: len(configs)]]
        try:
            while workers:
                if self.time_left() <= 0:
                    self.progress.write("time limit reached: the runs in flight stop now and resume on the next start")
                    break
                timeout = None if self.time_limit_s is None else self.time_left()
                ready = wait([w.conn for w in workers] + [w.process.sentinel for w in workers], timeout)
                for worker in [w for w in workers if w.conn in ready or w.process.sentinel in ready]:
                    self.serve(worker)
                    if not worker.process.is_alive():
                        workers.remove(worker)
                        workers += self.bury(worker)
        finally:
            for worker in workers:
                worker.process.terminate()
            for worker in workers:
                worker.process.join(timeout=10)
                worker.process.kill()  # no-op if it is gone; one stuck in a long native call is not waited for
        return self.results

    def serve(self, worker: Worker) -> None:
        """Answer every message the worker has sent."""
        while worker.conn.poll():
            try:
                kind, *payload = worker.conn.recv()
            except (EOFError, ConnectionResetError):
                return
            if kind == "ready":
                worker.healthy = True
                fits = self.longest_run_s < self.time_left()
                cfg = self.pending.popleft() if self.pending and fits else None
                try:
                    worker.conn.send(cfg.to_dict() if cfg else None)
                except OSError:  # it died just after asking; bury() replaces it
                    self.pending.extendleft([cfg] if cfg else [])
                    return
                worker.run_id, worker.started_at = (cfg.run_id() if cfg else None), time.monotonic()
                if cfg:
                    self.progress.started(worker.run_id, slot_name(worker.devices))
            elif kind == "epoch":
                self.progress.epoch(*payload)
            elif kind == "end":
                self.finish(worker)

    def finish(self, worker: Worker, exit_code: int | None = None) -> None:
        """End the worker's run: it sent its metrics, or it died in the run (exit_code says how)."""

        def why_it_died() -> str:
            killed = " (SIGKILL: the kernel's out-of-memory killer?)" if exit_code == -signal.SIGKILL else ""
            return f"worker process on {slot_name(worker.devices)} died (exit code {exit_code}){killed}"

        self.results[worker.run_id] = self.end_run(worker.run_id, why_it_died, slot_name(worker.devices))
        self.longest_run_s = max(self.longest_run_s, time.monotonic() - worker.started_at)
        worker.run_id = None

    def bury(self, worker: Worker) -> list[Worker]:
        """A worker has exited: fail the run it died in, and replace it if it was healthy and work is left."""
        worker.process.join()
        code = worker.process.exitcode
        if worker.run_id is not None:  # it may have died right after writing metrics.json: end_run looks first
            self.finish(worker, code)
        if not worker.healthy:
            self.progress.write(
                f"worker on {slot_name(worker.devices)} exited before taking a run (exit code {code}); see above"
            )
        elif self.pending and self.restarts_left > 0:
            self.restarts_left -= 1
            return [self.start_worker(worker.devices)]
        return []
