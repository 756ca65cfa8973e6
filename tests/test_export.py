"""`python -m analysis.export`: each format, read back with its own tools (pyarrow through pandas, tbparse, MLflow's
client, the W&B offline run's .wandb file), holds every run's history.json, config and provenance, and exporting
twice into one folder replaces the first export instead of adding a second."""

import errno
import json
import shutil
import struct
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from analysis.export import FORMATS
from analysis.export.__main__ import cli

REPO = Path(__file__).resolve().parents[1]
PROVENANCE = {"toolkit_commit", "hardware", "torch_version", "train_sha256", "test_sha256"}  # all the tiny runs hold


def stored(sweep: Path) -> dict[str, dict]:
    """Run id -> its files as the store holds them: history (by epoch), config, and provenance."""
    runs = {}
    for run_dir in sorted((sweep / "runs").iterdir()):
        metrics, data = (json.loads((run_dir / name).read_text()) for name in ("metrics.json", "data.json"))
        history = json.loads((run_dir / "history.json").read_text())
        runs[run_dir.name] = {
            "history": {row["epoch"]: {k: v for k, v in row.items() if k != "epoch"} for row in history},
            "config": json.loads((run_dir / "config.json").read_text()),
            "provenance": {key: {**metrics, **data}[key] for key in PROVENANCE},
            "status": metrics["status"],
            "run": {f"run/{k}": v for k, v in metrics.items() if type(v) in (int, float)},  # run-level numbers
            **timestamps(metrics, history),
        }
    return runs


def timestamps(metrics: dict, history: list[dict]) -> dict:
    """When the run started and finished and each epoch ended, in Unix seconds, from metrics.json's finished_at and
    wall_time_s and the epochs' epoch_time_s counted back from the end."""
    finished = datetime.fromisoformat(metrics["finished_at"]).timestamp()
    ended, left = {}, 0.0
    for row in reversed(history):
        ended[row["epoch"]] = finished - left
        left += row["epoch_time_s"]
    return {"started": finished - metrics["wall_time_s"], "finished": finished, "ended": ended}


def export_twice(sweep: Path, to: str, out: Path) -> None:
    for _ in range(2):
        assert cli([str(sweep), "--to", to, "--out", str(out)]) == 0


@pytest.mark.slow
def test_parquet_holds_every_number_of_every_history_once(sweep, tmp_path):
    import pandas as pd

    export_twice(sweep, "parquet", tmp_path)
    table = pd.read_parquet(tmp_path / f"{sweep.name}.parquet")
    runs = stored(sweep)
    assert len(table) == sum(len(run["history"]) * len(next(iter(run["history"].values()))) for run in runs.values())
    for row in table.to_dict("records"):
        run = runs[row["run_id"]]
        assert row["value"] == run["history"][row["epoch"]][row["metric"]]
        assert {key: row[key] for key in run["config"]} == run["config"]  # a key added since: its default
        assert {key: row[key] for key in PROVENANCE} == run["provenance"]
        assert row["status"] == run["status"] and row["sweep"] == sweep.name
        assert {key: row[key] for key in run["run"]} == run["run"]  # params, MACs, run time... beside the epochs
        assert row["time"].timestamp() == pytest.approx(run["ended"][row["epoch"]], abs=1e-3)  # the training's


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning")  # tbparse's call of pandas
def test_tensorboard_holds_each_run_scalars_and_hparams(sweep, tmp_path):
    from tbparse import SummaryReader

    export_twice(sweep, "tensorboard", tmp_path)
    root = tmp_path / "tensorboard" / sweep.name
    runs = stored(sweep)
    assert sorted(path.name for path in root.iterdir()) == sorted(runs)  # no staging or set-aside folder left
    for run_id, run in runs.items():
        assert len(list((root / run_id).iterdir())) == 1  # one event file: the second export replaced the first
        reader = SummaryReader(str(root / run_id), extra_columns={"wall_time"})
        scalars = {(row["step"], row["tag"]): row["value"] for row in reader.scalars.to_dict("records")}
        expected = {(epoch, name): value for epoch, values in run["history"].items() for name, value in values.items()}
        last = max(run["history"])
        expected |= {(last, name): value for name, value in run["run"].items()}
        assert scalars.keys() == expected.keys()
        for key, value in expected.items():
            assert scalars[key] == pytest.approx(value, rel=1e-6, abs=1e-12)  # TensorBoard stores float32
        for row in reader.scalars.to_dict("records"):
            when = run["finished"] if row["tag"].startswith("run/") else run["ended"][row["step"]]
            assert row["wall_time"] == pytest.approx(when, abs=1e-3)  # the epoch's time, not the export's
        hparams = dict(zip(reader.hparams["tag"], reader.hparams["value"], strict=True))
        assert {key: hparams[key] for key in PROVENANCE} == run["provenance"]
        assert hparams["status"] == run["status"]
        assert {key: hparams[key] for key in run["config"]} == run["config"]  # numbers as floats: 1.0 == True


def wandb_records(path: Path):
    """The protobuf records of a .wandb file: W&B's header, then LevelDB's log format (32 KiB blocks of records
    with a 7-byte header; a record split across blocks comes in FIRST, MIDDLE... LAST pieces)."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    position, pieces = 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        pieces += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            yield record
            pieces = b""


def _key(item) -> str:
    return "/".join(item.nested_key) or item.key


def wandb_run(folder: Path) -> tuple[dict, dict[int, dict], dict, dict]:
    """The config, the history (by step, with each step's _timestamp), the summary as W&B merges it (a later
    record's key over an earlier's) and the run record of an offline run's folder, from its .wandb file."""
    config, history, summary, meta = {}, {}, {}, {}
    for record in wandb_records(next(folder.glob("*.wandb"))):
        if record.HasField("run"):
            config = {item.key: json.loads(item.value_json) for item in record.run.config.update}
            meta = {"host": record.run.host}
        if record.HasField("history"):
            items = {_key(item): json.loads(item.value_json) for item in record.history.item}
            history[items.pop("_step")] = {
                key: value for key, value in items.items() if key == "_timestamp" or not key.startswith("_")
            }
        if record.HasField("summary"):
            summary |= {_key(item): json.loads(item.value_json) for item in record.summary.update}
    return config, history, summary, meta


@pytest.mark.slow
def test_wandb_offline_runs_hold_each_history_and_config_once(sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # belt and braces: the export never goes online
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):  # W&B's own logs stay out of ~/.cache
        monkeypatch.setenv(name, str(tmp_path / "home"))
    export_twice(sweep, "wandb", tmp_path)
    runs = stored(sweep)
    folders = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert sorted(folder.name.rpartition("-")[2] for folder in folders) == sorted(runs)  # one folder per run
    for folder in folders:
        run = runs[folder.name.rpartition("-")[2]]
        config, history, summary, meta = wandb_run(folder)
        ended = {step: values.pop("_timestamp") for step, values in history.items()}
        assert history == run["history"]
        assert ended == pytest.approx(run["ended"], abs=1e-3)  # each step stamped when its epoch ended
        assert {key: summary[key] for key in run["run"]} == run["run"]  # run-level, not the last epoch's
        assert not meta["host"] and not list((folder / "files").iterdir())  # nothing of the exporting machine
        assert {key: config[key] for key in run["config"]} == run["config"]
        assert {key: config[key] for key in PROVENANCE} == run["provenance"]
        assert config["status"] == run["status"]


@pytest.mark.slow
def test_mlflow_store_holds_one_run_per_run_with_its_history(sweep, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    export_twice(sweep, "mlflow", tmp_path)
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    found = client.search_runs([client.get_experiment_by_name(sweep.name).experiment_id])
    runs = stored(sweep)
    assert sorted(made.data.tags["convmixer.run_id"] for made in found) == sorted(runs)  # the second replaced
    for made in found:
        run = runs[made.data.tags["convmixer.run_id"]]
        assert {key: made.data.params[key] for key in run["config"]} == {k: str(v) for k, v in run["config"].items()}
        assert {key: made.data.tags[f"convmixer.{key}"] for key in PROVENANCE} == run["provenance"]
        assert made.data.tags["mlflow.source.git.commit"] == run["provenance"]["toolkit_commit"]
        assert made.info.status == "FINISHED" and made.data.tags["convmixer.status"] == run["status"]
        assert made.info.start_time == round(run["started"] * 1000) and made.info.end_time == round(
            run["finished"] * 1000
        )
        assert {key: made.data.metrics[key] for key in run["run"]} == run["run"]
        for name in run["history"][1]:
            points = client.get_metric_history(made.info.run_id, name)
            assert {point.step: point.value for point in points} == {
                epoch: values[name] for epoch, values in run["history"].items()
            }
            assert {point.step: point.timestamp for point in points} == {
                epoch: round(when * 1000) for epoch, when in run["ended"].items()
            }


def test_a_missing_package_is_one_line_naming_its_extra(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # an import of wandb now fails as if it were not installed
    assert cli([str(sweep), "--to", "wandb", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "convmixer-toolkit[export-wandb]" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["--to", "csv"], []], ids=["unknown", "missing"])
def test_a_bad_format_is_one_line_listing_the_accepted_ones(sweep, args, capsys):
    assert cli([str(sweep), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m analysis.export: error: ") and err.count("\n") == 1
    named = ["csv", *FORMATS] if args else ["--to"]  # argparse lists the choices, quoted or not by its version
    assert all(name in err for name in named)


def test_a_folder_that_is_no_sweep_is_one_line(tmp_path, capsys):
    assert cli([str(tmp_path), "--to", "parquet", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith(f"python -m analysis.export: error: {tmp_path} is not a sweep folder")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_unfinished_run_is_exported_with_its_status_and_the_epochs_it_has(sweep, tmp_path, monkeypatch):
    import pandas as pd
    from mlflow.tracking import MlflowClient

    copy = Path(shutil.copytree(sweep, tmp_path / sweep.name))
    killed = sorted((copy / "runs").iterdir())[0]
    (killed / "metrics.json").unlink()  # as a run killed after its epochs, before its end
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    for to in ("parquet", "mlflow"):
        assert cli([str(copy), "--to", to, "--out", str(tmp_path / "out")]) == 0
    table = pd.read_parquet(tmp_path / "out" / f"{copy.name}.parquet")
    rows = table[table["run_id"] == killed.name]
    assert set(rows["status"]) == {"unfinished"} and sorted(set(rows["epoch"])) == [1, 2]
    assert rows["toolkit_commit"].isna().all()  # metrics.json recorded it: gone with it, not guessed
    client = MlflowClient(tracking_uri=(tmp_path / "out" / "mlruns").as_uri())
    found = client.search_runs([client.get_experiment_by_name(copy.name).experiment_id])
    statuses = {made.data.tags["convmixer.run_id"]: made.info.status for made in found}
    assert statuses.pop(killed.name) == "RUNNING" and set(statuses.values()) == {"FINISHED"}


@pytest.mark.parametrize("module", ["__main__", "runs", *(spec.module for spec in FORMATS.values())])
def test_an_export_module_loads_no_plotting_or_statistics_stack(module):
    """An export read the report's folder swap out of analysis.build, and with it matplotlib, scipy and statsmodels
    (seconds, and packages an export does not need); a fresh interpreter shows what the module alone loads."""
    heavy = ("matplotlib", "scipy", "statsmodels")
    code = f"import sys, analysis.export.{module}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert loaded.stdout.strip() == "[]"


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.slow
@pytest.mark.parametrize("to, where", [("tensorboard", "tensorboard/{sweep}/{run_id}"), ("mlflow", "mlruns/")])
def test_a_full_disk_during_an_export_is_one_line_naming_where_and_the_next_export_recovers(
    sweep, tmp_path, monkeypatch, capsys, to, where
):
    """A full disk said `[Errno 28] No space left on device` and named no file (after 571 lines, for W&B)."""
    from mlflow.tracking import MlflowClient
    from torch.utils.tensorboard import SummaryWriter

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    with monkeypatch.context() as patched:
        patched.setattr(SummaryWriter, "add_scalar", disk_full)
        patched.setattr(MlflowClient, "log_batch", disk_full)
        assert cli([str(sweep), "--to", to, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    first = sorted(stored(sweep))[0]
    assert err.startswith(f"python -m analysis.export: error: disk full writing {tmp_path}/") and err.count("\n") == 1
    assert where.format(sweep=sweep.name, run_id=first) in err and first in err
    assert cli([str(sweep), "--to", to, "--out", str(tmp_path)]) == 0
    assert not [path for path in tmp_path.rglob(".*") if path.name != ".trash"]  # no staging left behind


@pytest.mark.slow
def test_an_mlflow_store_a_full_disk_or_a_kill_left_is_whole_again_after_the_next_export(sweep, tmp_path, monkeypatch):
    """A 0-byte meta.yaml broke every later export there (and MLflow's own client); a kill left a second run."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert cli([str(sweep), "--to", "mlflow", "--out", str(tmp_path)]) == 0
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment_id = client.get_experiment_by_name(sweep.name).experiment_id
    first = sorted(stored(sweep))[0]
    cut_short = client.create_run(experiment_id, run_name=first, tags={"convmixer.run_id": first})  # a kill, RUNNING
    empty = tmp_path / "mlruns" / experiment_id / "0123456789abcdef0123456789abcdef"
    empty.mkdir()
    (empty / "meta.yaml").write_text("")  # what a full disk left
    assert cli([str(sweep), "--to", "mlflow", "--out", str(tmp_path)]) == 0
    found = client.search_runs([experiment_id])
    assert sorted(made.data.tags["convmixer.run_id"] for made in found) == sorted(stored(sweep))
    assert {made.info.status for made in found} == {"FINISHED"} and not empty.exists()
    assert all(made.data.tags["convmixer.exported"] == "true" for made in found)
    assert cut_short.info.run_id not in {made.info.run_id for made in found}
