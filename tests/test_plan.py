"""The sweep's plan from Python, without an argv, and what its results record of where the data was."""

import csv
import errno
import fcntl
import json
import shutil
from pathlib import Path

import pytest
from conftest import imagefolder, write_tree

from ablations.config import ConfigError, RunConfig, portable_path
from ablations.data import sources
from ablations.design import Design
from ablations.store import Locks, Store, StoreError, read_metrics, same_data
from ablations.sweep.inprocess import InProcessLauncher
from ablations.sweep.plan import Outcome, plan, run_plan
from ablations.sweep.slurm import SlurmLauncher, SlurmOptions, train_in_job

TINY = dict(dim=8, depth=1, patch_size=4, kernel_size=3, epochs=1)


def tiny(data: Path, **changes) -> RunConfig:
    """A run of about a tenth of a second on the tree `pictures` writes."""
    return imagefolder(data, **{**TINY, **changes})


def sweep(configs: list[RunConfig], out: Path) -> Outcome:
    store = Store(out)
    return run_plan(plan(configs, store, keys=["kernel_size"]), InProcessLauncher(store), Design(out.name))


def summary_rows(out: Path) -> list[dict]:
    with open(out / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def run_files(out: Path, name: str) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(out.glob(f"runs/*/{name}"))]


def pictures(folder: Path) -> Path:
    write_tree(folder, {"train": 4, "test": 2})
    return folder


def test_a_notebook_plans_and_runs_a_sweep_without_an_argv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = pictures(tmp_path / "pictures")
    configs = [tiny(data, kernel_size=k) for k in (3, 5)]
    store = Store(tmp_path / "out")
    planned = plan(configs, store)
    assert [cfg.run_id() for cfg in planned.todo] == [cfg.run_id() for cfg in configs]
    assert not (tmp_path / "out").exists()  # planning writes nothing
    ended = run_plan(planned, InProcessLauncher(store), Design("out"))
    assert ended.exit_code == 0 and ended.counts() == {"done": 2}
    assert [row["status"] for row in summary_rows(tmp_path / "out")] == ["done", "done"]
    assert store.read_designs()[0].runs == [cfg.run_id() for cfg in configs]
    assert plan(configs, store).todo == []  # planned again: nothing left to train
    assert not list((tmp_path / "out").glob("runs/*/checkpoint.pt"))  # the plan's policy, applied as each run ended


def test_the_plan_keeps_checkpoints_only_when_told_whichever_launcher_trains(tmp_path, monkeypatch):
    """Dropping a finished run's checkpoint is the sweep's policy (Plan.keep_checkpoints), applied by end_run."""
    monkeypatch.chdir(tmp_path)
    (cfg,) = [tiny(pictures(tmp_path / "pictures"))]
    store = Store(tmp_path / "kept")
    assert run_plan(plan([cfg], store, keep_checkpoints=True), InProcessLauncher(store), Design("kept")).exit_code == 0
    assert (store.run_dir(cfg) / "checkpoint.pt").exists()
    run_plan(plan([cfg], store), InProcessLauncher(store), Design("kept"))  # nothing to train: a leftover is dropped
    assert not (store.run_dir(cfg) / "checkpoint.pt").exists()


def test_two_runs_in_one_folder_are_refused_when_planned(tmp_path):
    cfg = RunConfig(**TINY)
    with pytest.raises(ConfigError, match="are the same config: drop one"):
        plan([cfg, RunConfig(**TINY)], Store(tmp_path))


def test_a_data_root_outside_the_repository_is_recorded_by_its_name_and_logged_in_full(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no git work tree here or above: no repository
    data = pictures(tmp_path / "elsewhere" / "pictures")
    assert sweep([tiny(data)], tmp_path / "out").exit_code == 0
    assert [c["data_root"] for c in run_files(tmp_path / "out", "config.json")] == ["pictures"]
    assert [d["data_root"] for d in run_files(tmp_path / "out", "data.json")] == ["pictures"]
    assert [row["data_root"] for row in summary_rows(tmp_path / "out")] == ["pictures"]
    (log,) = (tmp_path / "out").glob("runs/*/log.txt")
    assert f"data_root {data}\n" in log.read_text()
    recorded = [path for path in (tmp_path / "out").rglob("*") if path.is_file() and path.name != "log.txt"]
    assert [path.name for path in recorded if str(tmp_path) in path.read_text(errors="replace")] == []


def test_a_data_root_inside_the_repository_is_recorded_relative_to_it(tmp_path, monkeypatch):
    repo = tmp_path / "checkout"
    (repo / ".git").mkdir(parents=True)
    pictures(repo / "data" / "pictures")
    monkeypatch.chdir(repo / "data")  # a path typed in a subfolder is recorded from the repository's root
    assert sweep([tiny(Path("pictures"))], tmp_path / "out").exit_code == 0
    assert [c["data_root"] for c in run_files(tmp_path / "out", "config.json")] == ["data/pictures"]
    assert [d["data_root"] for d in run_files(tmp_path / "out", "data.json")] == ["data/pictures"]


def test_a_rerun_from_another_folder_with_the_same_images_is_accepted_and_other_images_are_not(tmp_path, monkeypatch):
    first, second = tmp_path / "one" / "pictures", tmp_path / "two" / "pictures"
    monkeypatch.chdir(tmp_path)
    sweep([tiny(pictures(first), epochs=2)], tmp_path / "out")
    config, before = run_files(tmp_path / "out", "config.json"), run_files(tmp_path / "out", "data.json")
    shutil.copytree(first, second)
    shutil.rmtree(first)
    monkeypatch.chdir(tmp_path / "two")
    moved = tiny(Path("pictures"), epochs=2)
    assert plan([moved], Store(tmp_path / "out")).todo == []  # the same images, elsewhere: the same finished run
    assert sweep([moved], tmp_path / "out").exit_code == 0
    assert (run_files(tmp_path / "out", "config.json"), run_files(tmp_path / "out", "data.json")) == (config, before)
    (second / "train" / "cat" / "000.png").unlink()  # other images: one fewer
    with pytest.raises(StoreError, match="a result on other data needs another --out"):
        plan([moved], Store(tmp_path / "out"))


def test_the_same_images_streamed_after_held_are_refused_naming_the_pipeline(tmp_path, monkeypatch):
    """Held and streamed data draw other crops (another result): data.json records the pipeline, a rerun names it."""
    cfg = tiny(pictures(tmp_path / "pictures"))
    store = Store(tmp_path / "out")
    store.prepare([cfg.recorded()], plan([cfg], store).data)
    assert [d["pipeline"] for d in run_files(tmp_path / "out", "data.json")] == ["held"]
    monkeypatch.setenv("CONVMIXER_RESIDENT_BYTES", "0")
    with pytest.raises(StoreError, match=r"the pipeline differs \(held on the device then, streamed from files"):
        plan([cfg], store)
    old = {k: v for k, v in run_files(tmp_path / "out", "data.json")[0].items() if k != "pipeline"}
    assert same_data(old, {**old, "pipeline": "streamed"})  # a record older than the key: its pipeline unknown


def test_a_portable_path_is_relative_to_the_git_work_tree_of_the_current_folder_else_a_name(tmp_path, monkeypatch):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / ".git").write_text("gitdir: elsewhere\n")  # a git worktree's .git is a file
    monkeypatch.chdir(tmp_path / "repo")
    assert portable_path("data") == "data"
    assert portable_path(str(tmp_path / "repo" / "a" / "b.tar.gz")) == "a/b.tar.gz"
    assert portable_path("../shared/data/cifar10-jpeg.tar.gz") == "cifar10-jpeg.tar.gz"
    monkeypatch.chdir(tmp_path)
    assert portable_path(str(tmp_path / "repo" / "a" / "b.tar.gz")) == "b.tar.gz"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"time_min": 0}, "--slurm-time 0 is not accepted: expected an integer >= 1"),
        ({"cpus_per_task": 0}, "--slurm-cpus 0 is not accepted"),
        ({"parallel": -1}, "--slurm-parallel -1 is not accepted"),
        ({"poll_s": 0.0}, "--slurm-poll 0.0 is not accepted: expected a number of seconds > 0"),
        ({"gpus": -1}, "--slurm-gpus -1 is not accepted: expected an integer >= 0"),
        ({"mem": "lots"}, "--slurm-mem 'lots' is not accepted: expected a size like 16G or 500M"),
    ],
)
def test_slurm_options_check_themselves(options, message):
    with pytest.raises(ConfigError, match=message):
        SlurmOptions(**options)


def planned_not_trained(data: Path, out: Path) -> tuple[RunConfig, Store]:
    """A run as a SLURM sweep leaves it for its array task: its folder, config.json and data.json written."""
    store = Store(out)
    planned = plan([tiny(data)], store)
    store.prepare([cfg.recorded() for cfg in planned.configs], planned.data)
    return planned.configs[0], store


def test_a_slurm_task_on_a_node_that_sees_other_data_trains_nothing(tmp_path):
    """Probe 3, SLURM: a node mounting another copy of data_root trained on it under the submit host's record."""
    data = pictures(tmp_path / "pictures")
    cfg, store = planned_not_trained(data, tmp_path / "out")
    (data / "train" / "cat" / "000.png").unlink()  # this node's copy: one image fewer
    metrics = train_in_job(str(store.root), cfg.to_dict(), "cpu", Locks())
    assert metrics["status"] == "failed" and "\n" not in metrics["reason"]
    assert "was trained on ImageFolder pictures (3 classes, 12 train" in metrics["reason"]
    assert "but node " in metrics["reason"] and " sees ImageFolder pictures (3 classes, 11 train" in metrics["reason"]
    assert not (store.run_dir(cfg) / "history.json").exists()
    write_tree(tmp_path / "again", {"train": 4, "test": 2})
    shutil.copy(tmp_path / "again" / "train" / "cat" / "000.png", data / "train" / "cat" / "000.png")
    store.forget_failure(store.run_dir(cfg))
    assert train_in_job(str(store.root), cfg.to_dict(), "cpu", Locks())["status"] == "done"


@pytest.mark.parametrize(
    "error, message",
    [
        (OSError(errno.ENOLCK, "No locks available"), "its filesystem has no working file locks"),
        (PermissionError(errno.EACCES, "Permission denied"), ".lock cannot be opened for its lock: it belongs to"),
    ],
)
def test_a_slurm_task_that_cannot_hold_its_runs_lock_fails_it_in_one_line(tmp_path, monkeypatch, error, message):
    """Probe 3 N4 (another user's .lock gave a traceback in the task) and a filesystem without locks (the task
    trained unlocked, so a duplicate task could train the same run at once)."""
    cfg, store = planned_not_trained(pictures(tmp_path / "pictures"), tmp_path / "out")
    (store.run_dir(cfg) / ".lock").write_text("")  # left by another user's job

    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(fcntl, "flock", refuse) if error.errno == errno.ENOLCK else None
    monkeypatch.setattr("builtins.open", refuse) if error.errno == errno.EACCES else None
    metrics = train_in_job(str(store.root), cfg.to_dict(), "cpu", Locks())
    monkeypatch.undo()
    assert metrics["status"] == "failed" and message in metrics["reason"] and "\n" not in metrics["reason"]
    assert read_metrics(store.run_dir(cfg) / "metrics.json")["reason"] == metrics["reason"]
    assert not (store.run_dir(cfg) / "history.json").exists()


@pytest.mark.parametrize("content", ["{not json", '["123_0"]', '{"abc": 5}'])
def test_a_damaged_jobs_file_says_what_it_is_and_what_to_do(tmp_path, content):
    """Probe 3: a damaged slurm/jobs.json said 'delete it to redo that run', which does not fit that file."""
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "jobs.json").write_text(content)
    with pytest.raises(StoreError) as raised:
        SlurmLauncher(Store(tmp_path), SlurmOptions()).recorded_jobs()
    message = str(raised.value)
    assert message.startswith(str(tmp_path / "slurm" / "jobs.json")) and "redo that run" not in message
    assert message.endswith("it lists the jobs of earlier sweeps of this folder; cancel those still queued or running "
                            "(squeue -u $USER), then delete it and rerun")  # fmt: skip


class Elsewhere(InProcessLauncher):
    """A launcher that trains in other processes (local workers, SLURM jobs): what it sees of this process's data."""

    trains_here = False

    def run(self, configs, progress, end_run):
        self.kept = dict(sources._loaded)
        return {}


def test_a_plan_whose_runs_train_elsewhere_lets_the_splits_it_checked_go(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path / "out")
    planned = plan([tiny(pictures(tmp_path / "pictures"))], store)
    assert sources._loaded  # the check loaded them, for a run in this process to reuse (InProcessLauncher)
    launcher = Elsewhere(store)
    run_plan(planned, launcher, Design("out"))
    assert launcher.kept == {}  # trained by other processes: let go before the runs start
