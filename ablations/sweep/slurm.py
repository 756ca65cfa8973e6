"""The SLURM launcher: the sweep's runs as one job array (submitit), writing to the same store as local runs.

Each array task trains one run with execute_run, so resuming, failure records and summary.csv work exactly as
locally. The sweep process submits, then follows the jobs with squeue (no accounting needed) and the store
(history.json for epochs, metrics.json for results) until every job has ended:
- a job that ends without metrics.json (scancel, time limit, node failure) fails its run with SLURM's state in
  the reason; --retry-failed resumes it from its last epoch checkpoint;
- a job past its time limit ends as TIMEOUT and fails its run the same way; a longer --slurm-time and
  --retry-failed resume it. Jobs are not requeued: submitit would requeue a job from a USR2 that SLURM sends
  ahead of the limit, but SLURM (22.05) sends it at once when the limit is shorter than the warning time or when
  a requeued job restarts, and a USR2 that comes before Python is up kills the job. So the warning is a SIGCONT
  (a no-op) and a run uses all of its time, checkpointing every epoch;
- job ids are kept in slurm/jobs.json, so a rerun after the sweep process was killed follows the jobs still
  queued or running instead of submitting the same runs again; and a job only trains its run while holding the
  run's lock, so even a duplicate job never trains a run twice at once;
- each job checks the data its node sees against the run's data.json before training: a node that mounts another
  copy of data_root trains nothing, and its run fails naming both datasets;
- Ctrl-C cancels the jobs (the runs stay resumable).
With --procs-per-run N a run is one job of N tasks (srun starts them; on GPUs one GPU each, --slurm-gpus per node,
over as many nodes as that takes). Each task takes its rank and the rendezvous (the first node's name, a port
drawn from the job id) from SLURM's environment through submitit's TorchDistributedEnvironment: the job needs no
torchrun inside srun, and the function submitit runs in each task is the same train_in_job, which builds the
task's `Ranks` from it (job_ranks). Rank 0 holds the run's lock, checks the data and writes the run's files; the
others only train, and one that fails leaves its error in the run folder for rank 0's failure record (execute.py),
as a local rank does. A run's checkpoint is dropped (or kept) by the sweep process as it ends the run (end_run).
submitit is imported only here, and only when the launcher is used.
"""

import argparse
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ablations import atomic
from ablations.config import ConfigError, RunConfig
from ablations.store import HISTORY, AccessError, Locks, Store, StoreError, read_json
from ablations.sweep.execute import EndRun, execute_run, follow_run, limit_cpu_threads, record_exception
from ablations.sweep.plan import data_record
from ablations.sweep.progress import SweepProgress

if TYPE_CHECKING:
    from ablations.engine.distributed import Ranks

JOBS = "jobs.json"  # {run_id: SLURM job id}, in the sweep's slurm/ folder
LIVE_STATES = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
    "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD",
}  # fmt: skip
# sbatch options the launcher sets itself: naming them in --slurm-option would silently fight it.
OWN_OPTIONS = {
    "partition": "--slurm-partition", "time": "--slurm-time", "cpus-per-task": "--slurm-cpus", "mem": "--slurm-mem",
    "gpus-per-node": "--slurm-gpus", "gres": "--slurm-gpus", "gpus": "--slurm-gpus", "account": "--slurm-account",
    "qos": "--slurm-qos", "array": "--slurm-parallel", "job-name": "--name", "output": None, "error": None,
    "signal": None, "open-mode": None, "ntasks": "--procs-per-run", "ntasks-per-node": "--procs-per-run",
    "nodes": "--procs-per-run",
}  # fmt: skip
NO_WARNING = {"signal": "CONT@1"}  # replaces submitit's --signal=USR2@90: see the module docstring


@dataclass
class SlurmOptions:
    partition: str | None = None
    time_min: int = 240
    cpus_per_task: int | None = None  # None: 1 without GPUs, 8 per GPU
    mem: str | None = None  # SLURM's syntax: 16G, 500M
    gpus: int = 0  # per run; without GPUs a run trains on the CPU
    account: str | None = None
    qos: str | None = None
    extra: dict[str, str | bool] = field(default_factory=dict)  # more sbatch options: {"constraint": "a100"}
    parallel: int | None = None  # at most this many array tasks run at once (None: all)
    poll_s: float = 15.0  # how often the sweep process asks squeue (it looks at the store every second)
    procs: int = 1  # processes (tasks) per run: DDP (the sweep's --procs-per-run, checked); `gpus` is then per node

    def __post_init__(self) -> None:
        """ConfigError, naming the command's option, for a value SLURM would refuse or misread (the cluster itself
        is asked in check_cluster)."""
        for option, value in (("slurm-time", self.time_min), ("slurm-cpus", self.cpus_per_task),
                              ("slurm-parallel", self.parallel)):  # fmt: skip
            if value is not None and value < 1:
                raise ConfigError(f"--{option} {value} is not accepted: expected an integer >= 1")
        if not self.poll_s > 0:
            raise ConfigError(f"--slurm-poll {self.poll_s} is not accepted: expected a number of seconds > 0")
        if self.gpus < 0:
            raise ConfigError(f"--slurm-gpus {self.gpus} is not accepted: expected an integer >= 0")
        if self.mem is not None and not re.fullmatch(r"[1-9][0-9]*[KMGT]?", self.mem):
            raise ConfigError(f"--slurm-mem {self.mem!r} is not accepted: expected a size like 16G or 500M")
        if self.gpus and self.procs > self.gpus and self.procs % self.gpus:
            raise ConfigError(
                f"--procs-per-run {self.procs} is not accepted with --slurm-gpus {self.gpus}: a run on several "
                "nodes takes every GPU of each, so the processes must be a multiple of the GPUs per node"
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace, procs: int) -> "SlurmOptions":
        """The options add_slurm_options parsed, for runs on `procs` processes each."""
        return cls(
            partition=args.slurm_partition, time_min=args.slurm_time, cpus_per_task=args.slurm_cpus,
            mem=args.slurm_mem, gpus=args.slurm_gpus, account=args.slurm_account, qos=args.slurm_qos,
            extra=parse_extra(args.slurm_option), parallel=args.slurm_parallel, poll_s=args.slurm_poll,
            procs=procs,
        )  # fmt: skip

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"

    def sbatch(self) -> dict[str, str | int | bool]:
        """The sbatch options of every job, in submitit's spelling (underscores); None-valued ones are left out.
        Several processes per run: that many tasks, on GPUs one GPU each, as few nodes as the GPUs per node allow."""
        per_node = min(self.procs, self.gpus) if self.gpus else self.procs
        gpus = per_node if self.procs > 1 and self.gpus else self.gpus
        cpus = self.cpus_per_task or (8 * (1 if self.procs > 1 else self.gpus) if self.gpus else 1)
        own = {"partition": self.partition, "time": self.time_min, "cpus_per_task": cpus, "mem": self.mem}
        own |= {"gpus_per_node": gpus or None, "account": self.account, "qos": self.qos}
        if self.procs > 1:
            own |= {"nodes": self.procs // per_node, "ntasks_per_node": per_node}
        return {key: value for key, value in {**own, **self.extra}.items() if value is not None}


def add_slurm_options(parser: argparse.ArgumentParser) -> None:
    """The sweep command's --slurm-* options, with SlurmOptions' defaults (SlurmOptions.from_args reads them)."""
    slurm = parser.add_argument_group("SLURM (--launcher slurm: one job array, one job per run; docs/slurm.md)")
    slurm.add_argument("--slurm-partition", metavar="NAME", help="partition (default: the cluster's default)")
    slurm.add_argument(
        "--slurm-time", type=int, default=SlurmOptions.time_min, metavar="MIN", help="time limit per job in minutes"
    )
    slurm.add_argument("--slurm-cpus", type=int, metavar="N", help="CPUs per run (default: 1, or 8 per GPU)")
    slurm.add_argument("--slurm-mem", metavar="SIZE", help="memory per run in SLURM's syntax: 16G, 500M")
    slurm.add_argument(
        "--slurm-gpus", type=int, default=SlurmOptions.gpus, metavar="N", help="GPUs per run (default 0: CPU)"
    )
    slurm.add_argument("--slurm-account", metavar="NAME", help="account to charge")
    slurm.add_argument("--slurm-qos", metavar="NAME", help="quality of service")
    slurm.add_argument(
        "--slurm-option", action="append", default=[], metavar="KEY=VALUE",
        help="any other sbatch option, e.g. constraint=a100 or exclusive (repeatable)",
    )  # fmt: skip
    slurm.add_argument("--slurm-parallel", type=int, metavar="N", help="run at most N jobs at once (default: all)")
    slurm.add_argument(
        "--slurm-poll", type=float, default=SlurmOptions.poll_s, metavar="S", help="ask squeue every S seconds"
    )


def parse_extra(items: list[str]) -> dict[str, str | bool]:
    """--slurm-option values: KEY=VALUE or a bare KEY (a flag such as exclusive), with or without leading --."""
    extra: dict[str, str | bool] = {}
    for item in items:
        key, has_value, value = item.removeprefix("--").partition("=")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", key):
            raise ConfigError(f"--slurm-option {item!r} is not accepted: expected an sbatch option, KEY=VALUE or KEY")
        if key.replace("_", "-") in OWN_OPTIONS:
            owner = OWN_OPTIONS[key.replace("_", "-")]
            instead = f"use {owner}" if owner else "the launcher sets it"
            raise ConfigError(f"--slurm-option {item!r} is not accepted: {instead}")
        extra[key] = value if has_value else True
    return extra


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher slurm needs the submitit package: pip install submitit") from None
    return submitit


def sbatch_flags(options: dict[str, str | int | bool]) -> list[str]:
    """The command-line spelling of sbatch() (what submitit writes as #SBATCH lines)."""
    return [f"--{key.replace('_', '-')}" + ("" if value is True else f"={value}") for key, value in options.items()]


def check_cluster(options: SlurmOptions) -> None:
    """Ask the controller whether it would run one job with these options (sbatch --test-only submits nothing):
    a controller that is down, a bad partition, account or QoS, more CPUs, memory or GPUs than a node has,
    all fail here in one line, before anything is written."""
    import_submitit()
    command = ["sbatch", "--test-only", *sbatch_flags(options.sbatch()), "--wrap", "true"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ConfigError("--launcher slurm is not accepted here: no sbatch on PATH; use --launcher local") from None
    except subprocess.TimeoutExpired:
        raise ConfigError("--launcher slurm: the SLURM controller did not answer sbatch --test-only in 120 s") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()] or [f"exit code {result.returncode}"]
        reason = re.sub(r"^(sbatch: error: |allocation failure: )", "", lines[-1].strip())
        raise ConfigError(f"SLURM refuses these jobs ({' '.join(command[2:-2])}): {reason}")


def job_ranks() -> "Ranks":
    """This task's place in its job's run, from SLURM's environment as submitit reads it (rank, world size, local
    rank, and the rendezvous: the first node, a port drawn from the job id; loopback when the job has one node)."""
    from ablations.engine.distributed import Ranks  # torch: in the job, not in the sweep process

    job = import_submitit().helpers.TorchDistributedEnvironment()
    one_node = job.world_size == job.local_world_size  # loopback, not a node name that may not resolve
    addr = "127.0.0.1" if one_node else job.master_addr
    return Ranks(job.rank, job.world_size, job.local_rank, addr, job.master_port)


def train_in_job(store_root: str, values: dict, device: str, locks: Locks, procs: int = 1) -> dict | None:
    """One array task: train one run (unless a duplicate job trained it already; see the module docstring) on the
    data its data.json records. A lock it cannot hold or other data on this node fail the run in one line. With
    `procs` > 1 every task of the job runs this, as the rank SLURM's environment gives it (rank 0 returns the
    metrics, the others None)."""
    store, cfg = Store(Path(store_root), locks), RunConfig.from_dict(values)
    run_dir = store.run_dir(cfg)
    ranks = job_ranks() if procs > 1 else None
    if ranks is not None and not ranks.main:
        if store.metrics(run_dir) is None:  # rank 0 trains it too: a duplicate job's ranks all stop here
            follow_run(cfg, run_dir, device, ranks)
        return None
    try:
        lock = store.lock_run(cfg.run_id())
    except (StoreError, OSError) as error:  # another user's lock file, a filesystem without locks
        return record_exception(store, run_dir, error, device)
    with lock:
        metrics = store.metrics(run_dir)
        if metrics is None:
            limit_cpu_threads(device)
            try:
                store.check_run(cfg, data_record(cfg), seen=f"node {socket.gethostname()} sees")
            except Exception as error:  # other data here, or none: nothing trains, the run says why
                return record_exception(store, run_dir, error, device)
            metrics = execute_run(cfg, store, device, ranks=ranks)
    store.write_summary()
    return metrics


@dataclass
class JobState:
    state: str  # SLURM's: PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, ...; UNKNOWN when SLURM has forgotten it
    reason: str = ""  # squeue's reason: JobArrayTaskLimit, Resources, TimeLimit, ...
    node: str = ""

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


def squeue() -> dict[str, JobState] | None:
    """Every job of this user that the controller still remembers (ended ones for MinJobAge, 5 min by default),
    by id (`123_4` for array tasks); None when the controller does not answer (it may be slow or restarting)."""
    command = ["squeue", "--noheader", "--array", "--states=all", f"--user={os.getuid()}", "--format=%i|%T|%r|%N"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None
    if result.returncode != 0:
        return None
    jobs = {}
    for line in result.stdout.splitlines():
        job_id, state, reason, node = (line.split("|") + ["", "", ""])[:4]
        jobs[job_id.strip()] = JobState(state.split()[0] if state.strip() else "UNKNOWN", reason.strip(), node.strip())
    return jobs


def sacct_state(job_id: str) -> str:
    """The final state of a job squeue has forgotten, from accounting; UNKNOWN where accounting is off."""
    command = ["sacct", "--noheader", "--parsable2", "--allocations", "--format=State", f"--jobs={job_id}"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"
    states = result.stdout.split() if result.returncode == 0 else []
    return states[-1] if states else "UNKNOWN"  # "CANCELLED by 0" splits into words: the state comes first


class SlurmLauncher:
    trains_here = False  # in its jobs

    def __init__(self, store: Store, options: SlurmOptions) -> None:
        self.store, self.options = store, options
        self.folder = store.root / "slurm"
        self.queue: dict[str, JobState] = {}  # squeue's last answer
        self.answered = True  # whether squeue answered the last time we asked

    def log_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}_0_log.out"  # submitit's name; its .err sibling has the tracebacks

    def submit(self, configs: list[RunConfig]) -> dict[str, str]:
        """Submit the configs as one job array; return {run_id: job id}, also recorded in slurm/jobs.json."""
        submitit = import_submitit()
        executor = submitit.SlurmExecutor(folder=self.folder)
        sbatch = {key: value for key, value in self.options.sbatch().items() if key not in self.options.extra}
        executor.update_parameters(
            job_name=self.store.root.name, array_parallelism=self.options.parallel or len(configs),
            additional_parameters=NO_WARNING | self.options.extra, **sbatch,
        )  # fmt: skip
        n, root = len(configs), str(self.store.root.resolve())  # a job may start in another directory
        values = [cfg.to_dict() for cfg in configs]
        try:
            jobs = executor.map_array(
                train_in_job, [root] * n, values, [self.options.device] * n, [self.store.locks] * n,
                [self.options.procs] * n,
            )  # fmt: skip
        except (submitit.core.utils.FailedJobError, subprocess.CalledProcessError) as error:
            lines = str(error).strip().splitlines() or ["(no message)"]
            raise ConfigError(f"sbatch refused the job array: {lines[-1]}") from None
        submitted = {cfg.run_id(): job.job_id for cfg, job in zip(configs, jobs, strict=True)}
        atomic.write_json(self.folder / JOBS, {**self.recorded_jobs(), **submitted})
        return submitted

    def recorded_jobs(self) -> dict[str, str]:
        """slurm/jobs.json: the jobs earlier sweep processes submitted, by run id. StoreError if it is damaged: it
        is not a result, but without it a rerun cannot tell which of those jobs still run."""
        path = self.folder / JOBS
        if not path.exists():
            return {}
        try:
            jobs = read_json(path)
        except AccessError:
            raise
        except StoreError as error:
            jobs, why = None, str(error)  # not a run file: no advice to redo a run
        else:
            why = f"{path} is not accepted: expected a JSON object of run ids and SLURM job ids"
        if not isinstance(jobs, dict) or not all(isinstance(v, str) for v in jobs.values()):
            raise StoreError(
                f"{why}: it lists the jobs of earlier sweeps of this folder; cancel those still queued or running "
                f"(squeue -u $USER), then delete it and rerun"
            )
        return jobs

    def run(self, configs: list[RunConfig], progress: SweepProgress, end_run: EndRun) -> dict[str, dict]:
        """Submit every config whose job is not still queued or running, follow all of them to their end (each
        ended by `end_run`), and return {run_id: metrics}."""
        self.progress, self.end_run = progress, end_run
        self.refresh_queue()
        if not self.answered:
            raise ConfigError("the SLURM controller does not answer squeue; try again when it is back")
        recorded = self.recorded_jobs()
        watching = {
            cfg.run_id(): recorded[cfg.run_id()]
            for cfg in configs
            if cfg.run_id() in recorded and self.job_state(recorded[cfg.run_id()]).live
        }
        if watching:
            ids = ", ".join(sorted(watching.values()))
            progress.write(f"following {len(watching)} jobs submitted earlier and still in the queue: {ids}")
        to_submit = [cfg for cfg in configs if cfg.run_id() not in watching]
        if to_submit:
            submitted = self.submit(to_submit)
            watching |= submitted
            array = next(iter(submitted.values())).split("_")[0]
            parallel = min(self.options.parallel or len(to_submit), len(to_submit))
            progress.write(
                f"submitted job array {array} ({len(to_submit)} tasks, at most {parallel} at once); "
                f"logs: {self.log_path(f'{array}_<task>')} and .err"
            )
        self.seen = {run_id: self.store.state(self.store.run_dir(run_id)).epochs for run_id in watching}
        self.started: set[str] = set()
        results = {}
        asked = -float("inf")  # ask at once: jobs submitted just now are not in the answer we have
        try:
            while watching:
                if time.monotonic() - asked >= self.options.poll_s:  # the store is cheap to look at; squeue less so
                    self.refresh_queue(watching)
                    asked = time.monotonic()
                for run_id, job_id in list(watching.items()):
                    self.follow(run_id, job_id)
                    metrics = self.store.metrics(self.store.run_dir(run_id))
                    if metrics is not None or (self.answered and not self.job_state(job_id).live):
                        results[run_id] = self.finish(run_id, job_id)
                        del watching[run_id]
                if watching:
                    time.sleep(min(1.0, self.options.poll_s))
        except KeyboardInterrupt:
            if watching:
                subprocess.run(["scancel", *watching.values()], capture_output=True, timeout=60)
            raise
        return results

    def refresh_queue(self, watching: dict[str, str] | None = None) -> None:
        """Ask squeue again and show its view of our jobs; keep the last answer while the controller does not
        answer (busy or restarting), and say so once."""
        queue = squeue()
        if queue is None:
            if self.answered and watching is not None:
                self.progress.write("squeue does not answer (SLURM controller busy or down?); waiting for it")
            self.answered = False
            return
        self.queue, self.answered = queue, True
        if watching:
            states: dict[str, int] = {}
            for job_id in watching.values():
                job = self.job_state(job_id)
                label = job.state + (f" ({job.reason})" if job.state == "PENDING" and job.reason != "None" else "")
                states[label] = states.get(label, 0) + 1
            self.progress.queue(", ".join(f"{n} {label}" for label, n in sorted(states.items())))

    def job_state(self, job_id: str) -> JobState:
        """squeue's view of a job, or accounting's once squeue has forgotten it."""
        return self.queue.get(job_id) or JobState(sacct_state(job_id))

    def follow(self, run_id: str, job_id: str) -> None:
        """Report the run's start and the epochs its job has completed since we last looked."""
        history_path = self.store.run_dir(run_id) / HISTORY
        history = read_json(history_path) if history_path.exists() else []
        job = self.queue.get(job_id)
        running = job is not None and job.state in ("RUNNING", "COMPLETING")
        if run_id not in self.started and (running or len(history) > self.seen[run_id]):
            self.started.add(run_id)
            self.progress.started(run_id, f"SLURM job {job_id}" + (f" on {job.node}" if running else ""))
        for record in history[self.seen[run_id] :]:
            self.progress.epoch(run_id, record)
        self.seen[run_id] = max(self.seen[run_id], len(history))

    def finish(self, run_id: str, job_id: str) -> dict:
        if run_id not in self.started:
            self.started.add(run_id)
            self.progress.started(run_id, f"SLURM job {job_id}")

        def why_it_died() -> str:  # the job ended before execute_run did: scancel, time limit, node failure, OOM
            job = self.job_state(job_id)
            detail = f" ({job.reason})" if job.reason not in ("", "None") else ""
            self.progress.write(f"         log of SLURM job {job_id}: {self.log_path(job_id)}")
            return f"SLURM job {job_id} ended as {job.state}{detail}"

        return self.end_run(run_id, why_it_died, "slurm")
