"""sweep.json's one type: the runner builds a Design, the store writes and reads it, analysis gets it back whole."""

import dataclasses
import json
from pathlib import Path

import pytest

from ablations.design import LATER_DESIGN_KEYS, Design, file_content, read_file
from ablations.store import Store, StoreError
from ablations.sweep.grid import build_sweep
from analysis.design import read_designs

REPO = Path(__file__).resolve().parents[1]


def test_the_runners_design_reads_back_equal_from_the_store(tmp_path):
    sweep = build_sweep({"epochs": 1}, ["dim=8"], ["patch_size=2,4"], 2, ["kernel_size=3,7"])
    design = sweep.design("mine", "smoke")
    assert design.axes == ["kernel_size", "patch_size"]  # vary axes, then grid axes
    assert Store(tmp_path).add_design(design, ["a", "b"], None) == 1
    (read,) = read_designs(tmp_path)
    assert read == Design(**{**design.to_dict(), "runs": ["a", "b"]}) and read.order == "seeds"
    assert json.loads((tmp_path / "sweep.json").read_text()) == file_content([read])


def test_a_design_records_a_fixed_data_root_as_results_do_never_a_machine_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no git work tree here: only the name is recorded
    sweep = build_sweep({}, [f"data_root={tmp_path / 'data' / 'cifar.tar.gz'},dim=8"], [], 1)
    assert sweep.design("d", "smoke").fixed == {"data_root": "cifar.tar.gz", "dim": 8}


@pytest.mark.parametrize("folder", sorted(path.parent for path in REPO.glob("results/*/sweep.json")))
def test_every_committed_sweep_json_reads_and_writes_back_unchanged_apart_from_its_later_keys(folder):
    """The committed files are of the first format (one design, no "order"): read as one design of the whole folder,
    trained seed-major, and written back (when a second design is added) with nothing else changed."""
    value = json.loads((folder / "sweep.json").read_text())
    (design,) = read_file(value)
    assert (design.runs, design.order) == (None, "seeds")
    assert {k: v for k, v in design.to_dict().items() if k not in ("runs", *LATER_DESIGN_KEYS)} == value


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"name": "x", "axes": {}}, "unknown key 'axes'; expected the keys name, preset, study"),
        ({"preset": "smoke"}, "no 'name'"),
        ({"name": "x", "grid": [3, 5]}, "'grid' must be a JSON object"),
        ({"designs": [{"name": "x"}]}, "'designs' must be a list of objects, each with 'runs'"),
    ],
)
def test_a_sweep_json_this_toolkit_did_not_write_is_refused_in_one_line(tmp_path, content, message):
    (tmp_path / "sweep.json").write_text(json.dumps(content))
    with pytest.raises(StoreError) as error:
        Store(tmp_path).read_designs()
    assert str(error.value).startswith(f"{tmp_path / 'sweep.json'} is not accepted: ") and message in str(error.value)


def test_a_design_differing_only_in_name_or_in_the_first_formats_missing_runs_is_the_same():
    design = Design("a", "smoke", grid={"kernel_size": [3, 5]}, seeds=2, runs=["r1"])
    assert design.same_as(Design("b", "smoke", grid={"kernel_size": [3, 5]}, seeds=2, runs=["r1"]))
    assert Design("a", "smoke", grid={"kernel_size": [3, 5]}, seeds=2).same_as(design)  # first format: runs None
    assert not design.same_as(Design("a", "smoke", grid={"kernel_size": [3, 5]}, seeds=2, runs=["r2"]))
    assert not design.same_as(Design("a", "smoke", grid={"kernel_size": [3, 5]}, seeds=2, order="axes", runs=["r1"]))


def test_a_fixed_key_at_its_default_is_the_design_without_it():
    """Presets came to pin activation, residual and norm: a committed design recorded before they did is the same."""
    old = Design("a", "cifar10-jpeg", fixed={"dim": 48}, vary={"kernel_size": [3, 5]}, seeds=3, runs=["r1"])
    pinned = {"dim": 48, "activation": "gelu", "residual": "depthwise", "norm": "batch"}
    assert dataclasses.replace(old, fixed=pinned).same_as(old)
    assert not dataclasses.replace(old, fixed={**pinned, "norm": "layer"}).same_as(old)
