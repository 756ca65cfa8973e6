"""The result store: run states from the files, summary.csv rebuilt from them, cleanup after a kill."""

import ast
import csv
import dataclasses
import json
from pathlib import Path

import pytest

from ablations import atomic
from ablations import store as store_module
from ablations.config import RunConfig
from ablations.design import Design
from ablations.store import METRIC_FIELDS, STATUSES, SUMMARY_COLUMNS, Store, StoreError, hold_lock


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
        atomic.write_json(store.run_dir(cfg) / "metrics.json", {"status": status, "reason": ""})
    for cfg in (done, diverged, running):
        (store.run_dir(cfg) / "checkpoint.pt").write_bytes(b"stand-in")
        store.drop_checkpoint(store.run_dir(cfg))
    assert [(store.run_dir(cfg) / "checkpoint.pt").exists() for cfg in (done, diverged, running)] == [
        False, False, True,
    ]  # fmt: skip


def test_temporaries_left_by_a_killed_writer_are_removed(tmp_path):
    store = Store(tmp_path)
    cfg = configs()[0]
    store.prepare([cfg])
    run_tmp = store.run_dir(cfg) / ".checkpoint.pt.abc123.tmp"
    summary_tmp = tmp_path / ".summary.csv.def456.tmp"
    run_tmp.write_bytes(b"half a checkpoint")
    summary_tmp.write_text("run_id,di")
    store.prepare([cfg])
    assert not summary_tmp.exists() and run_tmp.exists()  # only the process that trains a run touches its folder
    store.start_run(store.run_dir(cfg))
    assert not run_tmp.exists()


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
    with pytest.raises(StoreError, match=r"metrics.json is not valid JSON .*delete it to redo that run"):
        store.write_summary()


def test_a_history_far_longer_than_its_run_is_damaged_and_never_parsed(tmp_path, monkeypatch):
    """A 254 MB history.json (200,000 epochs of a 3-epoch run) was parsed on every start: 35 s, 1.3 GB."""
    store = Store(tmp_path)
    cfg, other = configs()[:2]
    store.prepare([cfg, other])
    # over 100 kB, where 3 epochs write under 1 kB
    atomic.write_json(store.run_dir(cfg) / "history.json", history(3000))
    atomic.write_json(store.run_dir(other) / "history.json", history(3))
    read_json = store_module.read_json
    parsed = []
    monkeypatch.setattr(store_module, "read_json", lambda path: parsed.append(path.name) or read_json(path))
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
    assert "tf32" in read_summary(store)[0]


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
    """The statuses have one owner (ablations.store): a "done" written elsewhere would miss a rename or a new one."""
    repo = Path(__file__).resolve().parents[1]
    packages = ("ablations", "analysis", "benchmarks", "convmixer")
    paths = sorted(path for package in packages for path in (repo / package).rglob("*.py"))
    spelled = [
        f"{path.relative_to(repo)}:{node.lineno} {node.value!r}"
        for path in paths
        if path != repo / "ablations" / "store.py"
        for node in status_literals(ast.parse(path.read_text()))
    ]
    assert spelled == []
    assert len(status_literals(ast.parse('status = "done" if ok else "failed"\n__all__ = ["done"]'))) == 2
