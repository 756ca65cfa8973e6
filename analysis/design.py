"""What is compared: the swept keys, the variants they make, the baseline, and, for a study, its axes.

The design of a sweep (sweep.json, read as the store's `ablations.design.Design`), or what its runs show when it has
none, decides three things the report must get right: which keys are the swept ones (every other key must be the
same in every pooled run, or the comparison is between unrelated sweeps), which run is the baseline, and, for a
study (one factor at a time from a baseline), which variants belong to which axis of its table. `scope` decides
all of it at once.
Sweeps written before sweep.json existed have no design: their swept keys are those whose values differ in them.

A folder may hold several designs (each sweep into it that changed the design added one to sweep.json, with its
run ids): the report covers the latest one unless asked for another or for all (`--design`), and names the run
folders it leaves out, and why. A sweep.json of the first format holds one design without run ids: every run
folder is then its run.
"""

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ablations.config import NOT_IDENTITY, RunConfig, parse_value
from ablations.design import Design
from ablations.store import DONE, Store, StoreError
from analysis.errors import AnalysisError
from analysis.load import CONFIG_KEYS, done, load_runs, sweep_name

# Keys that never make two runs different variants: the seed is what we average over, and NOT_IDENTITY's
# (data_root) say only where the same data lives.
NOT_VARIANT_KEYS = ("seed", *NOT_IDENTITY)


def variant_keys(runs: pd.DataFrame) -> list[str]:
    """The config keys that take more than one value across the runs (seed and data_root excepted)."""
    return [
        key
        for key in CONFIG_KEYS
        if key in runs and key not in NOT_VARIANT_KEYS and runs[key].nunique(dropna=False) > 1
    ]


def variant_label(values: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items()) or "all runs"


def read_designs(sweep: Path) -> list[Design]:
    """Every design of a sweep folder, oldest first ([] for a sweep written before designs were recorded)."""
    try:
        return Store(sweep).read_designs()
    except StoreError as error:
        raise AnalysisError(str(error)) from None


def read_design(sweep: Path) -> Design | None:
    """The latest design of a sweep folder, or None for a sweep written before designs were recorded."""
    designs = read_designs(sweep)
    return designs[-1] if designs else None


def chosen_designs(sweep: Path, which: str) -> dict[str, Design | None]:
    """The designs of a folder that `which` asks for ("latest", "all", or a number: 1 is the oldest), by the name
    the report gives them: the folder's, with " design N" when the folder holds more than one."""
    name, designs = sweep_name(sweep), read_designs(sweep)
    if not designs:
        return {name: None}
    if which == "latest":
        numbers = [len(designs)]
    elif which == "all":
        numbers = list(range(1, len(designs) + 1))
    elif which.isdigit() and 1 <= int(which) <= len(designs):
        numbers = [int(which)]
    else:
        raise AnalysisError(
            f"--design {which!r} is not accepted: expected latest, all, or a number from 1 to {len(designs)} "
            f"({sweep} holds {len(designs)} design{'s' if len(designs) > 1 else ''})"
        )
    return {(f"{name} design {n}" if len(designs) > 1 else name): designs[n - 1] for n in numbers}


def left_out(runs: pd.DataFrame, sweep: Path, chosen: dict[str, Design | None]) -> pd.Series:
    """Why each run of `sweep` is left out of the chosen designs ("" for those kept), indexed like `runs`."""
    mine = runs["sweep"] == sweep_name(sweep)
    if any(design is None or design.runs is None for design in chosen.values()):
        return pd.Series("", index=runs.index)
    kept = {run_id for design in chosen.values() for run_id in design.runs}
    others = {run_id for design in read_designs(sweep) for run_id in design.runs or []}
    reasons = runs["run_id"].map(
        lambda run_id: "" if run_id in kept else "of another design" if run_id in others else "in no design"
    )
    return reasons.where(mine, "")


def swept_keys(runs: pd.DataFrame, designs: dict[str, Design | None]) -> list[str]:
    """The keys the sweeps set out to vary: their design's axes, or, without a design, the keys that vary in them.

    In the order of variant_keys (RunConfig's), so that tables and figures list the keys as the config does.
    """
    swept = set()
    for sweep, design in designs.items():
        swept |= set(design.axes) if design else set(variant_keys(runs[runs["sweep"] == sweep]))
    return [key for key in runs.columns if key in swept]


def check_not_mixed(runs: pd.DataFrame, swept: list[str]) -> None:
    """AnalysisError when the runs differ in a key nobody swept: unrelated sweeps, whose differences mean nothing."""
    mixed = [key for key in variant_keys(runs) if key not in swept]
    if not mixed:
        return
    key = mixed[0]
    values = ", ".join(sorted(map(str, runs[key].unique())))
    more = f" (and {len(mixed) - 1} more key{'s' if len(mixed) > 2 else ''})" if len(mixed) > 1 else ""
    sweeps = ", ".join(sorted(runs["sweep"].unique()))
    raise AnalysisError(
        f"the runs of {sweeps} differ in {key} ({values}){more}, which is not a swept key "
        f"(swept: {', '.join(swept) or 'none'}): report them one at a time, or pass --allow-mixed to pool them"
    )


def check_one_gpu_kind(runs: pd.DataFrame) -> None:
    """AnalysisError when done runs were measured on different hardware and one of them on a GPU: speed and the
    numerics of bf16 kernels differ between GPU kinds, so their runs are not seeds of one experiment."""
    finished = done(runs)
    if "hardware" not in finished or not finished["device"].astype(str).str.startswith("cuda").any():
        return
    kinds = sorted(map(str, finished["hardware"].dropna().unique()))
    if len(kinds) > 1:
        raise AnalysisError(
            f"the runs were measured on different hardware ({', '.join(kinds)}): report each kind on its own, "
            "or pass --allow-mixed to pool them"
        )


def vary_keys(designs: dict[str, Design | None], keys: list[str]) -> list[str]:
    """The swept keys that are one-factor-at-a-time axes in some design."""
    return [key for key in keys if any(design and key in design.vary for design in designs.values())]


def study_baseline(designs: dict[str, Design | None], keys: list[str]) -> dict:
    """The designs' baseline over the swept keys (the first design that names a key decides it)."""
    baseline = {}
    for design in designs.values():
        for key, value in (design.baseline if design else {}).items():
            if key in keys:
                baseline.setdefault(key, value)
    return baseline


def axis_rows(variants: pd.DataFrame, key: str, varied: list[str], baseline: dict) -> pd.DataFrame:
    """The variants on the axis of `key`: every other one-at-a-time key at its baseline value."""
    others = [other for other in varied if other != key and other in baseline]
    if not others:
        return variants
    at_baseline = (variants[others] == pd.Series({other: baseline[other] for other in others})).all(axis=1)
    return variants[at_baseline]


def choose_baseline(runs: pd.DataFrame, keys: list[str], designs: dict[str, Design | None], items: list[str]) -> dict:
    """The baseline: --baseline items over the study's baseline; without items, the study's baseline (grid axes
    are then compared within each cell), else default_baseline. AnalysisError when no finished run has the
    baseline's values (every Δ would be empty)."""
    study = study_baseline(designs, keys)
    if items:
        baseline = study | parse_baseline(items, runs, keys)
    else:
        baseline = study or default_baseline(runs, keys)
    finished = done(runs)
    if baseline and not (finished[list(baseline)] == pd.Series(baseline)).all(axis=1).any():
        raise AnalysisError(
            f"the baseline {variant_label(baseline)} matches no finished run: "
            f"name one that ran with --baseline KEY=VALUE (keys: {', '.join(keys)})"
        )
    return baseline


def axis_levels(runs: pd.DataFrame, designs: dict[str, Design | None], key: str, baseline: dict) -> list:
    """The values of `key` in the order a table or axis shows them: numbers ascending; words (residual, norm) in
    the order the design lists them, the baseline's first where the list leaves it out, then any others."""
    present = list(runs[key].unique())
    if pd.api.types.is_numeric_dtype(runs[key]) and not pd.api.types.is_bool_dtype(runs[key]):
        return sorted(present)
    listed = [baseline[key]] if key in baseline else []
    for design in designs.values():
        for value in [*design.vary.get(key, []), *design.grid.get(key, [])] if design else []:
            listed += [] if value in listed else [value]
    return [value for value in listed if value in present] + sorted(value for value in present if value not in listed)


def default_baseline(runs: pd.DataFrame, keys: list[str]) -> dict:
    """Each swept key at its RunConfig default, or at its smallest value where the default was not swept."""
    defaults = RunConfig().to_dict()
    values = {key: sorted(runs[key].unique()) for key in keys}
    return {key: defaults[key] if defaults[key] in values[key] else values[key][0] for key in keys}


def parse_baseline(items: list[str], runs: pd.DataFrame, keys: list[str]) -> dict:
    """Turn ["kernel_size=9", ...] into {"kernel_size": 9}; AnalysisError (or ConfigError) unless it was swept."""
    baseline = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise AnalysisError(f"--baseline {item!r} is not accepted: expected KEY=VALUE")
        if key not in keys:
            accepted = f"choose one of {', '.join(keys)}" if keys else "the runs differ only in their seed"
            raise AnalysisError(f"--baseline key {key!r} is not a swept key: {accepted}")
        if key in baseline:  # the last one would silently win
            raise AnalysisError(f"--baseline key {key!r} is given twice; give each key once")
        values = sorted(runs[key].unique())
        value = parse_value(key, text, "--baseline")
        if value not in values:
            accepted = ", ".join(map(str, values))
            raise AnalysisError(f"--baseline {key}={text} is not in the sweep: {key} takes {accepted}")
        baseline[key] = value
    return baseline


@dataclass(frozen=True)
class Scope:
    """What a report covers: the runs, their designs, the swept keys, the one-at-a-time ones, and the baseline."""

    runs: pd.DataFrame
    designs: dict[str, Design | None]
    keys: list[str]
    varied: list[str]  # the study's one-factor-at-a-time keys (empty for a grid)
    baseline: dict
    mixed: list[str]  # keys that differ but were not swept (only with --allow-mixed)
    left_out: pd.DataFrame = field(default_factory=pd.DataFrame)  # sweep, run_id, reason: runs of other designs

    @property
    def done(self) -> pd.DataFrame:
        return done(self.runs)

    @property
    def grid_keys(self) -> list[str]:
        return [key for key in self.keys if key not in self.varied]

    def levels(self, key: str) -> list:
        return axis_levels(self.runs, self.designs, key, self.baseline)


def scope(sweeps: list[Path], baseline_items: list[str], allow_mixed: bool = False, design: str = "latest") -> Scope:
    """Load the runs of the designs `design` asks for in each sweep folder and decide keys and baseline;
    AnalysisError/ConfigError on input the report cannot use."""
    runs = load_runs(sweeps)
    designs, reasons = {}, pd.Series("", index=runs.index)
    for sweep in sweeps:
        chosen = chosen_designs(sweep, design)
        designs |= chosen
        reasons = reasons.where(reasons != "", left_out(runs, sweep, chosen))
    dropped = runs[reasons != ""].assign(reason=reasons[reasons != ""])[["sweep", "run_id", "reason"]]
    runs = runs[reasons == ""].reset_index(drop=True)
    if done(runs).empty:
        found = ", ".join(f"{n} {status}" for status, n in runs["status"].value_counts().items()) or "no runs"
        raise AnalysisError(f"no finished runs (status {DONE}) in {', '.join(map(str, sweeps))}: found {found}")
    swept = swept_keys(runs, designs)
    if not allow_mixed:
        check_not_mixed(runs, swept)
        check_one_gpu_kind(runs)
    keys = [key for key in variant_keys(runs) if key in swept or allow_mixed]
    mixed = [key for key in keys if key not in swept]
    baseline = choose_baseline(runs, keys, designs, baseline_items)
    return Scope(runs, designs, keys, vary_keys(designs, keys), baseline, mixed, dropped.reset_index(drop=True))
