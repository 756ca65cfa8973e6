"""Study files and --vary: one factor at a time from a shared baseline, the same design from TOML or the CLI."""

import contextlib
import io
import json
from pathlib import Path

import pytest

from ablations.config import ConfigError
from ablations.data import CIFAR10_JPEG_ENV
from ablations.run import cli
from ablations.sweep.grid import build_sweep
from ablations.sweep.presets import PRESETS
from ablations.sweep.study import read_study

TINY = "dim=8,depth=1,patch_size=4,train_subset=200,test_subset=100,batch_size=50,epochs=1"
STUDY = f"""
description = "tiny"
preset = "smoke"
seeds = 2
[fixed]
{TINY.replace(",", chr(10))}
[baseline]
kernel_size = 5
norm = "batch"
[vary]
kernel_size = [3, 5, 7]
norm = ["batch", "layer"]
"""


def write(tmp_path: Path, text: str, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_vary_shares_the_baseline_and_changes_one_key_at_a_time():
    sweep = build_sweep(PRESETS["smoke"].values, ["kernel_size=5"], [], 2, ["kernel_size=3,5,7", "norm=layer"])
    configs = sweep.configs()
    assert sweep.baseline() == {"kernel_size": 5, "norm": "batch"}
    per_seed = [(c.kernel_size, c.norm) for c in configs if c.seed == 0]
    assert per_seed == [(5, "batch"), (3, "batch"), (7, "batch"), (5, "layer")]  # the baseline once, first
    assert [c.seed for c in configs] == [0] * 4 + [1] * 4
    assert len({c.run_id() for c in configs}) == 8


def test_a_study_file_is_the_same_design_as_the_command_line(tmp_path):
    study = read_study(write(tmp_path, STUDY))
    command_line = build_sweep(
        PRESETS["smoke"].values, [TINY, "kernel_size=5"], [], 2, ["kernel_size=3,5,7", "norm=batch,layer"]
    )
    assert study.name == "tiny" and study.preset == "smoke"
    assert [c.run_id() for c in study.sweep.configs()] == [c.run_id() for c in command_line.configs()]


def test_grid_axes_cross_every_variant(tmp_path):
    study = read_study(write(tmp_path, STUDY + "[grid]\nlr = [0.01, 0.02]\n"))
    configs = study.sweep.configs()
    assert len(configs) == 2 * 4 * 2
    assert {(c.norm, c.lr) for c in configs} == {(n, lr) for n in ("batch", "layer") for lr in (0.01, 0.02)}


def test_order_axes_trains_whole_axes_in_turn_and_seeds_spans_the_design_first(tmp_path):
    by_seeds = read_study(write(tmp_path, STUDY)).sweep.configs()
    by_axes = read_study(write(tmp_path, STUDY.replace("seeds = 2", 'seeds = 2\norder = "axes"'))).sweep.configs()
    assert sorted(cfg.run_id() for cfg in by_axes) == sorted(cfg.run_id() for cfg in by_seeds)
    assert [cfg.seed for cfg in by_seeds] == [0] * 4 + [1] * 4
    variants = [(cfg.kernel_size, cfg.norm, cfg.seed) for cfg in by_axes]
    assert variants == [(5, "batch", 0), (5, "batch", 1), (3, "batch", 0), (3, "batch", 1),
                        (7, "batch", 0), (7, "batch", 1), (5, "layer", 0), (5, "layer", 1)]  # fmt: skip


def test_the_gpu_study_file_trains_the_papers_axes_from_the_baseline_whole_axes_cheapest_first(repo_root):
    study = read_study(repo_root / "studies" / "cifar10-gpu.toml")
    configs = study.sweep.configs()
    assert study.preset == "cifar10-jpeg" and study.sweep.order == "axes" and study.sweep.seeds == 3
    baseline = configs[0]
    assert (baseline.dim, baseline.depth, baseline.kernel_size, baseline.patch_size, baseline.epochs) == (
        256,
        8,
        5,
        2,
        25,
    )
    assert (baseline.residual, baseline.norm, baseline.activation) == ("depthwise", "batch", "gelu")
    changed = [next((k for k in study.sweep.vary if getattr(c, k) != getattr(baseline, k)), None) for c in configs]
    assert (
        changed
        == [None] * 3
        + ["activation"] * 3
        + ["norm"] * 3
        + ["patch_size"] * 6
        + ["residual"] * 12
        + ["kernel_size"] * 12
    )
    assert sorted({cfg.kernel_size for cfg in configs}) == [3, 5, 7, 9, 15]


@pytest.mark.parametrize(
    "change, message",
    [
        (("seeds = 2", "seedz = 2"), "unknown entry 'seedz'; did you mean 'seeds'?"),
        (
            ("kernel_size = [3, 5, 7]", "kernel_size = [3, 5.5]"),
            "[vary] kernel_size=5.5 is not accepted: expected an integer",
        ),
        (("kernel_size = [3, 5, 7]", "kernel_size = [3, 3]"), "[vary] kernel_size: value 3 given twice"),
        (("kernel_size = [3, 5, 7]", "kernel_size = []"), "expected a non-empty list"),
        (('norm = "batch"', 'norm = "batch"\ndim = 8'), "[baseline] dim is not in [vary]"),
        (("[fixed]", "[fixed]\nkernel_size = 3"), "key 'kernel_size' is in both [fixed] and [vary]"),
        (("[fixed]", "[fixed]\nkernal_size = 3"), "unknown key 'kernal_size'; did you mean 'kernel_size'?"),
        (('preset = "smoke"', 'preset = "huge"'), "preset='huge' is not accepted: choose one of smoke"),
        (("seeds = 2", "seeds = 0"), "seeds 0 is not accepted: expected an integer >= 1"),
        (("seeds = 2", "seeds = 2\nseeds = 3"), "is not valid TOML"),
        (("seeds = 2", 'seeds = 2\norder = "random"'), "order='random' is not accepted: choose one of seeds, axes"),
    ],
)
def test_bad_study_files_fail_in_one_line_naming_file_and_key(tmp_path, change, message):
    path = write(tmp_path, STUDY.replace(*change))
    with pytest.raises(ConfigError) as caught:
        read_study(path).sweep.configs()
    assert message in str(caught.value) and "\n" not in str(caught.value)


def run(argv: list[str]) -> tuple[int, str]:
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        code = cli(argv)
    return code, stdout.getvalue()


@pytest.mark.slow
def test_study_trains_into_its_folder_with_the_design_and_a_copy_of_the_file(tmp_path, capsys):
    path = write(tmp_path, STUDY.replace("seeds = 2", "seeds = 1").replace("[3, 5, 7]", "[3, 5]"))
    out = tmp_path / "results" / "tiny"
    code, stdout = run(["--study", str(path), "--devices", "cpu", "--out", str(out), "--dry-run"])
    assert code == 0 and not out.exists() and stdout.count("unfinished (not started)") == 3
    code, stdout = run(["--study", str(path), "--devices", "cpu", "--out", str(out)])
    assert code == 0 and "3 runs: 3 done" in stdout
    assert (out / "study.toml").read_text() == path.read_text()
    (design,) = json.loads((out / "sweep.json").read_text())["designs"]
    assert design["vary"] == {"kernel_size": [3, 5], "norm": ["batch", "layer"]}
    assert design["baseline"] == {"kernel_size": 5, "norm": "batch"} and design["study"] == str(path)
    code, stdout = run(["--study", str(path), "--devices", "cpu", "--out", str(out), "--dry-run"])
    assert stdout.count(" done") == 3 and "0 to train (3 finished earlier)" in stdout


@pytest.mark.parametrize(
    "option", [["--grid", "lr=0.1,0.2"], ["--seeds", "2"], ["--preset", "smoke"], ["--set", "lr=1"]]
)
def test_study_excludes_the_options_it_replaces(tmp_path, capsys, option):
    path = write(tmp_path, STUDY)
    assert cli(["--study", str(path), *option, "--out", str(tmp_path / "out")]) == 2
    assert "exclude each other" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_data_root_sets_where_every_run_of_a_study_finds_its_data(tmp_path, capsys, repo_root):
    """A study file names a preset whose data_root may not exist on this machine: --data-root points elsewhere."""
    missing = tmp_path / "elsewhere" / "cifar10-jpeg.tar.gz"
    study = str(repo_root / "studies" / "cifar10-cpu.toml")
    assert cli(["--study", study, "--data-root", str(missing), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert f"data_root='{missing}' does not exist" in capsys.readouterr().err


def test_a_study_on_the_jpeg_copy_without_its_path_fails_in_one_line_that_points_to_the_data_docs(
    tmp_path, capsys, repo_root, monkeypatch
):
    monkeypatch.delenv(CIFAR10_JPEG_ENV, raising=False)
    study = str(repo_root / "studies" / "cifar10-cpu.toml")
    assert cli(["--study", study, "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs the CIFAR-10 JPEG copy" in err and "docs/data.md" in err
    monkeypatch.setenv(CIFAR10_JPEG_ENV, str(tmp_path / "from-env.tar.gz"))  # the default location, when set
    assert cli(["--study", study, "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert f"data_root='{tmp_path / 'from-env.tar.gz'}' does not exist" in capsys.readouterr().err


def test_a_missing_study_file_is_one_line(tmp_path, capsys):
    assert cli(["--study", str(tmp_path / "nope.toml")]) == 2
    assert capsys.readouterr().err.strip().endswith("cannot be read (No such file or directory)")
