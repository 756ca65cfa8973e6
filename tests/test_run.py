"""The sweep command end to end with the real train_run: store layout, resume after SIGKILL, failures.

The SLURM launcher is tested against a real cluster in test_slurm_cluster.py."""

import contextlib
import errno
import functools
import io
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY_SWEEP, TINY_SWEEP_OPTIONS, read_json, read_summary, snapshot, tiny_configs, tiny_set
from PIL import Image

import ablations.engine.train as engine_train
import ablations.sweep.execute as worker
from ablations import atomic
from ablations.run import cli
from ablations.store import Store
from ablations.sweep.local import LocalLauncher
from ablations.sweep.plan import runs_to_train
from ablations.sweep.progress import SweepProgress
from analysis import report
from convmixer.runtime import parse_devices

TINY = ["--set", tiny_set()]


def progress_for(configs, kind: type[SweepProgress] = SweepProgress) -> SweepProgress:
    ids = [cfg.run_id() for cfg in configs]
    return kind({cfg.run_id(): cfg.epochs for cfg in configs}, dict.fromkeys(ids, 0), dict.fromkeys(ids, ""))


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> tuple[Path, int, str]:
    """A two-run sweep, one run fine and one whose learning rate explodes: (result folder, exit code, stdout)."""
    out = tmp_path_factory.mktemp("sweep") / "lr"
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        code = cli([*TINY, "--set", "clip_norm=0", "--grid", "lr=0.01,1e6", "--devices", "cpu", "--out", str(out)])
    return out, code, stdout.getvalue()


@pytest.mark.slow  # the first test of finished_sweep trains it
def test_a_sweep_fills_the_store_and_says_where_the_results_are(finished_sweep):
    out, code, stdout = finished_sweep
    rows = {row["lr"]: row for row in read_summary(out)}
    assert code == 1  # one run diverged
    assert (rows["0.01"]["status"], rows["1000000.0"]["status"]) == ("done", "diverged")
    assert "nan" in rows["1000000.0"]["reason"] or "inf" in rows["1000000.0"]["reason"]
    assert 0 <= float(rows["0.01"]["test_acc"]) <= 1 and int(rows["0.01"]["params"]) > 0
    for row in rows.values():
        run_dir = out / "runs" / row["run_id"]
        files = {"config.json", "data.json", "log.txt", "metrics.json"}
        files |= {"history.json"} if row["status"] == "done" else set()
        assert {p.name for p in run_dir.iterdir()} <= files | {"history.json"} and files <= set(os.listdir(run_dir))
        assert read_json(run_dir / "config.json")["dim"] == 8
        log = (run_dir / "log.txt").read_text()
        assert "start on cpu" in log and f"finished: {row['status']}" in log
    assert "epoch 2/2" in (out / "runs" / rows["0.01"]["run_id"] / "log.txt").read_text()
    assert [r["epoch"] for r in read_json(out / "runs" / rows["0.01"]["run_id"] / "history.json")] == [1, 2]
    assert f"summary: {out / 'summary.csv'}" in stdout and f"python -m analysis.report {out}" in stdout
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_rerunning_skips_finished_runs(finished_sweep, capsys):
    out, _, _ = finished_sweep
    metrics_before = {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")}
    assert cli([*TINY, "--set", "clip_norm=0", "--grid", "lr=0.01,1e6", "--out", str(out)]) == 1
    assert "0 to train (2 finished earlier)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")} == metrics_before


@pytest.mark.slow
def test_dry_run_lists_status_and_writes_nothing(finished_sweep, capsys):
    out, _, _ = finished_sweep
    before = snapshot(out)
    assert cli([*TINY, "--set", "clip_norm=0", "--grid", "lr=0.01,1e6,0.1", "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["run_id", "lr", "status"]
    statuses = {line.split()[1]: line.split(None, 2)[2] for line in lines[3:]}
    assert statuses["0.01"] == "done" and statuses["0.1"] == "unfinished (not started)"
    assert statuses["1000000.0"].startswith("diverged (")
    assert snapshot(out) == before


DROPS = "patch_size=3: input 3x32x32 -> 10x10 patches (the last 2 px of each side are dropped)"  # the counter's words


@pytest.mark.slow  # trains a run and reports it
def test_a_patch_that_does_not_divide_the_image_says_which_pixels_it_drops(tmp_path, capsys):
    """Newcomer mistake b: patch_size=3 on 32 px images trained in silence, cropping 2 px of each side."""
    out = tmp_path / "p3"
    assert cli(["--set", tiny_set(1, patch_size=3), "--devices", "cpu", "--out", str(out)]) == 0
    console = capsys.readouterr().out
    assert f"note: {DROPS}" in console.splitlines()[1]
    (run_dir,) = (out / "runs").iterdir()
    assert DROPS in (run_dir / "log.txt").read_text()
    assert report.cli([str(out)]) == 0
    assert f"- Patches: {DROPS}" in (out / "report" / "report.md").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--grid", "kernel=3,5"], "--grid: unknown key 'kernel'; did you mean 'kernel_size'?"),
        (["--grid", "kernel_size=3,x"], "--grid: kernel_size='x' is not accepted: expected an integer"),
        (["--grid", "norm=batch,group"], "norm='group' is not accepted: choose one of batch, layer"),
        (["--grid", "image_size=32,2"], "patch_size=4 is not accepted: larger than the 2x2 images"),
        (["--grid", "kernel_size"], "--grid 'kernel_size' is malformed: expected KEY=VALUE"),
        (["--grid", "kernel_size="], "--grid: empty value for kernel_size"),
        (["--set", "epochs"], "--set 'epochs' is malformed"),
        (["--set", "kernel_size=3", "--grid", "kernel_size=5,7"], "'kernel_size' is in both --set and --grid"),
        (["--devices", "cuda:7"], "--devices 'cuda:7' is not accepted: expected auto, cpu, cuda, or GPU indices"),
        (["--seeds", "0"], "--seeds 0 is not accepted: expected an integer >= 1"),
        (["--seeds", "two"], "argument --seeds: 'two' is not accepted: expected an integer >= 1 or auto"),
        (["--preset", "imagenet-21k"], "argument --preset: invalid choice: 'imagenet-21k'"),
        (["--jobs-per-device", "0"], "--jobs-per-device 0 is not accepted"),
        (["--grid", "kernel_size=3", "7", "9"], "unrecognized arguments: 7 9 (a key's values are comma-separated"),
        (["--time-limit", "0"], "--time-limit 0.0 is not accepted: expected a number of minutes > 0"),
        (["--time-limit", "nan"], "--time-limit nan is not accepted"),
        (["--time-limit", "5", "--launcher", "slurm"], "--time-limit is not accepted with --launcher slurm"),
        (["--set", "precision=fp16", "--devices", "cpu"], "precision='fp16' is not accepted on cpu: it needs CUDA"),
        (["--set", "dataset=imagefolder,data_root=/no/such/tree"], "data_root='/no/such/tree' does not exist"),
        (["--grid", "data_root=a,b", "--set", "dataset=imagefolder"], "they differ only in data_root, which is not"),
        (["--data-root", "/x"], "--data-root '/x' is not accepted: the runs train on synthetic data, which reads no"),
        (["--set", "data_root=/x"], "data_root='/x' is not accepted: the runs train on synthetic data"),
        (["--name", ""], "--name '' is not accepted: expected a folder name"),  # was ignored: default name
        (["--name", ".."], "--name '..' is not accepted"),  # would have written runs/ beside results/
        (["--set", "seed=99999999999999999999"], "seed=99999999999999999999 is not accepted"),  # failed every run
    ],
)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(sweep, capsys, args, message):
    out = sweep  # a result folder with finished runs, copied from the committed tests/data/tiny-sweep
    before = snapshot(out)
    assert cli([*TINY, *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m ablations.run: error: ") and err.count("\n") == 1
    assert message in err
    assert snapshot(out) == before


@pytest.mark.slow
def test_the_module_entry_point_reports_bad_input_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ablations.run", "--grid", "kernal_size=3,7"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "python -m ablations.run: error: --grid: unknown key 'kernal_size'; did you mean 'kernel_size'?\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_out_folder_that_cannot_be_created_is_refused_before_any_write(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where --out "" (Path("") is ".") used to put the sweep
    (tmp_path / "file").write_text("x")
    for out, message in [
        ("", "argument --out: '' is not accepted: expected a folder path"),
        ("file/sub", "--out 'file/sub' is not accepted: cannot create it (Not a directory)"),  # was a traceback
    ]:
        assert cli([*TINY, "--out", out]) == 2
        printed = capsys.readouterr()
        assert printed.err.count("\n") == 1 and message in printed.err
        assert "to train" not in printed.out  # the refusal is not preceded by an announcement
    assert [path.name for path in tmp_path.iterdir()] == ["file"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "content, message",
    [
        (b"[]", "metrics.json is not accepted: expected a JSON object, found list"),
        (b"{}", "metrics.json is not accepted: it has no 'status' key"),
        (b'{"status": "ok"}', "metrics.json: status 'ok' is not accepted: expected done, diverged, failed"),
        (b"\xff\xfe", "metrics.json is not valid JSON ('utf-8' codec can't decode"),
        (None, "metrics.json cannot be read (Is a directory)"),
    ],
)
def test_a_damaged_metrics_file_is_set_aside_named_and_its_run_redone(
    finished_sweep, tmp_path, capsys, content, message
):
    """What a hand edit may leave: once a one-line error that stopped every sweep into the folder until the file
    was deleted by hand (reliability probe D10). The dry run names it and touches nothing; the sweep keeps the
    file beside the run as metrics.json.damaged-<time> and trains the run again."""
    out = tmp_path / "lr"
    shutil.copytree(finished_sweep[0], out)
    metrics = next(out.glob("runs/*/metrics.json"))
    if content is None:
        metrics.unlink()
        metrics.mkdir()
    else:
        metrics.write_bytes(content)
    before = snapshot(out)
    grid = [*TINY, "--set", "clip_norm=0", "--grid", "lr=0.01,1e6", "--out", str(out)]
    assert cli([*grid, "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert f"damaged: {metrics.parent / message}" in said and "will be set aside as metrics.json.damaged-" in said
    assert snapshot(out) == before
    assert cli(grid) == 1  # the lr=1e6 run diverges, as before
    said = capsys.readouterr().out
    assert f"damaged: {metrics.parent / message}" in said and "1 to train (1 finished earlier)" in said
    (kept,) = metrics.parent.glob("metrics.json.damaged-*")
    assert (kept.read_bytes() == content) if content is not None else kept.is_dir()
    assert json.loads(metrics.read_text())["status"] in ("done", "diverged")


@pytest.mark.slow
def test_a_damaged_config_or_history_of_a_finished_run_is_set_aside_and_nothing_retrains(finished_sweep, tmp_path):
    """config.json is the sweep's own config again, and a done run without its history stays done (the report
    names the missing history): neither needs training."""
    out = tmp_path / "lr"
    shutil.copytree(finished_sweep[0], out)
    run_dir = next(path.parent for path in out.glob("runs/*/metrics.json") if read_json(path)["status"] == "done")
    config = read_json(run_dir / "config.json")
    (run_dir / "config.json").write_text("{not json")
    (run_dir / "history.json").write_text('{"epoch": 1}')
    with contextlib.redirect_stdout(io.StringIO()) as said:
        cli([*TINY, "--set", "clip_norm=0", "--grid", "lr=0.01,1e6,0.1", "--out", str(out)])
    assert said.getvalue().count("damaged: ") == 2 and "1 to train (2 finished earlier)" in said.getvalue()
    assert "history.json.damaged-<time>; the run stays done, without its training curves" in said.getvalue()
    assert "config.json.damaged-<time> and written again from this sweep's config" in said.getvalue()
    assert read_json(run_dir / "config.json") == config and not (run_dir / "history.json").exists()
    assert len(list(run_dir.glob("*.damaged-*"))) == 2 and read_json(run_dir / "metrics.json")["status"] == "done"


def test_another_users_unreadable_run_file_is_refused_and_nothing_is_renamed(tmp_path, capsys, monkeypatch):
    """Probe 3 N5: a sweep renamed another user's metrics.json (mode 600) away as damaged and trained the run again."""
    out = Path(shutil.copytree(TINY_SWEEP, tmp_path / "shared"))
    foreign = sorted(out.glob("runs/*/metrics.json"))[0]
    real_read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda path, *a, **k: real_read(path, *a, **k) if path != foreign else
                        (_ for _ in ()).throw(PermissionError(errno.EACCES, "Permission denied")))  # fmt: skip
    before = snapshot(out)
    assert cli([*TINY_SWEEP_OPTIONS, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{foreign} cannot be read: it belongs to " in err
    assert snapshot(out) == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lock-dir", "locks", "--no-lock"], "--lock-dir and --no-lock exclude each other"),
        ([], "(No locks available): its filesystem has no working file locks, so two sweeps or jobs could train one"),
    ],
)
def test_locks_that_cannot_be_held_stop_the_sweep_and_ask_for_a_choice(tmp_path, capsys, monkeypatch, args, message):
    """Lustre without -o flock, NFS without lockd: the sweep and its SLURM jobs went on unlocked, without a word."""
    out = Path(shutil.copytree(TINY_SWEEP, tmp_path / "lustre"))
    monkeypatch.setattr(
        "fcntl.flock", lambda fd, op: (_ for _ in ()).throw(OSError(errno.ENOLCK, "No locks available"))
    )
    before = snapshot(out)
    assert cli([*TINY_SWEEP_OPTIONS, "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and snapshot(out) == before


@pytest.mark.slow
def test_a_damaged_data_record_is_set_aside_with_its_results_and_the_run_trained_again(finished_sweep, tmp_path):
    """Probe 3 N5: a damaged data.json stopped every sweep into the folder ('delete it to redo that run'), and
    deleting it kept the run done, on data nobody could check any more."""
    out = Path(shutil.copytree(finished_sweep[0], tmp_path / "lr"))
    run_dir = next(path.parent for path in out.glob("runs/*/metrics.json") if read_json(path)["status"] == "done")
    record, metrics = read_json(run_dir / "data.json"), read_json(run_dir / "metrics.json")
    (run_dir / "data.json").write_text('{"classes": [')
    with contextlib.redirect_stdout(io.StringIO()) as said:
        cli([*TINY, "--set", "clip_norm=0", "--grid", "lr=0.01,1e6", "--out", str(out)])
    said = said.getvalue()
    assert "data.json.damaged-<time> and its run trained again from scratch" in said
    assert "1 to train (1 finished earlier)" in said
    assert read_json(run_dir / "data.json") == record and read_json(run_dir / "metrics.json")["status"] == "done"
    assert read_json(run_dir / "metrics.json")["test_acc"] == metrics["test_acc"]  # the same run, redone
    assert sorted(path.name.split(".damaged-")[0] for path in run_dir.glob("*.damaged-*")) == [
        "data.json", "history.json", "metrics.json",
    ]  # fmt: skip


def noise_image_tree(root: Path) -> Path:
    """root/{train,test}/a/*.png of random pixels (incompressible, so a gzip of them is tens of kB)."""
    generator = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True)
        for i in range(2):
            pixels = torch.randint(0, 256, (64, 64, 3), dtype=torch.uint8, generator=generator).numpy()
            Image.fromarray(pixels).save(root / split / "a" / f"{i}.png")
    return root


def test_undecodable_images_and_truncated_archives_are_one_line_errors(tmp_path, capsys):
    tree = noise_image_tree(tmp_path / "tree")
    with tarfile.open(tmp_path / "tree.tar.gz", "w:gz") as tar:
        tar.add(tree, arcname="tree")
    data = (tmp_path / "tree.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])  # a download or copy that stopped half way
    (tree / "train" / "a" / "0.png").write_text("not a png")  # read for its size, as every image is
    for root, message in [
        (tmp_path / "cut.tar.gz", "imagefolder: cannot read the archive data_root="),
        (tree, "imagefolder: cannot decode train/a/0.png in"),
    ]:
        out = tmp_path / "out"
        assert cli(["--set", tiny_set(dataset="imagefolder", data_root=root), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
        assert not out.exists()


def session_processes(session: int) -> list[int]:
    """Pids of the live processes in a session (a sweep started with start_new_session and its workers)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_a_sweep_killed_with_sigkill_resumes_without_loss_or_litter(tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "ablations.run", "--set", tiny_set(epochs=3, train_subset=400)]
    command += ["--grid", "kernel_size=3,5", "--devices", "cpu", "--out", str(out)]
    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("runs/*/checkpoint.pt")):
        assert sweep.poll() is None and time.monotonic() < deadline, "the sweep ended before its first checkpoint"
        time.sleep(0.02)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    assert len(list(out.glob("runs/*/metrics.json"))) < 2  # killed mid-sweep, not after it
    deadline = time.monotonic() + 30
    while session_processes(sweep.pid):  # its worker notices and exits instead of training on unsupervised
        assert time.monotonic() < deadline, "a worker outlived its killed sweep"
        time.sleep(0.1)

    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    rows = read_summary(out)
    assert len(rows) == 2 and {row["status"] for row in rows} == {"done"}
    for row in rows:
        assert [r["epoch"] for r in read_json(out / "runs" / row["run_id"] / "history.json")] == [1, 2, 3]
    assert any("resumed from" in log.read_text() for log in out.glob("runs/*/log.txt"))
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("checkpoint.pt"))
    # The console says which runs resume, in the header and in each run's line.
    assert re.search(r"^2 to train, [12] of them from a checkpoint \(0 finished", rerun.stdout, re.M)
    assert re.search(r"^resume +\w{16} kernel_size=[35] after epoch [12] on cpu$", rerun.stdout, re.M)


def test_a_run_with_epochs_done_starts_as_a_resume_on_the_console(capsys):
    progress = SweepProgress({"a": 3, "b": 3}, {"a": 2, "b": 0}, {"a": "k=3", "b": "k=5"})
    progress.started("a", "cpu")
    progress.started("b", "cpu")
    progress.close()
    assert capsys.readouterr().out.splitlines() == ["resume   a k=3 after epoch 2 on cpu", "start    b k=5 on cpu"]


class KillWorkerAtFirstEpoch(SweepProgress):
    """Progress that SIGKILLs the worker process reporting the sweep's first epoch (after its checkpoint)."""

    killed = False

    def epoch(self, run_id: str, record: dict) -> None:
        super().epoch(run_id, record)
        if not self.killed:
            self.killed = True
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_dead_worker_fails_its_run_the_sweep_goes_on_and_a_plain_rerun_resumes(tmp_path, capsys):
    configs = tiny_configs(["kernel_size=3,5"], epochs=3)
    store = Store(tmp_path)
    store.prepare(configs)
    progress = progress_for(configs, KillWorkerAtFirstEpoch)
    results = LocalLauncher(store, ["cpu"], 1).run(
        configs, progress, functools.partial(worker.end_run, store, progress, False)
    )
    first, second = (results[cfg.run_id()] for cfg in configs)
    assert first["status"] == "failed" and first["reason"].startswith("worker process on cpu died (exit code -9)")
    assert second["status"] == "done"  # a replacement worker took the rest of the sweep
    assert (store.run_dir(configs[0]) / "checkpoint.pt").exists()
    assert {row["status"] for row in read_summary(tmp_path)} == {"failed", "done"}

    assert read_json(store.run_dir(configs[0]) / "metrics.json")["transient"] is True
    args = ["--set", tiny_set(epochs=3), "--grid", "kernel_size=3,5", "--devices", "cpu", "--out", str(tmp_path)]
    assert cli(args) == 0  # a killed worker is a passing fault: a plain rerun resumes the run, no --retry-failed
    assert "1 to train, 1 of them from a checkpoint (1 finished earlier)" in capsys.readouterr().out
    assert [r["epoch"] for r in read_json(store.run_dir(configs[0]) / "history.json")] == [1, 2, 3]
    assert "resumed from" in (store.run_dir(configs[0]) / "log.txt").read_text()


def test_an_exception_in_a_run_is_recorded_with_its_reason(tmp_path, monkeypatch):
    def broken_train_run(cfg, run_dir, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access\nwas encountered")

    monkeypatch.setattr(engine_train, "train_run", broken_train_run)  # execute_run imports it when it runs
    cfg = tiny_configs([])[0]
    store = Store(tmp_path)
    store.prepare([cfg])
    metrics = worker.execute_run(cfg, store, "cpu")
    assert metrics["status"] == "failed"
    assert metrics["reason"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert read_json(store.run_dir(cfg) / "metrics.json") == metrics
    log = (store.run_dir(cfg) / "log.txt").read_text()
    assert "Traceback" in log and "broken_train_run" in log and "finished: failed" in log


def test_devices():
    assert parse_devices("cpu") == ["cpu"]
    assert parse_devices("auto") in (["cpu"], [f"cuda:{i}" for i in range(len(parse_devices("auto")))])
    for bad in ("tpu", "0,x", "-1"):
        with pytest.raises(ValueError, match=f"--devices '{bad}' is not accepted"):
            parse_devices(bad)


def disk_full_at(monkeypatch: pytest.MonkeyPatch, name: str, after: int = 0) -> None:
    """Atomic writes of a file called `name` in this process fail as on a full disk (ENOSPC), all but the first
    `after` of them."""
    real, written = atomic._write_then_rename, []

    def write(path, write_file):
        if Path(path).name == name:
            written.append(path)
            if len(written) > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, write_file)

    monkeypatch.setattr(atomic, "_write_then_rename", write)


@pytest.mark.parametrize(
    "name, after",
    [("sweep.json", 0), ("config.json", 0), ("summary.csv", 0), pytest.param("summary.csv", 1, marks=pytest.mark.slow)],
)
def test_a_full_disk_before_or_after_training_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch, name, after):
    disk_full_at(monkeypatch, name, after)  # summary.csv after 1: the last write, in run_sweep's finally
    out = tmp_path / "full"
    assert cli([*TINY, "--devices", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("python -m ablations.run: error: disk full writing ") and err.endswith(name)


def test_a_run_failed_by_a_full_disk_says_so_and_a_plain_rerun_trains_it(tmp_path, monkeypatch):
    cfg = tiny_configs([])[0]
    store = Store(tmp_path)
    store.prepare([cfg])
    with monkeypatch.context() as patch:
        disk_full_at(patch, "checkpoint.pt")
        metrics = worker.execute_run(cfg, store, "cpu")
    run_dir = store.run_dir(cfg)
    assert metrics["status"] == "failed" and metrics["transient"] is True
    assert metrics["reason"] == f"WriteError: disk full writing {run_dir / 'checkpoint.pt'}"  # not torch's zip error
    assert runs_to_train([cfg], store, retry_failed=False) == [cfg]
    assert worker.execute_run(cfg, store, "cpu")["status"] == "done"


def test_a_run_failed_for_a_lasting_reason_waits_for_retry_failed(tmp_path, monkeypatch):
    cfg = tiny_configs([])[0]
    store = Store(tmp_path)
    store.record_failure(store.run_dir(cfg), "RuntimeError: boom", "cpu")
    assert runs_to_train([cfg], store, retry_failed=False) == []
    assert runs_to_train([cfg], store, retry_failed=True) == [cfg]


def curves(root: Path) -> dict[str, list[tuple]]:
    """What each run of a sweep learned, epoch by epoch (timings left out)."""
    keys = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc")
    return {
        run_dir.name: [tuple(record[key] for key in keys) for record in read_json(run_dir / "history.json")]
        for run_dir in sorted((root / "runs").iterdir())
    }


@pytest.mark.slow
def test_a_time_limit_stops_the_sweep_and_a_rerun_finishes_it_with_the_same_numbers(tmp_path):
    """A GPU lent for minutes: at the limit the runs in flight stop unfinished (not failed), and the plain rerun
    resumes them to the numbers of a sweep that ran without a limit."""
    grid = ["--set", tiny_set(epochs=3), "--grid", "kernel_size=3,5,7", "--devices", "cpu", "--jobs-per-device", "1"]
    limited, free = tmp_path / "limited", tmp_path / "free"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = cli([*grid, "--out", str(limited), "--time-limit", "0.02"])  # 1.2 s: less than one run here
    statuses = [row["status"] for row in read_summary(limited)]
    assert code == 1 and "unfinished" in statuses and "failed" not in statuses, out.getvalue()
    assert cli([*grid, "--out", str(limited)]) == 0 and cli([*grid, "--out", str(free)]) == 0
    assert curves(limited) == curves(free)
