"""One run on several processes (DDP, gloo on the CPU): the ranks' place, their slices of the data, the sweep's
--procs-per-run, and, in slow tests, that 2 synced processes compute what 1 does, and that a killed rank resumes."""

import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import imagefolder, write_tree
from helpers import RANK_FAULT_KEYS, damage_an_image_only_rank_1_reads, read_json, read_summary, tiny_configs, tiny_set

from ablations.config import ConfigError, RunConfig
from ablations.data.loaders import build_data
from ablations.engine.distributed import Ranks, local_batch
from ablations.run import cli
from ablations.store import Store, write_rank_fault
from ablations.sweep import execute
from ablations.sweep.local import device_slots, free_port
from ablations.train import cli as train_cli

# 1,600 images in 25 batches of 64 (32 per rank), 3 epochs; no augmentation: each rank draws its own stream.
SAME_FUNCTION = tiny_set(epochs=3, train_subset=1600, batch_size=64, hflip=False)


def test_a_process_learns_its_place_from_torchruns_environment():
    meet = {"MASTER_ADDR": "node7", "MASTER_PORT": "29500"}
    assert Ranks.from_env({}) == Ranks(0, 1, 0)
    assert Ranks.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", **meet}) == Ranks(3, 4, 1, "node7", 29500)
    with pytest.raises(ConfigError, match="RANK=2 is not accepted: expected 0 <= RANK < WORLD_SIZE=2"):
        Ranks.from_env({"RANK": "2", "WORLD_SIZE": "2", **meet})
    with pytest.raises(ConfigError, match="torchrun's environment is incomplete"):
        Ranks.from_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="torchrun's environment is incomplete"):
        Ranks.from_env({"WORLD_SIZE": "2"})


def test_the_global_batch_must_split_evenly_over_the_processes():
    assert local_batch(512, 4) == 128
    with pytest.raises(ConfigError, match="batch_size=50 is not accepted on 3 processes"):
        local_batch(50, 3)


def test_the_ranks_slices_of_each_batch_make_the_one_process_batch():
    """200 images in batches of 64: 64, 64, 64, 8; on 2 ranks 32 + 32 each, the last 4 + 4. The test set's shares
    differ by one image at most and cover it once."""
    cfg = RunConfig(**{**RunConfig().to_dict(), "dim": 8, "depth": 1, "patch_size": 4, "train_subset": 200,
                       "test_subset": 100, "batch_size": 64, "scale": 1.0, "hflip": False, "randaug_n": 0,
                       "jitter": 0.0, "reprob": 0.0})  # fmt: skip
    data = build_data(cfg, torch.device("cpu"))
    ranks = [build_data(cfg, torch.device("cpu"), rank=rank, world_size=2) for rank in range(2)]
    one = list(data.train.epoch(1))
    two = list(zip(*(rank.train.epoch(1) for rank in ranks), strict=True))
    assert [len(images) for images, _ in one] == [64, 64, 64, 8]
    assert len(ranks[0].train) == len(data.train) == 4
    for (images, labels), halves in zip(one, two, strict=True):
        assert torch.equal(images, torch.cat([half[0] for half in halves]))
        assert torch.equal(labels, torch.cat([half[1] for half in halves]))
    shares = [build_data(cfg, torch.device("cpu"), rank=r, world_size=3).test.num_samples for r in range(3)]
    assert shares == [34, 33, 33]
    assert torch.equal(torch.cat([labels for rank in ranks for _, labels in rank.test]), data.test.images.labels)


def test_a_streamed_folders_ranks_read_their_slices_of_the_one_process_batches(tmp_path):
    """Streamed data reads by index (crops drawn per image), so the ranks' slices are the resident case's."""
    write_tree(tmp_path / "tree", {"train": 6, "val": 3})  # 18 images in batches of 4: 4 x 4 and 2
    cfg = imagefolder(tmp_path / "tree")
    data = build_data(cfg, torch.device("cpu"), resident_bytes=0, workers=0)
    ranks = [build_data(cfg, torch.device("cpu"), rank=r, world_size=2, resident_bytes=0, workers=0) for r in range(2)]
    assert type(ranks[1].train) is type(data.train) and not data.resident
    two = zip(*(rank.train.epoch(3) for rank in ranks), strict=True)
    for (images, labels), halves in zip(data.train.epoch(3), two, strict=True):
        assert torch.equal(images, torch.cat([half[0] for half in halves]))
        assert torch.equal(labels, torch.cat([half[1] for half in halves]))


def test_a_gpu_slot_is_procs_per_run_gpus_and_a_cpu_slot_shares_the_cores():
    gpus = ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:4"]
    assert device_slots(gpus, 1, 2) == [("cuda:0", "cuda:1"), ("cuda:2", "cuda:3")]
    assert device_slots(["cpu"], 2, 2) == [("cpu", "cpu"), ("cpu", "cpu")]
    assert device_slots(gpus[:2], 1) == [("cuda:0",), ("cuda:1",)]


def test_rank_0_names_each_rank_that_stopped_and_its_cause_then_its_own_error(tmp_path, monkeypatch):
    """The line every launcher records (execute.record_exception): a rank that left no cause was killed, so the
    failure may pass (transient); the causes are forgotten when the run starts again."""
    monkeypatch.setattr(execute, "RANK_REPORT_S", 0.0)
    store = Store(tmp_path)
    run_dir = store.run_dir("r")
    store.start_run(run_dir)
    write_rank_fault(run_dir, 2, "DataError: imagefolder: cannot decode x.JPEG")
    lost = RuntimeError("Connection closed by peer")
    metrics = execute.record_exception(store, run_dir, lost, "cpu", world_size=3)
    assert metrics["reason"] == (
        "rank 2: DataError: imagefolder: cannot decode x.JPEG; rank 0: RuntimeError: Connection closed by peer"
    )
    assert metrics["transient"] is True  # rank 1 left nothing
    write_rank_fault(run_dir, 1, "RuntimeError: Connection closed by peer")
    assert execute.record_exception(store, run_dir, lost, "cpu", world_size=3)["transient"] is False
    assert execute.record_exception(store, run_dir, lost, "cpu")["reason"] == "RuntimeError: Connection closed by peer"
    store.start_run(run_dir)
    assert store.rank_faults(run_dir, 3) == {}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--procs-per-run", "0"], "--procs-per-run 0 is not accepted: expected an integer >= 1"),
        (["--procs-per-run", "3"], "batch_size=50 is not accepted on 3 processes"),
    ],
)
def test_bad_procs_per_run_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "sweep"
    assert cli(["--set", tiny_set(), "--devices", "cpu", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()


def history(root: Path, cfg: RunConfig) -> list[dict]:
    untimed = ("train_time_s", "train_images_per_s", "epoch_time_s")
    return [{k: v for k, v in record.items() if k not in untimed} for record in read_json(root / "runs" /
            cfg.run_id() / "history.json")]  # fmt: skip


def configs(sync_bn: bool) -> RunConfig:
    (cfg,) = tiny_configs([f"sync_bn={str(sync_bn).lower()}"])
    return RunConfig(**{**cfg.to_dict(), "epochs": 3, "train_subset": 1600, "batch_size": 64, "hflip": False})


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[int, Path]:
    """The same two runs (sync_bn true and false) on 2 processes and on 1."""
    roots = {}
    for procs in (2, 1):
        roots[procs] = tmp_path_factory.mktemp(f"procs{procs}")
        grid = ["--grid", "sync_bn=true,false"] if procs == 2 else []
        command = ["--preset", "smoke", "--set", SAME_FUNCTION, *grid, "--devices", "cpu", "--jobs-per-device", "1"]
        assert cli([*command, "--procs-per-run", str(procs), "--out", str(roots[procs])]) == 0
    return roots


@pytest.mark.slow
def test_two_synced_processes_train_what_one_process_trains_at_the_same_global_batch(sweeps):
    two, one = history(sweeps[2], configs(True)), history(sweeps[1], configs(True))
    assert len(two) == len(one) == 3
    for a, b in zip(two, one, strict=True):
        assert math.isclose(a["train_loss"], b["train_loss"], rel_tol=1e-5)
        assert math.isclose(a["test_loss"], b["test_loss"], rel_tol=1e-5)
        assert a["test_acc"] == b["test_acc"] and a["train_acc"] == b["train_acc"]
    metrics = read_json(sweeps[2] / "runs" / configs(True).run_id() / "metrics.json")
    assert metrics["processes"] == 2 and "processes" not in read_json(
        sweeps[1] / "runs" / configs(True).run_id() / "metrics.json")  # fmt: skip


@pytest.mark.slow
def test_per_process_batch_norm_differs_and_is_part_of_the_run_id(sweeps):
    assert RunConfig().run_id() == "640c7794c352d001"  # as before the key existed: sync_bn=true is left out
    assert configs(False).run_id() != configs(True).run_id()
    synced, per_rank = history(sweeps[2], configs(True)), history(sweeps[2], configs(False))
    assert all(not math.isclose(a["train_loss"], b["train_loss"], rel_tol=1e-5)
               for a, b in zip(synced[1:], per_rank[1:], strict=True))  # fmt: skip


def rank_processes(sweep: int) -> list[int]:
    """Pids of the sweep's grandchildren spawned by multiprocessing: the ranks its worker started."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if b"resource_tracker" in command:
            parents.pop(int(stat.parent.name))
    workers = {pid for pid, parent in parents.items() if parent == sweep}
    return [pid for pid, parent in parents.items() if parent in workers]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_a_rank_killed_mid_epoch_fails_the_run_in_one_line_and_a_rerun_resumes_it_exactly(sweeps, tmp_path):
    """Also proves per-rank BatchNorm deterministic: the resumed run equals the uninterrupted one to the bit."""
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "ablations.run", "--preset", "smoke", "--set", f"{SAME_FUNCTION},sync_bn=false"]
    command += ["--devices", "cpu", "--procs-per-run", "2", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, env=env)
    history_file = out / "runs" / configs(False).run_id() / "history.json"
    deadline = time.monotonic() + 120
    while not (history_file.exists() and len(read_json(history_file)) == 1 and rank_processes(sweep.pid)):
        assert sweep.poll() is None and time.monotonic() < deadline, "the run ended before its first epoch"
        time.sleep(0.01)
    (rank_1,) = rank_processes(sweep.pid)
    os.kill(rank_1, signal.SIGKILL)
    assert sweep.wait(timeout=120) == 1
    (row,) = read_summary(out)
    assert row["status"] == "failed" and row["epochs_completed"] in ("1", "2")  # killed in epoch 2 or 3
    assert row["reason"].startswith("rank 1: killed by SIGKILL; rank 0: ")

    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert history(out, configs(False)) == history(sweeps[2], configs(False))
    assert "resumed from" in (out / "runs" / configs(False).run_id() / "log.txt").read_text()


@pytest.mark.slow
def test_a_rank_that_fails_is_named_with_its_cause_and_once_repaired_a_retry_trains_the_run(tmp_path, monkeypatch):
    """The local launcher's side of the SLURM test (test_slurm_cluster.py): a damaged image only rank 1 reads."""
    monkeypatch.setenv("CONVMIXER_RESIDENT_BYTES", "0")  # streamed: each rank reads its own share of the files
    bad, good = damage_an_image_only_rank_1_reads(tmp_path / "imagenet")
    out = tmp_path / "out"
    args = ["--preset", "smoke", "--set", RANK_FAULT_KEYS, "--data-root", str(tmp_path / "imagenet"), "--out",
            str(out), "--devices", "cpu", "--jobs-per-device", "1", "--procs-per-run", "2"]  # fmt: skip
    assert cli(args) == 1
    (row,) = read_summary(out)
    assert re.fullmatch(rf"rank 1: DataError: .*{bad.name}.*; rank 0: .+", row["reason"]), row["reason"]
    bad.write_bytes(good)
    assert cli([*args, "--retry-failed"]) == 0
    assert read_summary(out)[0]["status"] == "done"


@pytest.mark.slow
def test_procs_per_run_2_trains_the_missions_grid_under_the_same_run_ids(tmp_path):
    out = tmp_path / "k"
    assert cli(["--set", tiny_set(epochs=1), "--grid", "kernel_size=3,7,9,15", "--devices", "cpu",
                "--procs-per-run", "2", "--out", str(out)]) == 0  # fmt: skip
    rows = read_summary(out)
    assert {row["status"] for row in rows} == {"done"}
    assert {row["run_id"] for row in rows} == {cfg.run_id() for cfg in tiny_configs(["kernel_size=3,7,9,15"], 1)}


@pytest.mark.slow
def test_torchrun_trains_one_run_as_the_sweep_trains_it(sweeps, tmp_path):
    out = tmp_path / "one"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "ablations.train"]
    command += ["--preset", "smoke", "--set", f"{SAME_FUNCTION},sync_bn=false", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert history(out, configs(False)) == history(sweeps[2], configs(False))
    assert [row["run_id"] for row in read_summary(out)] == [configs(False).run_id()]
    assert (out / "sweep.json").exists() and not (out / "runs" / configs(False).run_id() / "checkpoint.pt").exists()


def torchrun_command(out: Path, *args: str, module: str = "ablations.train") -> list[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", module]
    return [*command, "--preset", "smoke", "--out", str(out), *args]


def torchrun_rank_pid(torchrun: int, rank: int) -> int | None:
    """The pid of the worker torchrun (pid `torchrun`) started as RANK=`rank`, or None before it has."""
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            parent = int((environ.parent / "stat").read_text().rsplit(")", 1)[1].split()[1])
            variables = environ.read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if parent == torchrun and f"RANK={rank}".encode() in variables:
            return int(environ.parent.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_under_torchrun_a_sigkilled_rank_leaves_rank_0s_transient_failure_record(tmp_path):
    """torchrun SIGTERMs rank 0 once rank 1 is gone: rank 0 records the failure (transient: a rerun resumes) and
    prints its line once (torchrun's report of the killed rank follows: its exit is not the toolkit's)."""
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = torchrun_command(out, "--set", f"{SAME_FUNCTION},sync_bn=false")
    torchrun = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    history_file = out / "runs" / configs(False).run_id() / "history.json"
    deadline = time.monotonic() + 120
    while not (history_file.exists() and len(read_json(history_file)) == 1):
        assert torchrun.poll() is None and time.monotonic() < deadline, "the run ended before its first epoch"
        time.sleep(0.01)
    os.kill(torchrun_rank_pid(torchrun.pid, 1), signal.SIGKILL)
    out_text, err = (text.decode() for text in torchrun.communicate(timeout=120))
    assert out_text.count(f"{configs(False).run_id()}: failed") == 1, (out_text, err[-3000:])
    metrics = read_json(out / "runs" / configs(False).run_id() / "metrics.json")
    assert metrics["status"] == "failed" and metrics["transient"], metrics
    (row,) = read_summary(out)
    assert row["status"] == "failed" and row["reason"].startswith("rank 0: "), row["reason"]


@pytest.mark.slow
def test_under_torchrun_bad_input_is_one_line_and_ablations_run_points_to_ablations_train(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for command, message in (
        (torchrun_command(tmp_path / "a", "--set", tiny_set(batch_size=63)), "batch_size=63 is not accepted on 2"),
        (torchrun_command(tmp_path / "b", module="ablations.run"), "torchrun --nproc-per-node N -m ablations.train"),
    ):
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
        ours = [line for line in done.stderr.splitlines() if line.startswith("python -m ablations.")]
        assert done.returncode == 0 and len(ours) == 1 and message in ours[0], done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_other_ranks_stay_silent_under_torchrun_and_too_many_processes_warn(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    for rank, printed in (("1", ""), ("0", "batch_size=63 is not accepted on 2 processes")):
        monkeypatch.setenv("RANK", rank), monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1"), monkeypatch.setenv("MASTER_PORT", "29500")
        assert train_cli(["--set", tiny_set(batch_size=63), "--out", str(tmp_path / "a")]) == 0
        err = capsys.readouterr().err
        assert (printed in err and err.count("\n") == 1) if printed else err == ""
    monkeypatch.setattr("convmixer.runtime.usable_cores", lambda: 2)
    execute.warn_oversubscribed(3, "cpu")
    assert capsys.readouterr().err == "warning: 3 processes per run on 2 CPU cores: they share them, each the slower\n"
    execute.warn_oversubscribed(2, "cpu")
    assert capsys.readouterr().err == ""


def wait_in_a_collective(rank: int, port: int, arrived) -> None:
    """Rank 0 all-reduces; rank 1 joins the group and never does (a hung peer)."""
    from ablations.engine import distributed

    distributed.COLLECTIVE_TIMEOUT_S = 2.0  # what CONVMIXER_COLLECTIVE_TIMEOUT_S=2 sets when the module loads
    distributed.start(Ranks(rank, 2, rank, "127.0.0.1", port), torch.device("cpu"))
    if rank == 1:
        time.sleep(30)
        return
    start = time.monotonic()
    try:
        distributed.all_sum(torch.ones(1))
    except Exception as error:  # gloo's timeout
        arrived.put((type(error).__name__, time.monotonic() - start))


@pytest.mark.slow
def test_a_collective_whose_peer_hangs_ends_at_the_timeout():
    context = torch.multiprocessing.get_context("spawn")
    arrived = context.Queue()
    port = free_port()
    ranks = [context.Process(target=wait_in_a_collective, args=(r, port, arrived)) for r in range(2)]
    for process in ranks:
        process.start()
    try:
        error, waited = arrived.get(timeout=60)
    finally:
        for process in ranks:
            process.kill()
    assert error in ("RuntimeError", "DistBackendError") and 1.5 < waited < 15


MEET = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}  # torchrun's rendezvous


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--set", "kernel_size=x"], {}, "--set: kernel_size='x' is not accepted: expected an integer"),
        (
            ["--set", tiny_set()],
            {"RANK": "0", "WORLD_SIZE": "3", **MEET},
            "batch_size=50 is not accepted on 3 processes",
        ),
        (["--set", tiny_set()], {"RANK": "3", "WORLD_SIZE": "2", **MEET}, "RANK=3 is not accepted: expected 0 <= RANK"),
        (["--set", tiny_set()], {"RANK": "1", "WORLD_SIZE": "2"}, "torchrun's environment is incomplete"),
        (["--set", tiny_set(), "--device", "bogus"], {}, "device='bogus' is not accepted; choose auto, cpu, cuda"),
    ],
)
def test_the_single_run_entry_refuses_bad_input_in_one_line_before_writing(tmp_path, capsys, monkeypatch, args,
                                                                           env, message):  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "one"
    assert train_cli([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m ablations.train: error: ") and err.count("\n") == 1 and message in err
    assert not out.exists()
