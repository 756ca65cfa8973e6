"""benchmarks.gpu_check end to end on the CPU with tiny settings, so the GPU check cannot rot without a GPU."""

import json
import os
import re
import subprocess
import tarfile
import warnings

import pytest

from benchmarks import gpu_check


@pytest.mark.slow
def test_every_stage_of_the_gpu_check_runs_on_a_cpu(tmp_path, capsys):
    code = gpu_check.main(["--device", "cpu", "--tiny", "--data", "synthetic", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    stages = {row["stage"]: row for row in report["stages"]}
    assert code == 0, stages
    assert list(stages) == ["cuda tests", "sync audit", "train", "count", "layernorm", "sweep"]
    assert all(row["status"] == "ok" for row in stages.values())
    assert "skipped" in stages["cuda tests"]["result"]  # no GPU here: the CUDA tests skip, and say so
    # 2 slots; a tiny run can end before the second worker has imported torch, so 1 worker may take all 4
    assert re.fullmatch(r"4 runs done on devices \['cpu'\] by [12] worker processes", stages["sweep"]["result"])
    assert "layer/batch" in stages["layernorm"]["result"] and "test acc" in stages["train"]["result"]
    printed = capsys.readouterr().out
    assert (tmp_path / "gpu_check.txt").read_text().strip() in printed


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    for argv, message in (
        (["--device", "tpu"], "device='tpu' is not accepted"),
        (["--data", str(tmp_path / "nowhere")], "does not exist"),
        (["--wheels", str(tmp_path)], "no .whl files in it"),
    ):
        assert gpu_check.cli(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{gpu_check.PROG}: error: ") and message in err and err.count("\n") == 1


def test_the_sync_audit_counts_syncs_and_not_the_prototype_warning():
    def warned(message: str, line: int) -> warnings.WarningMessage:
        return warnings.WarningMessage(UserWarning(message), UserWarning, str(gpu_check.REPO / "a.py"), line)

    caught = [
        warned("Synchronization debug mode is a prototype feature and does not yet detect all synchronizing "
               "operations", 1),
        warned("called a synchronizing CUDA operation", 7),
        warned("called a synchronizing CUDA operation", 7),
    ]  # fmt: skip
    assert gpu_check.sync_sites(caught) == {"a.py:7": 2}


@pytest.mark.slow
def test_the_gpu_session_script_runs_its_cpu_path_and_leaves_at_most_8_files(cifar10_jpeg, repo_root, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "DATA": str(cifar10_jpeg), "CONVMIXER_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(["bash", "benchmarks/gpu_session.sh", "--tiny"], cwd=repo_root, env=env,
                          capture_output=True, text=True)  # fmt: skip
    summary = (out / "session.txt").read_text()
    assert done.returncode == 0, summary
    for name in ("cuda-tests", "step-floor", "train-speed"):
        assert re.search(rf"^{name} +exit 0 ", summary, re.M), summary
    assert {path.name for path in out.iterdir()} == {
        "session.txt",
        "step_floor.json",
        "step_floor.md",
        "train_speed.json",
        "train_speed.md",
        "logs.tar.gz",
    }
    assert "Targets of the engine" in (out / "train_speed.md").read_text()


@pytest.mark.slow
def test_the_gpu_session_study_part_brings_back_the_store_without_checkpoints(cifar10_jpeg, repo_root, tmp_path):
    """A GPU sitting of issue 18 on the CPU: the study's next runs in the time given, the store back in one tar."""
    study = tmp_path / "tiny-study.toml"
    fixed = "dim = 8\ndepth = 1\npatch_size = 4\nepochs = 1\ntrain_subset = 100\ntest_subset = 50\nbatch_size = 50"
    study.write_text(f'preset = "cifar10-jpeg"\norder = "axes"\n[fixed]\n{fixed}\n[vary]\nkernel_size = [3, 5]\n')
    out, store, data = tmp_path / "out", tmp_path / "store" / "tiny-study", tmp_path / "carried" / "cifar10-jpeg.tar.gz"
    data.parent.mkdir()
    data.symlink_to(cifar10_jpeg)  # where the GPU machine has it: not the preset's ../shared/data
    env = {**os.environ, "OUT": str(out), "DATA": str(data), "STUDY": str(study), "STORE": str(store),
           "STUDY_MINUTES": "2", "CONVMIXER_CACHE": str(tmp_path / "cache")}  # fmt: skip
    done = subprocess.run(["bash", "benchmarks/gpu_session.sh", "study", "--tiny"], cwd=repo_root, env=env,
                          capture_output=True, text=True)  # fmt: skip
    summary = (out / "session.txt").read_text()
    assert done.returncode == 0 and re.search(r"^study +exit 0 ", summary, re.M), summary
    with tarfile.open(out / "tiny-study.tar.gz") as tar:
        names = tar.getnames()
    assert sum(name.endswith("/metrics.json") for name in names) == 2 and "tiny-study/sweep.json" in names
    assert not [name for name in names if "checkpoint" in name or name.endswith(".lock")]
    # The data outside the repository: its name recorded, the machine's path left to the logs.
    assert {json.loads(path.read_text())["data_root"] for path in store.glob("runs/*/config.json")} == {data.name}
    assert all(f"data_root {data}\n" in path.read_text() for path in store.glob("runs/*/log.txt"))


def test_the_gpu_session_script_refuses_a_bad_part_or_missing_data(repo_root, tmp_path):
    for args, env, message in (
        (["fast"], {}, "argument 'fast' is not accepted"),
        ([], {"DATA": str(tmp_path / "nowhere")}, "it does not exist"),
    ):
        done = subprocess.run(["bash", "benchmarks/gpu_session.sh", *args], cwd=repo_root, capture_output=True,
                              text=True, env={**os.environ, "OUT": str(tmp_path / "out"), **env})  # fmt: skip
        assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1
