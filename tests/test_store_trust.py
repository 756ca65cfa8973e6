"""Results people can trust (issue 16): a finished result is never rewritten or relabelled, a rerun on other data
is refused, one sweep works in a folder at a time, absurd designs are refused at once, and a fresh clone's first
command trains into a git-ignored folder. Each test names the probe case it covers (reliability-probe.md D1, D3,
D6, D7, D8; newcomer-review-2.md F1, F5, F10, mistakes 8, 12, 13, 15)."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from ablations.run import cli
from ablations.store import Store
from ablations.sweep.grid import Sweep
from analysis.design import scope

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "results" / "smoke-kernel_size"
TINY = "dim=8,depth=1,patch_size=4,train_subset=200,test_subset=100,batch_size=50,epochs=1"


def snapshot(root: Path) -> dict:
    """Every file under root but the sweep's lock, with its content hash and mtime."""
    return {
        str(path.relative_to(root)): (hashlib.sha1(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


def image_tree(root: Path, classes: tuple[str, ...]) -> Path:
    """root/{train,test}/<class>/*.png: 4 train and 2 test images of 16x16 noise per class."""
    generator = torch.Generator().manual_seed(0)
    for split, n in (("train", 4), ("test", 2)):
        for label in classes:
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8, generator=generator).numpy()
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    return root


def tree_set(root: Path) -> str:
    return f"dataset=imagefolder,data_root={root},dim=8,depth=1,patch_size=4,epochs=1,batch_size=4"


@pytest.mark.slow
def test_a_rerun_on_other_data_is_refused_even_when_nothing_is_left_to_train(tmp_path, capsys):
    """Probe D1: a 3-class result was taken over by a rerun on other data and its config.json rewritten."""
    three = image_tree(tmp_path / "three", ("airplane", "cat", "dog"))
    two = image_tree(tmp_path / "two", ("airplane", "cat"))
    out = tmp_path / "out"
    assert cli(["--set", tree_set(three), "--devices", "cpu", "--out", str(out)]) == 0
    run_dir = next((out / "runs").iterdir())
    recorded = json.loads((run_dir / "data.json").read_text())
    assert recorded["classes"] == ["airplane", "cat", "dog"] and recorded["train_images"] == 12
    before = snapshot(out)
    capsys.readouterr()

    assert cli(["--set", tree_set(two), "--devices", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3 classes, 12 train / 6 test images" in err
    assert "but this sweep's data is ImageFolder two (2 classes, 8 train / 4 test images" in err
    assert "another --out" in err and snapshot(out) == before

    moved = shutil.copytree(three, tmp_path / "moved")  # the same images elsewhere: the same result
    assert cli(["--set", tree_set(moved), "--devices", "cpu", "--out", str(out)]) == 0
    assert "0 to train (1 finished earlier)" in capsys.readouterr().out
    # Recorded by its name (it lies outside the repository), and never rewritten.
    assert json.loads((run_dir / "config.json").read_text())["data_root"] == three.name


@pytest.mark.slow
def test_a_second_sweep_into_a_busy_folder_is_refused_naming_the_other(tmp_path, capsys):
    """Probe D3, newcomer mistake 15: two sweeps into one folder both trained every run."""
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from ablations.store import Store; lock = Store({str(out)!r}).lock_sweep(); "
         "print('held', flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        assert cli(["--set", TINY, "--devices", "cpu", "--out", str(out)]) == 2
        printed = capsys.readouterr()
        assert f"{out} is in use by another sweep (pid {holder.pid} on host " in printed.err
        assert printed.err.count("\n") == 1 and "to train" not in printed.out  # refused before it is announced
        assert not (out / "runs").exists()
    finally:
        holder.communicate("\n", timeout=30)
    assert cli(["--set", TINY, "--devices", "cpu", "--out", str(out)]) == 0  # its lock ended with it


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "1000000"], "the design has 1,000,000 runs, more than --max-runs 10,000"),
        (["--grid", "kernel_size=3,5,7", "--max-runs", "2"], "the design has 3 runs, more than --max-runs 2"),
        (["--max-runs", "0"], "--max-runs 0 is not accepted: expected an integer >= 1"),
    ],
)
def test_an_absurd_design_is_refused_before_any_run_is_built(tmp_path, capsys, monkeypatch, args, message):
    """Probe D6: a 10^6-run study passed --dry-run after 403 s and 3 GB."""
    monkeypatch.setattr(Sweep, "configs", lambda self: pytest.fail("the runs were built"))
    assert cli([*args, "--dry-run", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_study_of_a_million_runs_is_refused_before_any_run_is_built(tmp_path, capsys, monkeypatch):
    study = tmp_path / "huge.toml"
    values = ", ".join(map(str, range(1, 101)))
    study.write_text(f"[grid]\nkernel_size = [{values}]\ndim = [{values}]\ndepth = [{values}]\n")
    monkeypatch.setattr(Sweep, "configs", lambda self: pytest.fail("the runs were built"))
    assert cli(["--study", str(study), "--dry-run"]) == 2
    assert "the design has 1,000,000 runs, more than --max-runs 10,000" in capsys.readouterr().err


def test_the_default_output_is_git_ignored_and_the_first_line_names_preset_model_and_data(tmp_path, capsys):
    """Newcomer F1/F10: the mission command wrote into the committed results/ and user output showed in git."""
    assert cli(["--grid", "kernel_size=3,7,9,15", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0] == "sweep smoke-kernel_size: 4 runs of preset smoke: ConvMixer-64/1 on synthetic, varying kernel_size"
    )
    assert lines[1].endswith("results in sweeps/smoke-kernel_size")
    for path in ("sweeps/smoke-kernel_size/summary.csv", "notebooks/sweeps/x/sweep.json", "results/x/.lock"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0, path
    assert subprocess.run(["git", "check-ignore", "-q", "results/x/summary.csv"], cwd=REPO).returncode == 1


@pytest.mark.slow
def test_name_and_out_work_together(tmp_path, capsys):
    """Newcomer mistake 8: --name was dropped without a word when --out was given."""
    out = tmp_path / "b"
    assert cli(["--set", TINY, "--devices", "cpu", "--name", "a", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("sweep a: 1 run of preset smoke")
    assert Store(out).read_designs()[0].name == "a"


def test_a_file_the_toolkit_did_not_write_is_never_overwritten(tmp_path, capsys):
    """Newcomer mistake 12: a user's own summary.csv in --out was overwritten silently."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "summary.csv").write_text("my,own,table\n")
    assert cli(["--set", TINY, "--devices", "cpu", "--out", str(out)]) == 2
    assert "summary.csv was not written by this toolkit" in capsys.readouterr().err
    assert [path.name for path in out.iterdir()] == ["summary.csv"]
    assert (out / "summary.csv").read_text() == "my,own,table\n"


@pytest.mark.slow
def test_a_second_design_is_kept_beside_the_first_and_the_report_takes_the_latest(tmp_path, capsys):
    """Newcomer mistake 13 and probe D8: a new design replaced sweep.json, and the report pooled every run folder
    (an earlier grid's, and one copied in from another sweep)."""
    out, other = tmp_path / "out", tmp_path / "other"
    study = tmp_path / "s.toml"
    study.write_text(f"[fixed]\n{TINY.replace(',', chr(10))}\n[grid]\nkernel_size = [3, 5]\n")
    assert cli(["--study", str(study), "--devices", "cpu", "--out", str(out)]) == 0
    study.write_text(f"[fixed]\n{TINY.replace(',', chr(10))}\nlr = 0.05\n[grid]\nkernel_size = [3, 5]\n")
    assert cli(["--study", str(study), "--devices", "cpu", "--out", str(out)]) == 0
    assert cli(["--set", TINY, "--set", "seed=7", "--devices", "cpu", "--out", str(other)]) == 0
    foreign = next((other / "runs").iterdir())
    shutil.copytree(foreign, out / "runs" / foreign.name)

    first, second = Store(out).read_designs()
    assert first.fixed["lr"] != second.fixed["lr"] and len(first.runs) == len(second.runs) == 2
    assert "lr = 0.05" not in (out / "study.toml").read_text() and "lr = 0.05" in (out / "study-2.toml").read_text()
    chosen = scope([out], [])
    assert set(chosen.runs["run_id"]) == set(second.runs) and set(chosen.runs["lr"]) == {0.05}
    reasons = dict(zip(chosen.left_out["run_id"], chosen.left_out["reason"], strict=True))
    assert reasons == {**dict.fromkeys(first.runs, "of another design"), foreign.name: "in no design"}
    assert set(scope([out], [], design="1").runs["run_id"]) == set(first.runs)
    assert len(scope([out], [], allow_mixed=True, design="all").runs) == 4


@pytest.mark.slow
def test_the_mission_command_into_a_copy_of_the_committed_sweep_rewrites_no_result(tmp_path, capsys):
    """Newcomer F1: the command trained nothing and rewrote 6 committed files (sweep.json's seeds 3 -> 1, four
    config.json gained "tf32": true, summary.csv gained a column)."""
    copy = shutil.copytree(COMMITTED, tmp_path / "smoke-kernel_size")
    before = snapshot(copy)
    assert cli(["--grid", "kernel_size=3,7,9,15", "--seeds", "3", "--out", str(copy)]) == 0  # its own command
    assert "0 to train (12 finished earlier)" in capsys.readouterr().out
    assert snapshot(copy) == before
    assert cli(["--grid", "kernel_size=3,7,9,15", "--out", str(copy)]) == 0  # one seed: a second design
    after = snapshot(copy)
    assert {name for name in after if after[name] != before.get(name)} == {"sweep.json"}
    first, second = Store(copy).read_designs()
    assert (first.seeds, len(first.runs), second.seeds, len(second.runs)) == (3, 12, 1, 4)
