"""The result store: run states from the files, summary.csv rebuilt from them, cleanup after a kill."""

import ast
import csv
import dataclasses
import errno
import fcntl
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from helpers import TINY_SWEEP

from ablations import atomic
from ablations.config import RunConfig
from ablations.design import Design
from ablations.store import (
    METRIC_FIELDS,
    STATUSES,
    SUMMARY_COLUMNS,
    AccessError,
    Locks,
    Store,
    StoreError,
    hold_lock,
    read_config,
    read_history,
    set_aside,
    write_history,
)
from ablations.store import files as files_module
from ablations.store.files import SET_ASIDE
from ablations.store.schema import config_values


def configs() -> list[RunConfig]:
    return [RunConfig(dataset="synthetic", dim=8, depth=1, kernel_size=k, epochs=3) for k in (3, 5, 7)]


def read_summary(store: Store) -> list[dict]:
    with open(store.summary, newline="") as f:
        return list(csv.DictReader(f))


def history(epochs: int) -> list[dict]:
    return [{"epoch": e, "test_acc": 0.1 * e, "train_loss": 1.0 / e} for e in range(1, epochs + 1)]


def test_summary_lists_every_run_with_its_state(tmp_path):
    store = Store(tmp_path)
    done, partial, pending = configs()
    store.prepare([done, partial, pending])
    atomic.write_json(store.run_dir(done) / "history.json", history(3))
    metrics = {"status": "done", "reason": "", "test_acc": 0.3, "params": 1234, "macs": 5678, "flops": 11356,
               "train_images_per_s": 99.5, "peak_memory_mb": 12.0, "train_time_s": 4.5, "epochs_completed": 3,
               "test_loss": 2.0, "device": "cpu"}  # fmt: skip
    atomic.write_json(store.run_dir(done) / "metrics.json", metrics)
    atomic.write_json(store.run_dir(partial) / "history.json", history(2))
    (store.run_dir(partial) / "checkpoint.pt").write_bytes(b"stand-in")

    store.write_summary()
    rows = {row["run_id"]: row for row in read_summary(store)}
    assert list(read_summary(store)[0]) == list(SUMMARY_COLUMNS)
    assert [f.name for f in dataclasses.fields(RunConfig)] == list(SUMMARY_COLUMNS[1:-10])
    assert set(rows) == {cfg.run_id() for cfg in (done, partial, pending)}
    row = rows[done.run_id()]
    assert (row["status"], row["test_acc"], row["params"], row["epochs_completed"]) == ("done", "0.3", "1234", "3")
    assert (row["kernel_size"], row["dataset"], row["hflip"]) == ("3", "synthetic", "True")
    assert (rows[partial.run_id()]["status"], rows[partial.run_id()]["epochs_completed"]) == ("unfinished", "2")
    assert (rows[pending.run_id()]["status"], rows[pending.run_id()]["test_acc"]) == ("unfinished", "")
    assert store.state(store.run_dir(partial)).describe(partial.epochs) == "unfinished (epoch 2/3)"
    assert not list(tmp_path.rglob("*.tmp"))


def test_failure_is_recorded_and_can_be_forgotten_for_a_retry(tmp_path):
    store = Store(tmp_path)
    cfg = configs()[0]
    store.prepare([cfg])
    run_dir = store.run_dir(cfg)
    atomic.write_json(run_dir / "history.json", history(1))
    (run_dir / "checkpoint.pt").write_bytes(b"stand-in")
    metrics = store.record_failure(run_dir, "RuntimeError: boom", "cpu")
    expected = {"status": "failed", "reason": "RuntimeError: boom", "epochs_completed": 1, "device": "cpu"}
    assert metrics == {**expected, "transient": False}
    assert set(metrics) == {name for name, field in METRIC_FIELDS.items() if field.writer in ("both", "failure")}
    assert store.state(run_dir).describe(cfg.epochs) == "failed (RuntimeError: boom)"

    store.drop_checkpoint(run_dir)  # a failed run keeps its checkpoint: a retry resumes from it
    assert (run_dir / "checkpoint.pt").exists()
    store.forget_failure(run_dir)
    assert store.state(run_dir).status == "unfinished"


def test_checkpoints_of_done_and_diverged_runs_are_dropped(tmp_path):
    store = Store(tmp_path)
    done, diverged, running = configs()
    store.prepare([done, diverged, running])
    for cfg, status in ((done, "done"), (diverged, "diverged")):
        metrics = {"status": status, "reason": "", "test_acc": 0.5, "params": 10, "macs": 100}
        atomic.write_json(store.run_dir(cfg) / "metrics.json", metrics)
    for cfg in (done, diverged, running):
        (store.run_dir(cfg) / "checkpoint.pt").write_bytes(b"stand-in")
        store.drop_checkpoint(store.run_dir(cfg))
    assert [(store.run_dir(cfg) / "checkpoint.pt").exists() for cfg in (done, diverged, running)] == [
        False, False, True,
    ]  # fmt: skip


def aged(path: Path, content: str = "half a file") -> Path:
    """A temporary file as a writer killed a minute ago left it."""
    path.write_text(content)
    os.utime(path, (time.time() - 60, time.time() - 60))
    return path


def test_temporaries_left_by_a_killed_writer_are_removed(tmp_path):
    """Probe 3 N8: a kill while sweep.json was written left its temporary file for good."""
    store = Store(tmp_path)
    cfg = configs()[0]
    store.prepare([cfg])
    run_tmp = aged(store.run_dir(cfg) / ".checkpoint.pt.abc123.tmp")
    stale = [aged(tmp_path / f".{name}.x1.tmp") for name in ("summary.csv", "sweep.json", "study.toml")]
    young = tmp_path / ".sweep.json.young.tmp"  # a writer between mkstemp and its lock: never touched
    young.write_text("{")
    with open(aged(tmp_path / ".summary.csv.live.tmp"), "rb") as live:  # a SLURM job still writing it
        fcntl.flock(live, fcntl.LOCK_EX)
        store.drop_stale_temps()
        assert Path(live.name).exists()
    assert not any(path.exists() for path in stale) and young.exists()
    assert run_tmp.exists()  # only the process that trains a run touches its folder
    store.start_run(store.run_dir(cfg))
    assert not run_tmp.exists()


def test_a_write_removes_the_stale_temporaries_of_its_file(tmp_path):
    """Probe 3 N8: a kill while the decoded cache was written left `.<split>.pt.*.tmp` in $CONVMIXER_CACHE (up to
    the split's size) that no later run removed; the next write of that file does."""
    split, other = aged(tmp_path / ".cifar10-train-v1.pt.k1.tmp"), aged(tmp_path / ".cifar10-test-v1.pt.k2.tmp")
    atomic.torch_save({"x": 1}, tmp_path / "cifar10-train-v1.pt")
    assert not split.exists() and other.exists() and (tmp_path / "cifar10-train-v1.pt").exists()


def test_prepare_never_rewrites_a_config_even_for_a_moved_data_root(tmp_path):
    """A rerun with another data_root used to rewrite config.json, relabelling a finished result (probe D1)."""
    store = Store(tmp_path)
    cfg = configs()[0]
    store.prepare([cfg])
    path = store.run_dir(cfg) / "config.json"
    before = path.read_bytes(), path.stat().st_mtime_ns
    moved = dataclasses.replace(cfg, data_root="/elsewhere")
    store.prepare([moved])
    assert moved.run_id() == cfg.run_id() and (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_an_unreadable_file_is_named(tmp_path):
    store = Store(tmp_path)
    cfg = configs()[0]
    store.prepare([cfg])
    (store.run_dir(cfg) / "metrics.json").write_text('{"status": "do')
    advice = f"; delete its run folder {store.run_dir(cfg)} to redo that run"
    with pytest.raises(StoreError, match=r"metrics.json is not valid JSON .*" + re.escape(advice)):
        store.write_summary()


def test_a_history_far_longer_than_its_run_is_damaged_and_never_parsed(tmp_path, monkeypatch):
    """A 254 MB history.json (200,000 epochs of a 3-epoch run) was parsed on every start: 35 s, 1.3 GB."""
    store = Store(tmp_path)
    cfg, other = configs()[:2]
    store.prepare([cfg, other])
    # over 100 kB, where 3 epochs write under 1 kB
    atomic.write_json(store.run_dir(cfg) / "history.json", history(3000))
    atomic.write_json(store.run_dir(other) / "history.json", history(3))
    read_json = files_module.read_json
    parsed = []
    monkeypatch.setattr(files_module, "read_json", lambda path: parsed.append(path.name) or read_json(path))
    damaged = store.find_damaged()
    assert list(damaged) == [store.run_dir(cfg) / "history.json"]
    assert damaged[store.run_dir(cfg) / "history.json"].endswith("bytes, more than a run of 3 epochs writes")
    assert parsed.count("history.json") == 1  # the other run's, of its 3 epochs


def test_a_run_folder_named_by_its_40_bit_id_is_refused_with_the_rename_to_make(tmp_path):
    store = Store(tmp_path)
    cfg = configs()[0]
    legacy = store.runs / cfg.run_id()[:10]
    legacy.mkdir(parents=True)
    with pytest.raises(StoreError, match=rf"holds run {cfg.run_id()} under its 40-bit id .*\(mv {legacy} "):
        store.check_run(cfg, None)


def test_a_config_json_of_another_run_is_refused_not_trained_over(tmp_path):
    store = Store(tmp_path)
    cfg = configs()[0]
    store.prepare([cfg])
    path = store.run_dir(cfg) / "config.json"
    atomic.write_json(path, {**cfg.to_dict(), "lr": 0.5, "data_root": "/moved"})
    with pytest.raises(StoreError, match=r"config.json is another run than .* \(lr=0.5, not 0.01\)"):
        store.check_run(cfg, None)


def test_a_config_written_before_a_key_existed_reads_with_its_default_and_keeps_summary_columns(tmp_path):
    """Newcomer F1: a rerun gave committed config.json files "tf32": true and summary.csv a tf32 column."""
    store = Store(tmp_path)
    cfg = configs()[0]
    old = {key: value for key, value in cfg.to_dict().items() if key != "tf32"}
    atomic.write_json(store.run_dir(cfg) / "config.json", old)
    store.write_summary()
    assert "tf32" not in read_summary(store)[0]
    store.prepare([cfg])
    assert json.loads((store.run_dir(cfg) / "config.json").read_text()) == old
    before = store.summary.stat().st_mtime_ns
    store.write_summary()
    assert store.summary.stat().st_mtime_ns == before  # the same table is not written again
    store.prepare([configs()[1]])  # a run of this toolkit: its config has the key, so the table shows it
    store.write_summary()
    rows = read_summary(store)
    # ... and the older run's cell holds the default it ran with, as the report reads it (one rule, not three)
    assert {row["tf32"] for row in rows} == {str(RunConfig().tf32)}
    older = next(row for row in store.summary_rows()[0] if row["run_id"] == cfg.run_id())
    assert (
        {key: older[key] for key in config_values(old)}
        == config_values(old)
        == read_config(store.run_dir(cfg) / "config.json").to_dict()
    )


def test_sweep_json_of_the_first_format_reads_as_one_design_and_gains_its_runs_beside_a_new_one(tmp_path):
    store = Store(tmp_path)
    first = {"name": "s", "preset": "smoke", "grid": {"kernel_size": [3, 5]}, "seeds": 1}
    atomic.write_json(tmp_path / "sweep.json", first)
    store.prepare(configs()[:2])
    (design,) = store.read_designs()
    assert design == Design(**first) and design.order == "seeds"  # a key added later (order): its value then
    assert store.add_design(design, [cfg.run_id() for cfg in configs()[:2]], None) == 1  # the same design
    assert json.loads((tmp_path / "sweep.json").read_text()) == first  # not rewritten
    assert store.add_design(Design(**{**first, "seeds": 2}), ["x"], "study text") == 2
    old, new = store.read_designs()
    assert old == Design(**first, runs=sorted(cfg.run_id() for cfg in configs()[:2]))
    assert new.runs == ["x"]
    assert (tmp_path / "study-2.toml").read_text() == "study text" and not (tmp_path / "study.toml").exists()


def test_a_design_that_differs_only_in_where_its_data_is_is_the_same_design(tmp_path):
    """data_root is not part of a run's id, nor of a design's: a committed study rerun with its data elsewhere."""
    store = Store(tmp_path)
    design = Design("s", "cifar10-jpeg", fixed={"dim": 8, "data_root": "../shared/data/x.tar.gz"})
    assert store.add_design(design, ["a"], None) == 1
    written = (tmp_path / "sweep.json").read_text()
    assert store.add_design(dataclasses.replace(design, fixed={"dim": 8}), ["a"], None) == 1
    assert (tmp_path / "sweep.json").read_text() == written
    assert store.add_design(dataclasses.replace(design, fixed={"dim": 16}), ["a"], None) == 2


def test_a_lock_is_refused_while_another_holder_has_it(tmp_path):
    with hold_lock(tmp_path / ".lock") as held:
        assert held is not None
        with pytest.raises(StoreError, match=r"is in use by another sweep"):
            Store(tmp_path).lock_sweep()  # flock: a second open file description is another holder
    Store(tmp_path).lock_sweep().close()


def test_a_disk_full_before_the_start_is_one_line_and_leaves_no_lock(tmp_path, monkeypatch):
    """Probe 3 N3: lock_sweep's flush on a full disk was a traceback, and left an empty .lock."""
    real_open = open

    def full_disk_open(path, *args, **kwargs):
        file = real_open(path, *args, **kwargs)
        if Path(path).name == ".lock":
            monkeypatch.setattr(file, "flush", lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
        return file

    monkeypatch.setattr("builtins.open", full_disk_open)
    with pytest.raises(atomic.WriteError) as raised:
        Store(tmp_path).lock_sweep()
    assert str(raised.value) == f"disk full writing {tmp_path / '.lock'}" and not (tmp_path / ".lock").exists()


def test_another_users_lock_is_refused_naming_it_and_its_owner(tmp_path, monkeypatch):
    """Probe 3 N4: a .lock owned by another user (a shared folder) was a PermissionError traceback."""
    (tmp_path / ".lock").write_text("")
    real_open = open

    def foreign_lock(path, *args, **kwargs):
        if Path(path).name == ".lock":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", foreign_lock)
    monkeypatch.setattr("pwd.getpwuid", lambda uid: type("User", (), {"pw_name": "alice"}))
    with pytest.raises(StoreError, match=r"\.lock cannot be opened for its lock: it belongs to alice \(Permission"):
        Store(tmp_path).lock_sweep()


def test_a_filesystem_without_locks_is_named_never_run_unlocked(tmp_path, monkeypatch):
    """Lustre without -o flock, NFS without lockd: flock fails there, and the sweep and every job went on unlocked."""

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    for hold in (lambda: Store(tmp_path).lock_sweep(), lambda: Store(tmp_path).lock_run("abc")):
        with pytest.raises(StoreError) as raised:
            hold()
        message = str(raised.value)
        assert message.startswith(f"cannot lock {tmp_path}/") and "(No locks available)" in message
        assert "choose --lock-dir DIR" in message and "or --no-lock" in message and "\n" not in message
    unlocked = Store(tmp_path / "off", Locks(off=True))  # --no-lock: the user's explicit choice
    with unlocked.lock_sweep(), unlocked.lock_run("abc"):
        assert not (tmp_path / "off").exists()


def test_locks_under_a_lock_dir_guard_the_same_store_from_anywhere(tmp_path):
    """--lock-dir: the locks of a store live elsewhere, named after its absolute path, so that every process of
    the sweep (the sweep and each SLURM job) holds the same lock file for the same folder."""
    locks = Locks(tmp_path / "locks")
    store, other = Store(tmp_path / "a" / "sweep", locks), Store(tmp_path / "b" / "sweep", locks)
    with store.lock_sweep():
        with pytest.raises(StoreError, match="is in use by another sweep"):
            Store(tmp_path / "a" / ".." / "a" / "sweep", locks).lock_sweep()
        other.lock_sweep().close()  # another folder of the same name: another lock
    sweep_lock, run_lock = locks.path(store.root), locks.path(store.root, "abc")
    assert sweep_lock.parent == run_lock.parent != locks.path(other.root).parent
    assert run_lock.name == "abc.lock" and sweep_lock.is_relative_to(tmp_path / "locks")
    assert not (tmp_path / "a" / "sweep" / ".lock").exists()


def status_literals(tree: ast.Module) -> list[ast.Constant]:
    """The string constants of a module that are a status word, names in `__all__` (analysis's `done`) aside."""
    exported = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and any(getattr(target, "id", "") == "__all__" for target in node.targets)
    ]
    names = {id(constant) for value in exported for constant in ast.walk(value)}
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in STATUSES and id(node) not in names
    ]


def test_no_status_word_is_spelled_outside_the_store():
    """The statuses have one owner (ablations.store.schema): a "done" written elsewhere would miss a rename or a new
    one."""
    repo = Path(__file__).resolve().parents[1]
    packages = ("ablations", "analysis", "benchmarks", "convmixer")
    paths = sorted(path for package in packages for path in (repo / package).rglob("*.py"))
    spelled = [
        f"{path.relative_to(repo)}:{node.lineno} {node.value!r}"
        for path in paths
        if path != repo / "ablations" / "store" / "schema.py"
        for node in status_literals(ast.parse(path.read_text()))
    ]
    assert spelled == []
    assert len(status_literals(ast.parse('status = "done" if ok else "failed"\n__all__ = ["done"]'))) == 2


def finished_copy(tmp_path: Path) -> tuple[Store, Path]:
    """A copy of the committed tiny sweep (every run done, each with its data.json) and one of its run folders."""
    root = Path(shutil.copytree(TINY_SWEEP, tmp_path / "sweep"))
    return Store(root), sorted((root / "runs").iterdir())[0]


def test_another_users_unreadable_file_is_refused_not_taken_for_damage(tmp_path, monkeypatch):
    """Probe 3 N5: another user's metrics.json (mode 600) was renamed away as damaged and its run trained again."""
    store, run_dir = finished_copy(tmp_path)
    foreign = run_dir / "metrics.json"
    real_read = Path.read_text

    def read_text(path, *args, **kwargs):
        if path == foreign:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    monkeypatch.setattr("pwd.getpwuid", lambda uid: type("User", (), {"pw_name": "alice"}))
    with pytest.raises(AccessError, match=f"^{foreign} cannot be read: it belongs to alice \\(Permission denied\\)"):
        store.find_damaged()
    assert foreign.exists() and not list(run_dir.glob("*.damaged-*"))


def test_a_damaged_file_in_a_folder_this_user_cannot_change_is_refused(tmp_path, monkeypatch):
    """Renaming it there would fail half way: refused in one line before anything is touched."""
    store, run_dir = finished_copy(tmp_path)
    (run_dir / "history.json").write_text("[1,2")
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != run_dir)
    with pytest.raises(AccessError, match="history.json is damaged but cannot be set aside: its folder belongs to"):
        store.find_damaged()


def test_a_damaged_data_record_sets_the_run_aside_and_redoes_it(tmp_path):
    """Probe 3 N5: a damaged data.json stopped every sweep into the folder, and deleting it (as told) kept the run
    done with its data check off. Now what the run trained on is unknown, so its results go aside with it."""
    store, run_dir = finished_copy(tmp_path)
    (run_dir / "data.json").write_text('{"classes": [')
    damaged = store.find_damaged()
    assert set(damaged) == {run_dir / name for name in ("data.json", "metrics.json", "history.json")}
    assert damaged[run_dir / "metrics.json"] == f"{run_dir / 'metrics.json'}: its run's data.json is damaged"
    assert store.damage_fate(run_dir / "data.json").endswith("and its run trained again from scratch (what it "
                                                             "trained on is not known)")  # fmt: skip
    assert store.state(run_dir).status == "unfinished" and store.state(run_dir).epochs == 0
    store.set_aside_damaged()
    record = json.loads((sorted(store.runs.iterdir())[1] / "data.json").read_text())  # this sweep's data
    store.prepare([read_config(run_dir / "config.json")], {run_dir.name: record})  # as the sweep does next
    assert json.loads((run_dir / "data.json").read_text()) == record
    assert store.metrics(run_dir) is None and len(list(run_dir.glob("*.damaged-*"))) == 3


def test_each_damaged_run_file_says_what_will_happen_to_it(tmp_path):
    """Probe 3 D10: a done run's damaged history.json said 'its run redone', and the run stayed done."""
    store, run_dir = finished_copy(tmp_path)
    other = sorted((store.runs).iterdir())[1]
    for path in (run_dir / "history.json", run_dir / "config.json", other / "metrics.json"):
        path.write_text("[")
    store.find_damaged()
    assert store.damage_fate(run_dir / "history.json").endswith("; the run stays done, without its training curves")
    assert store.damage_fate(run_dir / "config.json").endswith("and written again from this sweep's config")
    assert store.damage_fate(other / "metrics.json").endswith("and its run redone")
    assert store.state(run_dir).status == "done" and store.state(other).status == "unfinished"


@pytest.mark.parametrize(
    "record, why",
    [
        (
            {"epoch": 1, "test_acc": "0.9"},
            'in its record 1, test_acc="0.9" is not accepted: expected a number in [0, 1]',
        ),
        ({"epoch": 1.5}, "in its record 1, epoch=1.5 is not accepted: expected a positive integer"),
        ({"epoch": 1, "lr": [0.1]}, "in its record 1, lr=[0.1] is not accepted: expected a finite number"),
        ({"epoch": 1, "top5": "0.5"}, 'in its record 1, top5="0.5" is not accepted: expected a finite number'),
    ],
)
def test_a_history_value_of_the_wrong_type_is_one_line_of_damage_with_true_advice(tmp_path, record, why):
    """A string accuracy in history.json crashed the report and the exports later, in pandas."""
    store = Store(tmp_path)
    cfg = configs()[0]
    store.prepare([cfg])
    path = store.run_dir(cfg) / "history.json"
    atomic.write_json(path, [record])
    ((found, said),) = store.find_damaged().items()
    assert found == path and said.startswith(f"{path} is not accepted: {why}")
    with pytest.raises(StoreError) as raised:
        read_history(path)
    message = str(raised.value)
    # Deleting history.json would not redo a done run (it stays done without its curves): its folder does.
    assert message.startswith(f"{path} is not accepted: {why}") and "\n" not in message
    assert message.endswith(f"; delete its run folder {store.run_dir(cfg)} to redo that run")


def test_an_undeclared_history_metric_of_a_newer_toolkit_is_read_when_it_is_a_number(tmp_path):
    """An older toolkit must not set a done run's curves aside for a metric a newer one added."""
    store = Store(tmp_path)
    cfg = configs()[0]
    store.prepare([cfg])
    path = store.run_dir(cfg) / "history.json"
    atomic.write_json(path, [{"epoch": 1, "train_loss": 2.1, "top5_acc": 0.5}])
    assert store.find_damaged() == {} and read_history(path)[0]["top5_acc"] == 0.5


@pytest.mark.parametrize("key, value", [("train_loss", "NaN-ish"), ("test_acc", 1.5), ("params", None)])
def test_a_done_runs_metrics_of_the_wrong_type_are_damage_so_the_run_is_not_called_done(tmp_path, key, value):
    """The report refused such a run while the sweep called it done and never redid it."""
    store = Store(tmp_path)
    cfg = configs()[0]
    store.prepare([cfg])
    run_dir = store.run_dir(cfg)
    metrics = {"status": "done", "test_acc": 0.5, "params": 10, "macs": 100, "train_loss": 1.0}
    atomic.write_json(run_dir / "metrics.json", {**metrics, key: value})
    ((path, why),) = store.find_damaged().items()
    assert path == run_dir / "metrics.json" and f"{key}={json.dumps(value)} is not accepted for a done run" in why
    assert store.damage_fate(path).endswith("and its run redone")
    store.set_aside_damaged()
    assert store.state(run_dir).status == "unfinished"


def test_a_data_record_of_the_wrong_type_is_damage_and_an_undeclared_field_is_never_written(tmp_path):
    store = Store(tmp_path)
    cfg = configs()[0]
    with pytest.raises(ValueError, match="data.json field 'colour' is not declared in ablations.store.DATA_FIELDS"):
        store.prepare([cfg], {cfg.run_id(): {"data": "synthetic", "colour": "red"}})
    assert not (store.run_dir(cfg) / "data.json").exists()
    atomic.write_json(store.run_dir(cfg) / "data.json", {"data": "synthetic", "train_images": "50000"})
    (why,) = store.find_damaged().values()
    assert why.endswith('data.json is not accepted: train_images="50000" is not accepted: expected a positive integer')


def test_an_undeclared_history_field_is_never_written(tmp_path):
    with pytest.raises(ValueError, match="history.json field 'top5' is not declared in ablations.store.HISTORY_FIELDS"):
        write_history(tmp_path, [{"epoch": 1, "top5": 0.5}])
    assert not (tmp_path / "history.json").exists()


def test_a_damaged_checkpoint_and_a_damaged_run_file_are_set_aside_under_one_word(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a zip")
    aside = set_aside(tmp_path / "checkpoint.pt")
    assert aside.name.startswith("checkpoint.pt.damaged-") and aside.read_bytes() == b"not a zip"
    assert SET_ASIDE.format(name="checkpoint.pt", time="<time>") == "checkpoint.pt.damaged-<time>"
