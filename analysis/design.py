"""What a sweep set out to vary: its design (sweep.json, written by the runner), or what its runs show when it has none.

The design decides three things the report must get right: which keys are the swept ones (every other key must be
the same in every pooled run, or the comparison is between unrelated sweeps), which run is the baseline, and, for a
study (one factor at a time from a baseline), which variants belong to which axis of its table.
Sweeps written before sweep.json existed have no design: their swept keys are those whose values differ in them.
"""

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ablations.store import DESIGN, StoreError, read_object
from analysis.load import AnalysisError, variant_keys
from analysis.variants import default_baseline, parse_baseline, variant_label


@dataclass(frozen=True)
class Design:
    """A sweep's sweep.json: vary axes change one key at a time from `baseline`; grid axes form a product."""

    name: str
    preset: str = ""
    study: str | None = None
    description: str = ""
    fixed: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)
    vary: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    seeds: int = 0

    @property
    def axes(self) -> list[str]:
        return [*self.vary, *self.grid]


def read_design(sweep: Path) -> Design | None:
    """The design of a sweep folder, or None for a sweep written before designs were recorded."""
    path = Path(sweep) / DESIGN
    if not path.exists():
        return None
    try:
        values = read_object(path)
    except StoreError as error:
        raise AnalysisError(str(error)) from None
    known = Design.__dataclass_fields__
    unknown = sorted(set(values) - set(known))
    if unknown or not isinstance(values.get("name"), str):
        problem = f"unknown key {unknown[0]!r}" if unknown else "no 'name'"
        raise AnalysisError(f"{path} is not accepted: {problem}; expected the keys {', '.join(known)}")
    for key in ("fixed", "baseline", "vary", "grid"):
        if not isinstance(values.get(key, {}), dict):
            raise AnalysisError(f"{path} is not accepted: {key!r} must be a JSON object")
    return Design(**values)


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
    done = runs[runs["status"] == "done"]
    if baseline and not (done[list(baseline)] == pd.Series(baseline)).all(axis=1).any():
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
