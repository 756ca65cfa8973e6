"""The SLURM launcher: the same runs as one submitit job array (one GPU per run), writing to the same store.

Each array task trains one run with execute_run, so resuming, failure records and summary.csv work exactly
as locally. The sweep process submits, then follows the store (history.json for epochs, metrics.json for
results) until every job has ended; Ctrl-C cancels the jobs, and rerunning the command resumes them.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import submitit

from ablations.config import RunConfig
from ablations.progress import SweepProgress
from ablations.store import HISTORY, Store, read_json
from ablations.worker import execute_run, limit_cpu_threads


@dataclass
class SlurmOptions:
    partition: str | None = None
    time_min: int = 240
    cpus_per_task: int = 8
    cluster: str = "slurm"  # submitit's executor; "local" and "debug" run the same jobs on this machine (tests)
    poll_s: float = 15.0  # how often the sweep process looks at the store


def slurm_job(store_root: str, values: dict, keep_checkpoints: bool) -> dict:
    """One array task: train one run on the job's GPU (or CPU where it has none)."""
    store = Store(Path(store_root))
    limit_cpu_threads("auto")
    metrics = execute_run(RunConfig.from_dict(values), store, "auto", keep_checkpoints=keep_checkpoints)
    store.write_summary()
    return metrics


class SlurmLauncher:
    def __init__(self, store: Store, options: SlurmOptions, keep_checkpoints: bool) -> None:
        self.store, self.options, self.keep_checkpoints = store, options, keep_checkpoints

    def submit(self, configs: list[RunConfig]) -> list[submitit.Job]:
        executor = submitit.AutoExecutor(folder=self.store.root / "slurm", cluster=self.options.cluster)
        executor.update_parameters(
            name=self.store.root.name, timeout_min=self.options.time_min, gpus_per_node=1, tasks_per_node=1,
            cpus_per_task=self.options.cpus_per_task, slurm_partition=self.options.partition,
        )  # fmt: skip
        n, root = len(configs), str(self.store.root.resolve())  # a job may start in another directory
        return executor.map_array(slurm_job, [root] * n, [c.to_dict() for c in configs], [self.keep_checkpoints] * n)

    def run(self, configs: list[RunConfig], progress: SweepProgress) -> dict[str, dict]:
        """Submit every config and follow the jobs to their end; return {run_id: metrics}."""
        jobs = self.submit(configs)
        progress.write(
            f"submitted {len(jobs)} jobs (first {jobs[0].job_id}); their logs go to {self.store.root / 'slurm'}"
        )
        watching = {cfg.run_id(): job for cfg, job in zip(configs, jobs, strict=True)}
        self.seen = {run_id: self.store.state(self.store.runs / run_id).epochs for run_id in watching}
        self.started: set[str] = set()
        results = {}
        try:
            while watching:
                for run_id, job in list(watching.items()):
                    self.follow(run_id, job, progress)
                    if job.done():
                        self.follow(run_id, job, progress)
                        results[run_id] = self.finish(run_id, job, progress)
                        del watching[run_id]
                if watching:
                    time.sleep(self.options.poll_s)
        except KeyboardInterrupt:
            for job in watching.values():
                job.cancel(check=False)
            raise
        return results

    def follow(self, run_id: str, job: submitit.Job, progress: SweepProgress) -> None:
        """Report the epochs the job has completed since we last looked."""
        history_path = self.store.runs / run_id / HISTORY
        history = read_json(history_path) if history_path.exists() else []
        if run_id not in self.started and (job.state in ("RUNNING", "COMPLETING") or len(history) > self.seen[run_id]):
            self.started.add(run_id)
            progress.started(run_id, f"job {job.job_id}")
        for record in history[self.seen[run_id] :]:
            progress.epoch(run_id, record)
        self.seen[run_id] = max(self.seen[run_id], len(history))

    def finish(self, run_id: str, job: submitit.Job, progress: SweepProgress) -> dict:
        if run_id not in self.started:
            self.started.add(run_id)
            progress.started(run_id, f"job {job.job_id}")
        run_dir = self.store.runs / run_id
        metrics = self.store.metrics(run_dir)
        if metrics is None:  # the job ended without reaching the end of execute_run: timeout, node failure, scancel
            metrics = self.store.record_failure(run_dir, f"job {job.job_id} ended as {job.state}", f"job {job.job_id}")
        progress.finished(run_id, metrics)
        self.store.write_summary()
        return metrics
