"""analysis/: seed statistics against printed t tables and by hand, and the report of a real sweep.

The sweep (the `sweep` fixture of conftest.py) is a copy of tests/data/tiny-sweep, which the real runner trained;
test_notebooks.py explores the same folder and tests/data/tiny-study. Slow tests keep both stores honest: the runner
still writes them, and a sweep into a copy of one trains nothing and changes no file.
"""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_STUDY, TINY_STUDY_OPTIONS, TINY_SWEEP, TINY_SWEEP_OPTIONS, snapshot
from PIL import Image

from ablations.config import LATER_KEYS, RunConfig
from ablations.design import Design, read_file
from ablations.run import cli
from analysis import plots, provenance, report, style, tables
from analysis.design import axis_levels, choose_baseline, default_baseline, variant_keys
from analysis.load import load_history, load_runs
from analysis.stats import mean_ci, pareto_front, welch
from analysis.variants import aggregate, compare, summarise

T_975_2 = 4.302653  # t_{0.975, 2 dof}, for the CI of 3 seeds


def test_every_name_the_package_exports_loads_from_its_module():
    """analysis loads its names on first use (so that --help answers before pandas): each must resolve, to the
    object its own module defines."""
    import analysis

    for name in analysis.__all__:
        value = getattr(analysis, name)
        assert getattr(value, "__name__", name).rpartition(".")[2] == name, name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        analysis.nothing  # noqa: B018


def read_run(run_dir: Path, name: str):
    return json.loads((run_dir / name).read_text())


def copy_runs(sweep: Path, target: Path, keep) -> Path:
    """A sweep folder holding copies of the real runs for which keep(config) is true."""
    for run_dir in (sweep / "runs").iterdir():
        if keep(read_run(run_dir, "config.json")):
            shutil.copytree(run_dir, target / "runs" / run_dir.name)
    return target


# --- the seed statistics -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, table", [(2, 12.7062), (3, 4.3027), (5, 2.7764), (11, 2.2281), (31, 2.0423)]
)  # fmt: skip
def test_mean_ci_uses_printed_t_tables(n, table):
    """The half-width of n seeds with sd 1 is t_{0.975, n-1} / sqrt(n), t as printed in statistics tables."""
    values = np.linspace(-1.0, 1.0, n)
    values /= np.std(values, ddof=1)
    assert mean_ci(values).ci * math.sqrt(n) == pytest.approx(table, abs=1e-4)


def test_welch_interval_of_a_real_df_matches_integrated_density():
    """Welch's dof is not an integer: integrate the t density from 0 to the interval's t, independently of scipy."""
    d = welch([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    df, q = d.df, (d.high - d.diff) / math.sqrt(2.5 / 5 + 10 / 5)
    x = np.linspace(0.0, q, 200_001)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_norm - (df + 1) / 2 * np.log1p(x**2 / df))
    assert np.trapezoid(density, x) == pytest.approx(0.475, abs=1e-7)
    assert d.diff - d.low == pytest.approx(d.high - d.diff)


def test_mean_ci_by_hand():
    e = mean_ci([1, 2, 3, 4, 5])
    assert (e.mean, e.sd, e.n) == (3.0, pytest.approx(math.sqrt(2.5)), 5)
    assert e.ci == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)  # 1.963243
    two = mean_ci([0.5, math.nan, 0.7])  # NaN dropped; t_{0.975,1} * 0.1414 / sqrt(2) = 12.7062 * 0.1
    assert (two.n, two.mean, two.ci) == (2, pytest.approx(0.6), pytest.approx(1.270620, rel=1e-6))
    one = mean_ci([0.8])
    assert (one.mean, one.n) == (0.8, 1) and math.isnan(one.sd) and math.isnan(one.ci)
    assert mean_ci([]).n == 0


def test_welch_by_hand():
    # Equal n and variances: se = sqrt(1/3 + 1/3), Welch's dof = 4, so the interval uses t_{0.975,4} = 2.776445.
    d = welch([1, 2, 3], [4, 5, 6])
    assert d.diff == -3.0 and d.df == pytest.approx(4.0)
    half = 2.776445 * math.sqrt(2 / 3)
    assert (d.low, d.high) == (pytest.approx(-3 - half, rel=1e-6), pytest.approx(-3 + half, rel=1e-6))
    assert 0.02 < d.p < 0.05  # |t| = 3.674 lies between t_{0.975,4} = 2.776 and t_{0.99,4} = 3.747
    unequal = welch([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])  # df = 2.5^2 / (0.5^2/4 + 2^2/4) = 5.882
    assert unequal.df == pytest.approx(6.25 / (0.0625 + 1.0))
    single = welch([0.5], [0.4, 0.6])
    assert single.diff == pytest.approx(0.0) and math.isnan(single.low) and math.isnan(single.p)
    exact = welch([0.5, 0.5], [0.25, 0.25])
    assert (exact.diff, exact.low, exact.high) == (0.25, 0.25, 0.25)


def test_pareto_front():
    macs, accuracy = [1, 2, 3, 4, 4], [0.5, 0.7, 0.6, 0.9, 0.9]
    assert pareto_front(macs, accuracy).tolist() == [True, True, False, True, True]  # ties both stay
    throughput = [400, 300, 200, 100]  # more is better
    assert pareto_front(throughput, [0.5, 0.4, 0.7, 0.6], higher_cost_is_better=True).tolist() == [
        True, False, True, False]  # fmt: skip
    assert pareto_front([1, math.nan, 3], [0.5, 0.9, math.nan]).tolist() == [True, False, False]


# --- the committed tiny stores --------------------------------------------------------------------------------------


def json_keys(path: Path) -> list[str]:
    """The keys of a JSON object, or of the first object of a JSON list (history.json)."""
    content = json.loads(path.read_text())
    return sorted(content[0] if isinstance(content, list) else content)


def earlier_keys(keys) -> list[str]:
    """The keys but those config.json and data.json gained later (absent in older records, read as their earlier
    value or as unknown)."""
    return [key for key in keys if key not in LATER_KEYS and key != "pipeline"]


TINY_STORES = [(TINY_SWEEP, TINY_SWEEP_OPTIONS), (TINY_STUDY, TINY_STUDY_OPTIONS)]


@pytest.mark.slow
@pytest.mark.parametrize("committed, options", TINY_STORES)
def test_the_runner_still_writes_the_committed_tiny_store(committed, options, tmp_path, repo_root):
    """The same runs, files, configs and keys (numbers may differ across machines; data_root is written relative
    in the committed copy, as committed results hold it; a key added later, config's or the design's, is written now
    and read as its earlier value where it is absent)."""
    fresh = tmp_path / committed.name
    command = [sys.executable, "-m", "ablations.run", *options, "--devices", "cpu", "--out", str(fresh)]
    result = subprocess.run(command, cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    files = sorted(str(path.relative_to(committed)) for path in committed.rglob("*") if path.is_file())
    assert sorted(str(path.relative_to(fresh)) for path in fresh.rglob("*") if path.is_file()) == [".lock", *files]
    assert read_file(read_run(fresh, "sweep.json")) == read_file(read_run(committed, "sweep.json"))
    for name in files:
        if name.endswith(".json") and name != "sweep.json":
            assert earlier_keys(json_keys(fresh / name)) == earlier_keys(json_keys(committed / name)), name
        if name.endswith("config.json"):
            fresh_config, committed_config = read_run(fresh, name), read_run(committed, name)
            keys = earlier_keys(committed_config)
            assert {key: fresh_config[key] for key in keys} | {"data_root": "data"} == {
                k: committed_config[k] for k in keys
            }
    header = (fresh / "summary.csv").read_text().splitlines()[0].split(",")
    assert earlier_keys(header) == earlier_keys((committed / "summary.csv").read_text().splitlines()[0].split(","))


@pytest.mark.slow
@pytest.mark.parametrize("committed, options", TINY_STORES)
def test_a_sweep_into_a_copy_of_a_committed_tiny_store_changes_no_file(committed, options, tmp_path, capsys):
    store = Path(shutil.copytree(committed, tmp_path / committed.name))
    before = snapshot(store)
    assert cli([*options, "--devices", "cpu", "--out", str(store)]) == 0
    assert "0 to train (6 finished earlier)" in capsys.readouterr().out
    assert {name: facts for name, facts in snapshot(store).items() if not name.endswith(".lock")} == before


# --- loading and summarising a real sweep -----------------------------------------------------------------------


def test_load_runs_reads_every_run_file(sweep):
    runs = load_runs([sweep])
    assert len(runs) == 6 and set(runs["status"]) == {"done"} and set(runs["sweep"]) == {sweep.name}
    for row in runs.to_dict("records"):
        run_dir = sweep / "runs" / row["run_id"]
        for source in (read_run(run_dir, "config.json"), read_run(run_dir, "metrics.json")):
            assert {key: row[key] for key in source} == source
    assert variant_keys(runs) == ["kernel_size"]
    assert provenance.data_text(runs) == "synthetic, subset: 128 train / 64 test images"


def test_the_report_names_the_pixels_a_patch_drops_only_where_it_drops_some():
    runs = pd.DataFrame({"dataset": ["synthetic", "cifar10", "imagefolder", "imagefolder"], "image_size": [0, 0, 0, 30],
                         "patch_size": [4, 3, 3, 4]})  # fmt: skip
    assert provenance.patches_text(runs) == (
        "patch_size=3: input 3x32x32 -> 10x10 patches (the last 2 px of each side are dropped); "
        "patch_size=4: input 3x30x30 -> 7x7 patches (the last 2 px of each side are dropped)"
    )  # the ImageFolder run at its native size recorded no size: not checked
    assert provenance.patches_text(runs.iloc[:1]) == ""


def test_load_history_is_long_form(sweep):
    history = load_history([sweep])
    assert list(history.columns) == ["sweep", "run_id", "epoch", "metric", "value"]
    for run_dir in (sweep / "runs").iterdir():
        records = read_run(run_dir, "history.json")
        mine = history[history["run_id"] == run_dir.name]
        assert len(mine) == sum(len(record) - 1 for record in records)  # every number but the epoch
        for record in records:
            at_epoch = mine[mine["epoch"] == record["epoch"]].set_index("metric")["value"]
            assert at_epoch.to_dict() == {key: value for key, value in record.items() if key != "epoch"}


def test_aggregate_matches_hand_computed_statistics(sweep):
    runs = load_runs([sweep])
    variants = aggregate(runs).set_index("kernel_size")
    for kernel_size in (3, 5):
        accuracies = [
            read_run(run_dir, "metrics.json")["test_acc"] for run_dir in (sweep / "runs").iterdir()
            if read_run(run_dir, "config.json")["kernel_size"] == kernel_size
        ]  # fmt: skip
        row = variants.loc[kernel_size]
        assert row["n"] == 3 and row["test_acc_mean"] == pytest.approx(sum(accuracies) / 3)
        sd = float(np.std(accuracies, ddof=1))
        assert row["test_acc_sd"] == pytest.approx(sd) and row["test_acc_ci"] == pytest.approx(T_975_2 * sd / 3**0.5)
        assert row["params"] == runs.loc[runs["kernel_size"] == kernel_size, "params"].iloc[0]
        assert row[["n_diverged", "n_failed", "n_unfinished"]].tolist() == [0, 0, 0]


def test_compare_subtracts_the_baseline_variant(sweep):
    runs = load_runs([sweep])
    assert default_baseline(runs, ["kernel_size"]) == {"kernel_size": 5}  # the RunConfig default was swept
    table = compare(runs, {"kernel_size": 3}).set_index("kernel_size")
    means = runs.groupby("kernel_size")["test_acc"].mean()
    assert table.loc[3, "is_baseline"] and math.isnan(table.loc[3, "diff"])
    assert table.loc[5, "diff"] == pytest.approx(means[5] - means[3])
    assert table.loc[5, "diff_low"] <= table.loc[5, "diff"] <= table.loc[5, "diff_high"]
    assert table.loc[5, "n_baseline"] == 3 and table.loc[5, "baseline"] == "kernel_size=3"


def test_several_sweeps_unfinished_runs_and_repeats(sweep, tmp_path):
    small = copy_runs(sweep, tmp_path / "small", lambda config: config["kernel_size"] == 3)
    large = copy_runs(sweep, tmp_path / "large", lambda config: config["kernel_size"] == 5)
    both = load_runs([small, large])
    assert both.groupby("sweep")["kernel_size"].unique().map(list).to_dict() == {"small": [3], "large": [5]}
    pd.testing.assert_frame_equal(aggregate(both), aggregate(load_runs([sweep])))
    killed = next((large / "runs").iterdir())
    (killed / "metrics.json").unlink()  # what a run killed before its end leaves behind
    variants = aggregate(load_runs([large]), ["kernel_size"])
    assert variants[["n", "n_unfinished"]].values.tolist() == [[2, 1]]
    with pytest.warns(UserWarning, match="more than one sweep"):
        repeated = load_runs([sweep, large])
    assert len(repeated) == 6 and set(repeated["sweep"]) == {sweep.name}
    pd.testing.assert_frame_equal(load_history([sweep, large]).reset_index(drop=True), load_history([sweep]))


# --- the report ----------------------------------------------------------------------------------------------------

FIGURES = ("accuracy_vs_kernel_size", "accuracy_vs_macs", "accuracy_vs_params", "accuracy_vs_throughput",
           "training_curves")  # fmt: skip


@pytest.mark.slow
def test_report_command_writes_tables_and_figures_into_the_sweep(sweep, repo_root):
    command = [sys.executable, "-m", "analysis.report", str(sweep), "--baseline", "kernel_size=3"]
    result = subprocess.run(command, cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    out = sweep / "report"  # the default --out
    figures = [f"{figure}.{ext}" for figure in FIGURES for ext in ("png", "pdf")]
    names = ["report.md", "table.md", "table.tex", "table-wide.tex", "variants.csv", *figures]
    assert sorted(path.name for path in out.iterdir()) == sorted(names)
    assert all((out / name).stat().st_size > 0 for name in names)
    for figure in FIGURES:
        with Image.open(out / f"{figure}.png") as image:
            assert image.format == "PNG" and image.width >= 800
            image.verify()
        pdf = (out / f"{figure}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-1024:]
    markdown = (out / "table.md").read_text()
    assert "| kernel_size |" in markdown and "| 3 |" in markdown and "| 5 |" in markdown and "baseline" in markdown
    latex = (out / "table.tex").read_text()
    assert all(rule in latex for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"$k$ & Acc.", r"$\pm$"))
    index = (out / "report.md").read_text()
    assert "Dataset: synthetic" in index and "(device cpu)" in index and "Baseline: kernel_size=3" in index
    assert all(f"({name})" in index for name in names if name != "report.md")


def test_table_with_one_seed_says_there_is_no_ci(sweep, tmp_path):
    runs = load_runs([copy_runs(sweep, tmp_path / "single", lambda config: config["seed"] == 0)])
    made = tables.table(summarise(runs, {"kernel_size": 5}, ["kernel_size"]), ["kernel_size"])
    markdown = tables.markdown_table(made)
    assert markdown.count("± n/a") == 2 and markdown.count("[n/a]") == 1 and "| 5 | " in markdown
    assert [row[-1] for row in made.blocks[0][1]] == ["1", "1"]  # n seeds


def test_latex_escape():
    assert tables.latex_escape("kernel_size 5% ± -1.20 [Δ –]") == r"kernel\_size 5\% $\pm$ $-$1.20 [$\Delta$ --]"


@pytest.mark.parametrize(
    "args, message",
    [
        (["{missing}"], "is not a sweep folder"),
        (["{empty}"], "no finished runs"),
        (["{sweep}", "--baseline", "depth=1"], "'depth' is not a swept key: choose one of kernel_size"),
        (["{sweep}", "--baseline", "kernel_size=7"], "kernel_size=7 is not in the sweep: kernel_size takes 3, 5"),
        (["{sweep}", "--baseline", "kernel_size"], "expected KEY=VALUE"),
        (["{sweep}", "--baseline", "kernel_size=big"], "expected an integer"),
        (["{sweep}", "--baseline", "kernel_size=3", "--baseline", "kernel_size=5"], "'kernel_size' is given twice"),
        (["{sweep}", "--no-such-option"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(sweep, tmp_path, capsys, args, message):
    """What `python -m analysis.report` exits with (cli's return value); nothing is written."""
    empty = copy_runs(sweep, tmp_path / "empty", lambda config: config["seed"] == 0)
    for run_dir in (empty / "runs").iterdir():
        (run_dir / "metrics.json").unlink()
    paths = {"missing": tmp_path / "missing", "empty": empty, "sweep": sweep}
    out = tmp_path / "out"
    argv = [arg.format(**paths) for arg in args] + ["--out", str(out)]
    code = report.cli(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and err.startswith(f"{report.PROG}: error: ")
    assert not out.exists()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("metrics.json", b"\xff\xfe", "metrics.json is not valid JSON ('utf-8' codec can't decode"),
        ("metrics.json", b"[]", "metrics.json is not accepted: expected a JSON object, found list"),
        ("metrics.json", b"{}", "metrics.json is not accepted: it has no 'status' key"),
        ("metrics.json", b'{"status": "ok"}', "status 'ok' is not accepted: expected done, diverged, failed"),
        ("config.json", b"[8]", "config.json is not accepted: expected a JSON object, found list"),
        ("history.json", b'[{"loss": 1.0}]', "history.json is not accepted: expected a JSON list of objects"),
    ],
)
def test_a_hand_damaged_run_file_is_one_line_and_writes_nothing(sweep, tmp_path, capsys, name, content, message):
    """Each was a traceback, or (no status) a report that silently left the run out; a bad history.json was
    found only after the tables had been written."""
    damaged = copy_runs(sweep, tmp_path / "damaged", lambda config: True)
    path = next((damaged / "runs").iterdir()) / name
    path.write_bytes(content)
    out = tmp_path / "out"
    assert report.cli([str(damaged), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{report.PROG}: error: {path}")
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_an_out_that_cannot_be_a_folder_is_refused(sweep, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where --out "" (Path("") is ".") used to put the report
    (tmp_path / "file").write_text("x")
    for out, message in [
        ("", "argument --out: '' is not accepted: expected a folder path"),
        ("file", "--out 'file' is not accepted: cannot create it (File exists)"),
        ("file/sub", "--out 'file/sub' is not accepted: cannot create it (Not a directory)"),
    ]:
        code = report.cli([str(sweep), "--out", out])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1
    assert [path.name for path in tmp_path.iterdir()] == ["file"]


def test_a_config_written_before_a_key_existed_loads_with_that_keys_default(sweep, tmp_path):
    older = copy_runs(sweep, tmp_path / "older", lambda config: True)
    for config_path in (older / "runs").glob("*/config.json"):
        config = json.loads(config_path.read_text())
        del config["label_smoothing"]
        config_path.write_text(json.dumps(config))
    runs = load_runs([older])
    assert len(runs) == len(load_runs([sweep])) and (runs["label_smoothing"] == RunConfig().label_smoothing).all()


# --- reports that stand on their own: designs, mixed sweeps, baselines, captions, figures ---------------------------


def write_design(sweep: Path, **fields) -> None:
    (sweep / "sweep.json").write_text(json.dumps({"name": sweep.name, "preset": "smoke", **fields}))


def edit_configs(sweep: Path, keep, **values) -> None:
    """Set config keys of the copied runs for which keep(config) is true, as if they had run that way."""
    for path in (sweep / "runs").glob("*/config.json"):
        config = json.loads(path.read_text())
        if keep(config):
            path.write_text(json.dumps(config | values))


def run_report(argv: list[str], capsys) -> tuple[int, str]:
    code = report.cli(argv)
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_sweeps_that_differ_in_an_unswept_key_are_refused_unless_allowed(sweep, tmp_path, capsys):
    small = copy_runs(sweep, tmp_path / "small", lambda config: config["kernel_size"] == 3)
    large = copy_runs(sweep, tmp_path / "large", lambda config: config["kernel_size"] == 5)
    out = tmp_path / "out"
    code, err = run_report([str(small), str(large), "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and "differ in kernel_size (3, 5)" in err and "--allow-mixed" in err
    assert not out.exists()
    assert report.main([str(small), str(large), "--allow-mixed", "--out", str(out)]) == 0
    assert "Pooled with --allow-mixed although they differ in: kernel_size" in (out / "report.md").read_text()
    # Their designs say kernel_size was swept: pooling is what they are for.
    for folder in (small, large):
        write_design(folder, grid={"kernel_size": [3, 5]}, seeds=3)
    assert report.main([str(small), str(large), "--out", str(tmp_path / "designed")]) == 0
    # ... but not when the runs also differ in a key no design sweeps.
    edit_configs(large, lambda config: True, lr=0.5)
    code, err = run_report([str(small), str(large), "--out", str(out / "again")], capsys)
    assert code == 2 and "differ in lr (0.02, 0.5), which is not a swept key (swept: kernel_size)" in err


@pytest.mark.slow  # writes a whole report: its figures as PNG and PDF
def test_runs_of_two_gpu_kinds_are_refused_unless_allowed(sweep, tmp_path, capsys):
    """A study grown over several GPU sittings: runs from an H200 and an A100 are not seeds of one experiment."""
    folder = copy_runs(sweep, tmp_path / "gpus", lambda config: True)
    for i, path in enumerate(sorted((folder / "runs").glob("*/metrics.json"))):
        metrics = json.loads(path.read_text())
        gpu = ("NVIDIA H200", "NVIDIA A100")[i % 2]
        path.write_text(json.dumps(metrics | {"device": f"cuda ({gpu})", "hardware": gpu}))
    code, err = run_report([str(folder), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "measured on different hardware (NVIDIA A100, NVIDIA H200)" in err and "--allow-mixed" in err
    assert report.main([str(folder), "--allow-mixed", "--out", str(tmp_path / "pooled")]) == 0


@pytest.mark.slow  # writes a whole report: its figures as PNG and PDF
def test_a_baseline_that_matches_no_run_is_an_error(sweep, tmp_path, capsys):
    # Runs of two --grid commands: k=3 at p=2 and k=5 at p=4; the default baseline (k=5, p=2) never ran.
    legacy = copy_runs(sweep, tmp_path / "legacy", lambda config: True)
    edit_configs(legacy, lambda config: config["kernel_size"] == 3, patch_size=2)
    code, err = run_report([str(legacy), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "the baseline kernel_size=5, patch_size=2 matches no finished run" in err
    assert report.main([str(legacy), "--baseline", "kernel_size=5", "--out", str(tmp_path / "out")]) == 0
    # A study whose recorded baseline is not among its runs.
    study = copy_runs(sweep, tmp_path / "study", lambda config: True)
    write_design(study, baseline={"kernel_size": 7}, vary={"kernel_size": [3, 5, 7]}, seeds=3)
    code, err = run_report([str(study), "--out", str(tmp_path / "out2")], capsys)
    assert code == 2 and "the baseline kernel_size=7 matches no finished run" in err
    assert not (tmp_path / "out2").exists()


def test_a_damaged_design_is_one_line(sweep, tmp_path, capsys):
    damaged = copy_runs(sweep, tmp_path / "damaged", lambda config: True)
    (damaged / "sweep.json").write_text("[1]")
    code, err = run_report([str(damaged), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 1 and "sweep.json" in err
    (damaged / "sweep.json").write_text('{"name": "x", "vary": [1]}')
    code, err = run_report([str(damaged), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "'vary' must be a JSON object" in err


@pytest.fixture
def study(sweep, tmp_path) -> Path:
    """A one-factor-at-a-time study from the real runs: baseline k=5 at p=4; k=3; and p=2 (the k=5 runs, relabelled
    as if they had run at p=2, with their accuracy lowered by 10 points)."""
    folder = copy_runs(sweep, tmp_path / "study", lambda config: True)
    for run_dir in list((folder / "runs").iterdir()):
        config = read_run(run_dir, "config.json")
        if config["kernel_size"] == 5:
            twin = run_dir.with_name(run_dir.name + "p2")
            shutil.copytree(run_dir, twin)
            metrics = read_run(twin, "metrics.json")
            (twin / "config.json").write_text(json.dumps(config | {"patch_size": 2}))
            (twin / "metrics.json").write_text(json.dumps(metrics | {"test_acc": metrics["test_acc"] - 0.1}))
    write_design(
        folder, study="studies/tiny.toml", description="A tiny study.", baseline={"kernel_size": 5, "patch_size": 4},
        vary={"kernel_size": [3, 5], "patch_size": [2, 4]}, seeds=3,
    )  # fmt: skip
    return folder


@pytest.mark.slow  # writes a whole report: its figures as PNG and PDF
def test_a_study_table_has_one_block_per_axis_with_differences_from_the_baseline(study, tmp_path):
    out = tmp_path / "out"
    assert report.main([str(study), "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    lines = table.splitlines()
    kernel, patch = (
        lines.index(next(line for line in lines if "**Kernel size k" in line)),
        lines.index(next(line for line in lines if "**Patch size p" in line)),
    )
    assert kernel < patch
    assert lines[kernel + 1].startswith("| k=3 |") and lines[kernel + 2].startswith("| k=5 (baseline) | ")
    assert lines[patch + 1].startswith("| p=2 |") and lines[patch + 2].startswith("| p=4 (baseline) | ")
    assert "| baseline |" in lines[kernel + 2] and "| -10.00 [" in lines[patch + 1]  # Δ of p=2, with its CI
    latex = (out / "table.tex").read_text()
    assert latex.count(r"\multicolumn{6}{l}{\textit{") == 2
    names = {path.name for path in out.iterdir()}
    assert {"training_curves_kernel_size.png", "training_curves_patch_size.png", "accuracy_vs_patch_size.pdf"} <= names
    index = (out / "report.md").read_text()
    assert "A tiny study." in index and "study studies/tiny.toml (preset smoke)" in index


@pytest.mark.slow  # writes a whole report: its figures as PNG and PDF
def test_report_and_captions_say_what_ran(sweep, tmp_path):
    out = tmp_path / "out"
    assert report.main([str(sweep), "--out", str(out)]) == 0
    metrics = read_run(next((sweep / "runs").iterdir()), "metrics.json")
    expected = [
        "synthetic, subset: 128 train / 64 test images", "ConvMixer-8/1", "kernel size k = {3, 5}", "patch size p = 4",
        "2 epochs", "batch 64", "peak lr 0.02 on a onecycle schedule", "Augmentation: horizontal flip",
        "seeds 0, 1, 2", metrics["hardware"], metrics["toolkit_commit"], metrics["finished_at"][:10],
        f"Design: sweep {sweep.name} (preset smoke)",
    ]  # fmt: skip
    for name in ("report.md", "table.md"):
        text = (out / name).read_text()
        assert all(fact in text for fact in expected)
    latex = (out / "table.tex").read_text()  # a caption of a few lines: what ran, n seeds; the recipe in report.md
    short = ["synthetic, subset: 128 train / 64 test images", "ConvMixer-8/1", "kernel size $k$", "$n = 3$ seeds"]
    assert all(fact in latex for fact in short) and "onecycle" not in latex and "report.md" not in latex
    assert "Train images/s (CPU, indicative)" in (out / "table.md").read_text()
    older = copy_runs(sweep, tmp_path / "older", lambda config: True)
    for path in (older / "runs").glob("*/metrics.json"):
        metrics = json.loads(path.read_text())
        path.write_text(json.dumps({k: v for k, v in metrics.items() if k not in ("hardware", "finished_at")}))
    assert report.main([str(older), "--out", str(tmp_path / "older-out")]) == 0
    index = (tmp_path / "older-out" / "report.md").read_text()
    assert "- Hardware: not recorded (device cpu)" in index and "- Date: not recorded" in index
    assert "- Design: older: preset and design not recorded (made before sweep.json)" in index


@pytest.mark.slow
def test_a_rerun_into_the_same_folder_removes_the_figures_it_no_longer_writes(study, sweep, tmp_path):
    out = tmp_path / "out"
    assert report.main([str(study), "--out", str(out)]) == 0
    (out / "my-notes.txt").write_text("mine")
    assert report.main([str(sweep), "--out", str(out)]) == 0  # a plain kernel sweep: no patch axis
    names = {path.name for path in out.iterdir()}
    assert "accuracy_vs_patch_size.png" not in names and "training_curves_kernel_size.pdf" not in names
    assert {"training_curves.png", "accuracy_vs_kernel_size.png", "my-notes.txt"} <= names


def test_counts_are_printed_in_a_readable_unit():
    variants = pd.DataFrame({"params": [6470, 12000], "macs": [3.9e7, 1.2e9]})
    assert style.si_unit(variants["params"]) == (1e3, "k") and style.si_unit(variants["macs"]) == (1e9, "G")
    assert style.si_unit([1.2e6]) == (1e6, "M")
    cells = [tables.count_cell(value, 1e3) for value in (6470, 1000, 47210, 115400, 682, 0, math.nan)]
    assert cells == ["6.47", "1.00", "47.2", "115", "0.682", "0", "–"]


# --- figures: clipped intervals, every seed, short labels, n, the Pareto rule --------------------------------------


def fake_variants(n: int, means: list[float], ci: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Variants k=3,5 at p=2,4 with the given mean accuracies and CI, and n seeds each spread around the mean."""
    keys = [(k, p) for k in (3, 5) for p in (2, 4)]
    agg = pd.DataFrame(
        [{"kernel_size": k, "patch_size": p, "test_acc_mean": m, "test_acc_ci": ci, "n": n, "macs": 1e6 * k / p,
          "params": 1e3 * k, "train_images_per_s_mean": 100.0 * p} for (k, p), m in zip(keys, means, strict=True)]
    )  # fmt: skip
    runs = pd.DataFrame(
        [{"kernel_size": k, "patch_size": p, "test_acc": m + 0.01 * (i - (n - 1) / 2), "run_id": f"{k}-{p}-{i}"}
         for (k, p), m in zip(keys, means, strict=True) for i in range(n)]
    )  # fmt: skip
    return agg, runs


def drawn_y(fig) -> np.ndarray:
    """Every y value drawn in the figure's first axes: lines, error bars, bands."""
    ax = fig.axes[0]
    ys = [line.get_ydata() for line in ax.lines]
    for collection in ax.collections:
        ys += [path.vertices[:, 1] for path in collection.get_paths()]
    return np.concatenate([np.asarray(y, dtype=float) for y in ys])


def test_error_bars_and_bands_stay_within_0_and_100_percent():
    assert plots.clipped_error([5, 98, 50], [20, 10, math.nan]).tolist() == [[5, 10, 0], [20, 2, 0]]
    agg, runs = fake_variants(3, [0.02, 0.5, 0.97, 0.4], ci=0.3)
    y = drawn_y(plots.accuracy_vs_key(agg, runs, "kernel_size", ["kernel_size", "patch_size"]).figure)
    assert y.min() >= 0 and y.max() <= 100 and y.min() < 1  # drawn, and clipped at 0
    y = drawn_y(plots.accuracy_vs_cost(agg, runs, "macs", ["kernel_size", "patch_size"], ["a", "b", "c", "d"]).figure)
    assert y.min() >= 0 and y.max() <= 100
    history = pd.DataFrame(
        [{"run_id": run_id, "epoch": epoch, "metric": metric, "value": value}
         for i, run_id in enumerate(runs["run_id"]) for epoch in (1, 2)
         for metric, value in (("test_acc", [0.01, 0.99][i % 2]), ("train_loss", [0.01, 3.0][i % 2]))]
    )  # fmt: skip
    curves = plots.training_curves(history, runs.assign(status="done"), ["kernel_size"]).figure
    for ax, (low, high) in zip(curves.axes, [(0, 100), (0, math.inf)], strict=True):
        bands = np.concatenate([path.vertices[:, 1] for c in ax.collections for path in c.get_paths()])
        assert bands.min() >= low and bands.max() <= high


@pytest.mark.parametrize("n, seed_points", [(1, 0), (3, 12), (5, 20), (6, 0)])
def test_every_seed_is_drawn_up_to_five_seeds_and_n_is_stated(n, seed_points):
    agg, runs = fake_variants(n, [0.3, 0.4, 0.5, 0.6], ci=math.nan if n == 1 else 0.05)
    fig, caption = plots.accuracy_vs_key(agg, runs, "kernel_size", ["kernel_size", "patch_size"])
    ax = fig.axes[0]
    seeds = [line for line in ax.lines if line.get_linestyle() == "None" and line.get_markersize() == 3]
    assert sum(len(line.get_ydata()) for line in seeds) == seed_points
    assert f"n = {n}" in caption and ("no CI" in caption) == (n == 1)


def test_legends_and_axes_use_short_labels_and_units():
    agg, runs = fake_variants(2, [0.3, 0.4, 0.5, 0.6], ci=0.05)
    fig = plots.accuracy_vs_key(agg, runs, "kernel_size", ["kernel_size", "patch_size"]).figure
    ax = fig.axes[0]
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["p=2", "p=4"]
    assert ax.get_xlabel() == "Kernel size k (cells of the patch grid)"
    assert style.short_label({"kernel_size": 3, "residual": "none"}) == "k=3, residual=none"


def test_training_curves_promise_no_band_with_one_seed(sweep):
    runs = load_runs([sweep])
    one = runs[runs["seed"] == 0]
    history = load_history([sweep])
    fig, caption = plots.training_curves(history[history["run_id"].isin(one["run_id"])], one, ["kernel_size"])
    assert caption.endswith("One seed per variant: no band.")
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["k=3", "k=5"]
    three = plots.training_curves(history, runs, ["kernel_size"]).caption
    assert "n = 3" in three and "band: 95% CI" in three


def test_the_pareto_front_does_not_crown_a_one_seed_variant():
    # The cheapest and most accurate variant has one seed: it would dominate everything; it is not ranked.
    front = plots.ranked_front([1, 2, 3], [0.9, 0.5, 0.6], n=[1, 3, 3], higher_cost_is_better=False)
    assert front.tolist() == [False, True, True]
    agg, runs = fake_variants(3, [0.9, 0.3, 0.5, 0.6], ci=0.05)
    agg.loc[0, "n"] = 1
    fig = plots.accuracy_vs_cost(agg, runs, "macs", ["kernel_size", "patch_size"], list("abcd")).figure
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert "one seed: not ranked" in legend and "Pareto front (n ≥ 2)" in legend


def test_throughput_axis_names_the_hardware_and_flags_a_shared_cpu(sweep):
    runs = load_runs([sweep])
    label = provenance.throughput_label(runs)
    hardware = runs["hardware"].iloc[0].replace("(R)", "")
    assert label == f"measured on {hardware}, a shared CPU: indicative"
    agg, fake_runs = fake_variants(3, [0.3, 0.4, 0.5, 0.6], ci=0.05)
    ax = plots.accuracy_vs_cost(agg, fake_runs, "throughput", ["kernel_size"], list("abcd"), label).figure.axes[0]
    assert "indicative" in ax.get_xlabel() and "measured on" in ax.get_xlabel()


def test_axes_keep_the_designs_order_and_mark_the_baseline():
    residuals = ["none", "block", "depthwise", "pointwise", "odd"]
    runs = pd.DataFrame({"residual": residuals, "kernel_size": [9, 3, 7, 5, 3]})
    design = Design("s", vary={"residual": ["none", "pointwise", "block"], "kernel_size": [9, 3, 7, 5]})
    baseline = {"residual": "depthwise", "kernel_size": 7}
    levels = axis_levels(runs, {"s": design, "old": None}, "residual", baseline)
    assert levels == ["depthwise", "none", "pointwise", "block", "odd"]  # baseline first, design order, the rest
    assert axis_levels(runs, {"s": design}, "kernel_size", baseline) == [3, 5, 7, 9]  # numbers ascend
    agg = pd.DataFrame({"residual": ["none", "depthwise"], "test_acc_mean": [0.5, 0.6], "test_acc_ci": 0.01, "n": 1})
    ax = plots.accuracy_vs_key(agg, agg, "residual", ["residual"], levels, "depthwise").figure.axes[0]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["depthwise\n(baseline)", "none"]
    assert all(line.get_linestyle() == "None" for line in ax.lines)  # words have no order: points, no line


def test_a_study_with_grid_axes_compares_within_each_grid_cell():
    runs = pd.DataFrame(
        [{"kernel_size": k, "patch_size": p, "status": "done"} for k in (3, 5) for p in (2, 4)]
    )  # fmt: skip
    design = Design("s", baseline={"kernel_size": 5}, vary={"kernel_size": [3]}, grid={"patch_size": [2, 4]})
    keys = ["kernel_size", "patch_size"]
    assert choose_baseline(runs, keys, {"s": design}, []) == {"kernel_size": 5}  # not patch_size's default too
    assert choose_baseline(runs, keys, {"s": None}, []) == {"kernel_size": 5, "patch_size": 2}  # a grid's default
    assert choose_baseline(runs, keys, {"s": design}, ["patch_size=4"]) == {"kernel_size": 5, "patch_size": 4}


@pytest.mark.slow  # writes a whole report
def test_a_report_of_one_run_says_so_and_draws_no_single_point(sweep, tmp_path):
    one = copy_runs(sweep, tmp_path / "one", lambda config: config["kernel_size"] == 3 and config["seed"] == 0)
    assert report.main([str(one), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    latex, index = (out / "table.tex").read_text(), (out / "report.md").read_text()
    assert "; one seed." in latex and "Welch" not in latex and "Delta" not in latex  # nothing compared
    for text in (latex, index):
        assert not any(wrong in text for wrong in ("varying ;", "n = 1 seeds", "over the 0 comparisons"))
    assert "Effects: none (one variant, nothing to compare)." in index and "Pareto" not in index
    assert sorted(path.stem for path in out.glob("*.png")) == ["training_curves"]  # 2 epochs: a curve, not a point
    assert "One run: no band." in index


def test_a_row_whose_difference_holds_is_marked_and_the_mark_is_latex():
    assert tables.holm_cell({"is_baseline": False, "p_holm": 0.0042}) == "0.0042*"
    assert tables.holm_cell({"is_baseline": False, "p_holm": 0.2}) == "0.20"
    assert tables.holm_cell({"is_baseline": True, "p_holm": float("nan")}) == ""
    assert tables.latex_escape("0.0042*") == "0.0042$^{*}$"
    assert tables.latex_caption("kernel size $k$, 5% of $n = 3$") == r"kernel size $k$, 5\% of $n = 3$"
