"""--seeds auto and seeds = "auto": the sweep's stages read off what is done (analysis.sequential), recorded in
sweep.json as the same design whatever the stage, old sweep.json files read as before, and bad stage options
refused in one line."""

import argparse
import dataclasses
import json
import shutil

import pytest

from ablations.design import AUTO, Design
from ablations.run import cli, stage_configs, staged_sweep
from ablations.store import Store
from ablations.sweep.study import parse_study, read_study
from analysis import sequential, tables
from analysis.design import scope
from analysis.variants import summarise


def options(**given) -> argparse.Namespace:
    return argparse.Namespace(**({"max_seeds": None, "resolve": None} | given))


def test_a_study_with_seeds_auto_sweeps_every_seed_up_to_the_maximum_and_records_auto():
    _, _, sweep = parse_study({"preset": "smoke", "seeds": "auto", "vary": {"kernel_size": [3, 5]}}, "s.toml")
    assert sweep.auto
    sweep = staged_sweep(options(max_seeds=6, resolve=0.5), sweep)
    assert sweep.seeds == 6 and sweep.size() == 2 * 6
    design = sweep.design("s", "smoke")
    assert (design.seeds, design.max_seeds, design.resolve) == (AUTO, 6, 0.5)
    assert Design.from_dict(design.to_dict()) == design


def test_a_sweep_json_written_before_seeds_auto_reads_as_the_same_fixed_design():
    old = {"name": "s", "seeds": 3, "order": "seeds", "runs": ["a"]}
    design = Design.from_dict(old)
    assert (design.seeds, design.max_seeds, design.resolve) == (3, 0, 0.0)
    assert design.same_as(dataclasses.replace(design, name="t"))


def test_seed_k_is_the_same_run_in_an_auto_design_and_a_fixed_one():
    fixed = read_study("studies/cifar10-cpu.toml").sweep
    auto = staged_sweep(options(max_seeds=6), dataclasses.replace(fixed, auto=True))
    assert {cfg.run_id() for cfg in fixed.configs()} <= {cfg.run_id() for cfg in auto.configs()}


@pytest.mark.slow  # reads the committed store: about a second
def test_the_committed_study_s_next_stage_is_its_open_variants_and_baseline_at_six_seeds(capsys):
    fixed = read_study("studies/cifar10-cpu.toml").sweep
    sweep = staged_sweep(options(max_seeds=6), dataclasses.replace(fixed, auto=True))
    chosen = stage_configs(sweep.configs(), Store("results/cifar10-cpu"), sweep)
    assert len(chosen) == 33 + 27  # every first-stage run, and seeds 3-5 of the 8 open variants and the baseline
    assert not any(cfg.norm == "layer" or cfg.patch_size == 4 for cfg in chosen if cfg.seed >= 3)  # decided
    assert "stage 2: 27 runs for the open comparisons" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-seeds", "6"], "--max-seeds is accepted only with seeds auto"),
        (["--seeds", "auto", "--max-seeds", "2"], "--max-seeds 2 is not accepted: expected an integer >= 3"),
        (["--seeds", "auto", "--resolve", "0"], "--resolve 0 is not accepted: expected a number of points > 0"),
        (["--seeds", "some"], "'some' is not accepted: expected an integer >= 1 or auto"),
    ],
)
def test_bad_stage_options_are_one_line_and_write_nothing(tmp_path, capsys, args, message):
    assert cli(["--vary", "kernel_size=3,5", "--out", str(tmp_path / "out"), *args]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


TINY = "dim=8,depth=1,patch_size=4,train_subset=200,test_subset=100,batch_size=50,epochs=1"


@pytest.mark.slow
def test_an_auto_sweep_runs_stage_after_stage_and_a_rerun_has_nothing_left(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--set", TINY, "--vary", "norm=layer", "--seeds", "auto", "--max-seeds", "6", "--out", str(out)]
    assert cli([*args, "--devices", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "stage 1: 3 seeds of every variant" in printed and "6 runs: 6 done" in printed
    (design,) = Store(out).read_designs()
    assert design.seeds == AUTO and len(design.runs) == 2 * 6  # every run it may train: one design at every stage
    trained = sum(1 for path in (out / "runs").iterdir())
    assert trained in (6, 12)  # stage 2 only where the comparison stayed open
    assert cli([*args, "--devices", "cpu", "--dry-run"]) == 0
    assert f"0 to train ({trained} finished earlier)" in capsys.readouterr().out  # every stage's runs counted


def test_the_report_of_an_auto_design_marks_what_the_design_decides(tmp_path):
    """The committed study read as an auto design at its first stage: the table's p_Holm is the design's sequential
    p, so kernel 3, an effect at 3 seeds by Welch's p, stays unmarked while the design holds it open."""
    store = shutil.copytree("results/cifar10-cpu", tmp_path / "cifar10-cpu", ignore=shutil.ignore_patterns("report"))
    sweep_json = store / "sweep.json"
    sweep_json.write_text(
        json.dumps(json.loads(sweep_json.read_text()) | {"seeds": AUTO, "max_seeds": 6, "resolve": 1.0})
    )
    chosen = scope([store], [])
    fixed = summarise(chosen.runs, chosen.baseline, chosen.keys)
    variants = sequential.with_design_p(fixed, chosen, sequential.standing(chosen))
    p = variants.set_index(["kernel_size", "patch_size", "residual", "norm"])["p_holm"]
    assert fixed.set_index("kernel_size").loc[3, "p_holm"] < 0.05 <= p[(3, 2, "depthwise", "batch")]
    assert p[(5, 2, "depthwise", "layer")] == pytest.approx(0.0068, abs=5e-5) and p[(5, 4, "depthwise", "batch")] < 0.05
    effects = tables.effects_text(variants, [""] * len(variants))
    assert effects.startswith("Effects (the sequential design's Holm-adjusted p < 0.05 over the 10 comparisons)")
    assert "sequential design's p" in tables.caption(chosen.runs, variants, chosen, ["p"])
