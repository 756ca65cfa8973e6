"""--launcher slurm against a real one-node SLURM cluster on 127.0.0.1 (tests/slurm/cluster.sh, started once
for this module and torn down after it): job arrays, scancel, time limits, a killed sweep process,
a controller that is slow or down. The cluster tests are marked `slurm` and run only when asked with
CONVMIXER_TEST_SLURM=1 (CI sets it): as root, starting the cluster apt-installs SLURM and starts daemons, which
nobody expects from a test command on a workstation. Where no cluster can be started (not root, no apt), they
are skipped with the reason; the option checks and the array task itself are tested without one.
"""

import contextlib
import io
import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import (
    RANK_FAULT_KEYS,
    damage_an_image_only_rank_1_reads,
    read_json,
    read_summary,
    snapshot,
    tiny_configs,
    tiny_set,
)

from ablations.config import ConfigError
from ablations.run import cli
from ablations.store import LOCK, Locks, Store, hold_lock
from ablations.sweep.slurm import SlurmOptions, train_in_job

CLUSTER_SCRIPT = Path(__file__).parent / "slurm" / "cluster.sh"
OPT_IN = "CONVMIXER_TEST_SLURM"
FAST = ["--launcher", "slurm", "--slurm-poll", "0.5"]  # the tests' cluster answers at once


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A running cluster; SLURM_CONF points every command (and the jobs) at it. Yields its folder."""
    if os.environ.get(OPT_IN) != "1":
        pytest.skip(f"SLURM cluster tests run only with {OPT_IN}=1 (they install and start SLURM as root)")
    folder = tmp_path_factory.mktemp("slurm-cluster")
    started = subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), "start", str(folder)], capture_output=True, text=True, timeout=900
    )
    if started.returncode == 77:
        pytest.skip(f"no SLURM test cluster: {started.stderr.strip()}")
    assert started.returncode == 0, started.stderr
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SLURM_CONF", started.stdout.strip())
            yield folder
    finally:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)


@pytest.fixture
def start_sweep(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start sweep commands in the background; any still running when the test ends (it failed) is killed."""
    started: list[subprocess.Popen] = []

    def start(command: list[str], **kwargs) -> subprocess.Popen:
        started.append(subprocess.Popen(command, cwd=tmp_path, text=True, **kwargs))
        return started[-1]

    yield start
    for sweep in started:
        sweep.kill()
        sweep.wait()


def wait_for(condition: Callable[[], object], what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.1)
    return result


def sweep_command(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ablations.run", *FAST, *args, "--out", str(out)]


def run_cli(args: list[str]) -> tuple[int, str, str]:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        code = cli(args)
    return code, out.getvalue(), err.getvalue()


def jobs(out: Path) -> dict[str, str]:
    path = out / "slurm" / "jobs.json"
    return json.loads(path.read_text()) if path.exists() else {}


def live_jobs() -> list[str]:
    listing = subprocess.run(["squeue", "--noheader", "--array", "--format=%i %T"], capture_output=True, text=True)
    return [line for line in listing.stdout.splitlines() if line.split()[1] not in ("COMPLETED", "CANCELLED")]


def no_jobs_left() -> None:
    """A job may still be exiting when the sweep has its metrics; none may linger on."""
    wait_for(lambda: not live_jobs(), "the jobs to end", timeout=30)


def epochs(run_dir: Path) -> list[int]:
    return [record["epoch"] for record in read_json(run_dir / "history.json")]


def learning_curve(run_dir: Path) -> list[tuple]:
    """What a run learned, epoch by epoch (its timings left out)."""
    keys = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc")
    return [tuple(record[key] for key in keys) for record in read_json(run_dir / "history.json")]


def history_length(run_dir: Path) -> int:
    try:
        return len(read_json(run_dir / "history.json"))
    except (OSError, ValueError):
        return 0


def training_pid(run_dir: Path) -> int:
    """The pid of the process training the run now, from the last `start on ... pid N` line of its log."""
    return int(re.findall(r"start on cpu \(host \S+, pid (\d+)\)", (run_dir / "log.txt").read_text())[-1])


def freeze_until_ended(pid: int, sweep: subprocess.Popen, timeout: float = 150) -> tuple[str, str]:
    """Hold the training process stopped (SIGSTOP again each time SLURM's SIGCONT wakes it) until the sweep
    process has seen its job end; return the sweep's output. A frozen run is certainly partway through."""
    deadline = time.monotonic() + timeout
    while sweep.poll() is None:
        assert time.monotonic() < deadline, f"the sweep did not end in {timeout} s"
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        time.sleep(0.05)
    return sweep.communicate()


def test_a_relative_data_root_reaches_a_job_that_starts_in_another_folder(cluster, tmp_path, cifar10_jpeg):
    """The real JPEG copy of CIFAR-10 under a relative data_root: the sweep resolves it once, before submitting,
    so a job whose working directory is / (sbatch --chdir) still finds the data; the results record only its name
    (no repository here), the run's log the path the job opened."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar10-jpeg.tar.gz").symlink_to(cifar10_jpeg)
    out = tmp_path / "jpeg"
    values = tiny_set(1, dataset="imagefolder", data_root="data/cifar10-jpeg.tar.gz", patch_size=4)
    command = sweep_command(out, "--set", values, "--grid", "kernel_size=3,5", "--slurm-option", "chdir=/")
    sweep = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    rows = read_summary(out)
    assert [row["status"] for row in rows] == ["done", "done"]
    assert {row["data_root"] for row in rows} == {"cifar10-jpeg.tar.gz"}
    opened = f"data_root {tmp_path / 'data' / 'cifar10-jpeg.tar.gz'}\n"
    assert all(opened in (out / "runs" / row["run_id"] / "log.txt").read_text() for row in rows)
    no_jobs_left()


def test_a_sweep_is_one_job_array_on_the_cpu_with_the_numbers_of_a_local_run(cluster, tmp_path):
    out = tmp_path / "array"
    command = sweep_command(out, "--set", tiny_set(), "--grid", "kernel_size=3,5,7,9", "--slurm-time", "5")
    sweep = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    rows = read_summary(out)
    assert len(rows) == 4 and {row["status"] for row in rows} == {"done"}
    assert len(set(jobs(out).values())) == 4 and len({job.split("_")[0] for job in jobs(out).values()}) == 1
    array = next(iter(jobs(out).values())).split("_")[0]
    assert f"submitted job array {array} (4 tasks, at most 4 at once); logs: {out}/slurm/{array}_<task>_0_log.out" in (
        sweep.stdout
    )
    assert "squeue   " in sweep.stdout and "RUNNING" in sweep.stdout  # the queue's states, as lines off a terminal
    script = (out / "slurm" / f"{array}_submission.sh").read_text()
    assert "--cpus-per-task=1" in script and "--time=5" in script and "gpu" not in script and "gres" not in script
    assert "--signal=CONT@1" in script and "USR2" not in script  # a USR2 at the start killed 1-minute jobs
    for row in rows:
        assert "start on cpu" in (out / "runs" / row["run_id"] / "log.txt").read_text()
    # The same run trained locally gives the same numbers, bit for bit.
    local = tmp_path / "local"
    assert run_cli(["--set", tiny_set(kernel_size=5), "--out", str(local), "--devices", "cpu"])[0] == 0
    (run_id,) = [path.name for path in (local / "runs").iterdir()]
    assert learning_curve(out / "runs" / run_id) == learning_curve(local / "runs" / run_id)
    no_jobs_left()


def test_a_run_on_two_processes_is_one_job_of_two_tasks(cluster, tmp_path):
    """--procs-per-run 2: one job with two tasks, whose ranks meet through SLURM's environment (submitit's
    TorchDistributedEnvironment) and train the run with gloo; rank 0 writes it."""
    out = tmp_path / "ddp"
    command = sweep_command(out, "--set", tiny_set(), "--procs-per-run", "2", "--slurm-time", "5")
    sweep = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    (row,) = read_summary(out)
    assert row["status"] == "done"
    (job,) = jobs(out).values()
    script = (out / "slurm" / f"{job.split('_')[0]}_submission.sh").read_text()
    assert "--ntasks-per-node=2" in script and "--nodes=1" in script
    assert read_json(out / "runs" / row["run_id"] / "metrics.json")["processes"] == 2
    assert "cpu x 2 processes" in (out / "runs" / row["run_id"] / "log.txt").read_text()
    no_jobs_left()


def test_a_rank_that_fails_fails_its_run_naming_that_rank_and_its_cause(cluster, tmp_path, monkeypatch):
    """A real fault only rank 1 meets: a damaged image in its share of a streamed test set. Rank 0 sees only
    that its peer left; its record names rank 1's own error. Repaired, --retry-failed trains the run to done (a
    data error is no passing fault, so a plain rerun leaves it failed)."""
    monkeypatch.setenv("CONVMIXER_RESIDENT_BYTES", "0")  # streamed: each rank reads its own share of the files
    root = tmp_path / "imagenet"
    bad, good = damage_an_image_only_rank_1_reads(root)
    out = tmp_path / "ddp-fault"
    args = ["--preset", "smoke", "--set", RANK_FAULT_KEYS, "--data-root", str(root), "--procs-per-run", "2"]
    command = sweep_command(out, *args)
    sweep = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert sweep.returncode == 1, sweep.stdout + sweep.stderr
    (row,) = read_summary(out)
    reason = read_json(out / "runs" / row["run_id"] / "metrics.json")["reason"]
    assert re.fullmatch(rf"rank 1: DataError: .*{bad.name}.*; rank 0: .+", reason), reason
    assert row["status"] == "failed" and row["reason"] == reason
    no_jobs_left()

    bad.write_bytes(good)
    again = subprocess.run([*command, "--retry-failed"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    (row,) = read_summary(out)
    assert row["status"] == "done" and not list((out / "runs" / row["run_id"]).glob("rank*.fault"))
    no_jobs_left()


def test_a_cancelled_job_fails_its_run_with_slurms_state_and_retry_resumes_it(cluster, tmp_path, start_sweep):
    """The run is frozen (SIGSTOP) so that it is partway through when SLURM kills it: submitit lets a job work on
    between scancel's SIGTERM and SIGKILL."""
    out = tmp_path / "cancel"
    args = ["--set", tiny_set(epochs=20), "--slurm-time", "5"]
    sweep = start_sweep(sweep_command(out, *args), stdout=subprocess.PIPE)
    run_dir = wait_for(lambda: next(out.glob("runs/*/checkpoint.pt"), None), "the first checkpoint").parent
    pid = training_pid(run_dir)
    os.kill(pid, signal.SIGSTOP)
    controller = int((cluster / "slurmctld.pid").read_text())
    os.kill(controller, signal.SIGSTOP)  # a controller that does not answer for a while (busy, paged out)
    time.sleep(7)  # longer than squeue waits for an answer (MessageTimeout=5)
    os.kill(controller, signal.SIGCONT)
    (job_id,) = jobs(out).values()
    subprocess.run(["scancel", job_id], check=True)
    stdout, _ = freeze_until_ended(pid, sweep)
    assert sweep.returncode == 1, stdout
    assert "squeue does not answer" in stdout
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["status"] == "failed" and metrics["reason"] == f"SLURM job {job_id} ended as CANCELLED"
    assert f"log of SLURM job {job_id}: {out}/slurm/{job_id}_0_log.out" in stdout
    done_before = history_length(run_dir)
    assert 1 <= done_before < 20 and (run_dir / "checkpoint.pt").exists()

    code, stdout, _ = run_cli([*FAST, *args, "--out", str(out), "--retry-failed"])
    assert code == 0, stdout
    assert epochs(run_dir) == list(range(1, 21))
    assert f"resumed from {run_dir / 'checkpoint.pt'} after epoch" in (run_dir / "log.txt").read_text()
    no_jobs_left()


def test_a_job_past_its_time_limit_fails_its_run_with_timeout_and_retry_resumes_it(cluster, tmp_path, start_sweep):
    """SLURM ends a job past its 1-minute limit (it looks every 30 s). The run is frozen (SIGSTOP) so that it
    certainly outlives the limit without spending a minute of CPU."""
    out = tmp_path / "timeout"
    args = ["--set", tiny_set(epochs=20), "--slurm-time", "1"]
    sweep = start_sweep(sweep_command(out, *args), stdout=subprocess.PIPE)
    run_dir = wait_for(lambda: next(out.glob("runs/*/checkpoint.pt"), None), "the first checkpoint").parent
    stdout, _ = freeze_until_ended(training_pid(run_dir), sweep)
    (job_id,) = jobs(out).values()
    assert sweep.returncode == 1, stdout
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["reason"] == f"SLURM job {job_id} ended as TIMEOUT (TimeLimit)"
    assert 1 <= history_length(run_dir) < 20 and (run_dir / "checkpoint.pt").exists()

    code, stdout, _ = run_cli([*FAST, *args[:2], "--slurm-time", "5", "--out", str(out), "--retry-failed"])
    assert code == 0, stdout
    assert epochs(run_dir) == list(range(1, 21)) and "resumed from" in (run_dir / "log.txt").read_text()
    no_jobs_left()


def test_a_killed_sweep_process_reruns_without_losing_or_duplicating_runs(cluster, tmp_path, start_sweep):
    out = tmp_path / "killed"
    command = sweep_command(out, "--set", tiny_set(epochs=3), "--grid", "kernel_size=3,5,7", "--slurm-parallel", "1")
    sweep = start_sweep(command, stdout=subprocess.DEVNULL)
    wait_for(lambda: list(out.glob("runs/*/history.json")), "the first epoch")
    sweep.kill()  # the jobs live on in SLURM, one running and two queued
    sweep.wait()
    assert len(list(out.glob("runs/*/metrics.json"))) < 3 and live_jobs()
    # Queued jobs held, so they are still queued however long the rerun takes to start on a busy machine.
    held = [line.split()[0] for line in live_jobs() if line.split()[1] == "PENDING"]
    assert held
    subprocess.run(["scontrol", "hold", *held], check=True, capture_output=True)

    log = tmp_path / "rerun.txt"
    with log.open("w") as stdout:
        unbuffered = {**os.environ, "PYTHONUNBUFFERED": "1"}
        rerun = start_sweep(command, stdout=stdout, stderr=subprocess.STDOUT, env=unbuffered)
        wait_for(lambda: "still in the queue" in log.read_text(), "the rerun to follow the queued jobs")
        subprocess.run(["scontrol", "release", *held], check=True, capture_output=True)
        assert rerun.wait(timeout=300) == 0, log.read_text()
    printed = log.read_text()
    assert re.search(r"following [123] jobs submitted earlier and still in the queue", printed)
    assert "submitted job array" not in printed  # nothing submitted twice
    assert len(list((out / "slurm").glob("*_submission.sh"))) == 1
    rows = read_summary(out)
    assert len(rows) == 3 and {row["status"] for row in rows} == {"done"}
    for row in rows:
        run_dir = out / "runs" / row["run_id"]
        assert epochs(run_dir) == [1, 2, 3] and (run_dir / "log.txt").read_text().count("start on cpu") == 1
    no_jobs_left()


def test_a_controller_that_is_down_is_one_line_and_exit_2(cluster, tmp_path, monkeypatch):
    conf = (cluster / "slurm.conf").read_text()
    dead = tmp_path / "slurm.conf"
    with socket_closed_port() as port:
        dead.write_text(re.sub(r"SlurmctldPort=\d+", f"SlurmctldPort={port}", conf))
    monkeypatch.setenv("SLURM_CONF", str(dead))
    out = tmp_path / "down"
    code, stdout, err = run_cli([*FAST, "--set", tiny_set(), "--out", str(out)])
    assert code == 2 and err.count("\n") == 1, err
    assert "Unable to contact slurm controller" in err and not out.exists()


@contextlib.contextmanager
def socket_closed_port() -> Iterator[int]:
    """A port nothing listens on (bound for a moment to pick it, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port


@pytest.mark.parametrize(
    "args, message",
    [
        (["--slurm-partition", "nope"], "Invalid partition name specified"),
        (["--slurm-cpus", "512"], "Requested node configuration is not available"),
        (["--slurm-gpus", "1"], "Invalid generic resource (gres) specification"),  # the cluster has no GPUs
        (["--slurm-mem", "100000G"], "Requested node configuration is not available"),
    ],
)
def test_options_the_cluster_refuses_are_one_line_before_anything_is_written(cluster, tmp_path, args, message):
    out = tmp_path / "refused"
    code, _, err = run_cli([*FAST, "--set", tiny_set(), *args, "--out", str(out)])
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert err.startswith("python -m ablations.run: error: SLURM refuses these jobs (--")
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--slurm-time", "0"], "--slurm-time 0 is not accepted: expected an integer >= 1"),
        (["--launcher", "slurm", "--procs-per-run", "0"], "--procs-per-run 0 is not accepted: expected an integer"),
        (["--slurm-cpus", "0"], "--slurm-cpus 0 is not accepted"),
        (["--slurm-parallel", "0"], "--slurm-parallel 0 is not accepted"),
        (["--slurm-gpus", "-1"], "--slurm-gpus -1 is not accepted: expected an integer >= 0"),
        (["--slurm-mem", "lots"], "--slurm-mem 'lots' is not accepted: expected a size like 16G or 500M"),
        (["--slurm-poll", "0"], "--slurm-poll 0.0 is not accepted"),
        (["--slurm-option", "partition=gpu"], "--slurm-option 'partition=gpu' is not accepted: use --slurm-partition"),
        (["--slurm-option=--output=x"], "'--output=x' is not accepted: the launcher sets it"),
        (["--slurm-option", "Bad Key"], "--slurm-option 'Bad Key' is not accepted: expected an sbatch option"),
        (["--launcher", "slurm", "--set", "precision=fp16"], "precision='fp16' is not accepted on cpu"),
    ],
)
def test_bad_slurm_options_are_one_line_exit_2(tmp_path, args, message):
    code, _, err = run_cli(["--set", tiny_set(), *args, "--out", str(tmp_path / "out")])
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_a_run_on_several_processes_asks_slurm_for_that_many_tasks_over_the_nodes_it_needs():
    assert SlurmOptions(procs=2).sbatch() == {"time": 240, "cpus_per_task": 1, "nodes": 1, "ntasks_per_node": 2}
    eight = SlurmOptions(gpus=4, procs=8).sbatch()
    assert (eight["nodes"], eight["ntasks_per_node"], eight["gpus_per_node"], eight["cpus_per_task"]) == (2, 4, 4, 8)
    assert SlurmOptions(gpus=4).sbatch()["cpus_per_task"] == 32 and "ntasks_per_node" not in SlurmOptions().sbatch()
    with pytest.raises(ConfigError, match="--procs-per-run 6 is not accepted with --slurm-gpus 4"):
        SlurmOptions(gpus=4, procs=6)


@pytest.mark.slow
def test_the_sweep_command_needs_submitit_only_for_slurm(tmp_path, monkeypatch):
    hidden = "import sys; sys.modules['submitit'] = None; import ablations.run"  # as if it were not installed
    assert subprocess.run([sys.executable, "-c", hidden]).returncode == 0
    monkeypatch.setitem(sys.modules, "submitit", None)
    code, _, err = run_cli(["--launcher", "slurm", "--set", tiny_set(), "--out", str(tmp_path / "out")])
    assert (code, err) == (2, "python -m ablations.run: error: --launcher slurm needs the submitit package: "
                           "pip install submitit\n")  # fmt: skip


@pytest.mark.slow
def test_an_array_task_trains_its_run_once_even_when_submitted_twice(tmp_path):
    """An array task waits while another job holds the run's lock, and does not retrain a finished run."""
    (cfg,) = tiny_configs([])
    store = Store(tmp_path)
    store.prepare([cfg])
    run_dir = store.run_dir(cfg)
    task = multiprocessing.get_context("spawn").Process(
        target=train_in_job, args=(str(tmp_path), cfg.to_dict(), "cpu", Locks())
    )
    with hold_lock(run_dir / LOCK):  # another job training the run
        task.start()
        task.join(timeout=15)  # time enough to start Python and reach the lock
        assert task.is_alive() and not (run_dir / "log.txt").exists()
    task.join(timeout=120)
    metrics = read_json(run_dir / "metrics.json")
    assert task.exitcode == 0 and metrics["status"] == "done" and read_summary(tmp_path)[0]["status"] == "done"
    before = snapshot(run_dir)
    assert train_in_job(str(tmp_path), cfg.to_dict(), "cpu", Locks()) == metrics  # a duplicate: nothing to do
    assert snapshot(run_dir) == before
