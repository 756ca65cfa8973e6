"""sweep.json's format: `Design`, one sweep's design, and the rules that keep every sweep.json ever written readable.

The runner builds a Design (ablations.sweep.grid `Sweep.design`), the store writes and reads sweep.json through it
(ablations.store `Store.add_design`/`read_designs`), and analysis groups runs by it: one type on both sides, so a
new design key is one field here. An *axis* is one swept key with its values: a `vary` axis changes that key
alone from the baseline, a `grid` axis is crossed with every run (`Design.axes` lists both kinds).
"""

import dataclasses
import json
from dataclasses import dataclass, field

from ablations.config import NOT_IDENTITY, RunConfig

# Design keys added after designs were first recorded, with the value every earlier sweep had: read as that value,
# so an old sweep.json is the same design as the command that wrote it.
LATER_DESIGN_KEYS = {"order": "seeds", "max_seeds": 0, "resolve": 0.0}
AUTO = "auto"  # seeds: the sequential design (analysis.sequential) adds seeds stage by stage up to max_seeds
OBJECT_KEYS = ("fixed", "baseline", "vary", "grid")  # the keys whose values are JSON objects


@dataclass(frozen=True)
class Design:
    """One sweep's design: vary axes change one key at a time from `baseline`; grid axes form a product."""

    name: str
    preset: str = ""
    study: str | None = None
    description: str = ""
    fixed: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)
    vary: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    seeds: int | str = 0  # per variant, or AUTO
    order: str = "seeds"  # the order its runs were trained in (ablations.sweep.grid.ORDERS)
    max_seeds: int = 0  # with seeds AUTO: the last stage's seeds per variant
    resolve: float = 0.0  # with seeds AUTO: the difference (points) whose interval stops a comparison
    runs: list[str] | None = None  # its run ids; None: every run of the folder (sweep.json's first format)

    @property
    def axes(self) -> list[str]:
        """Every swept key but the seed: the vary axes, then the grid axes."""
        return [*self.vary, *self.grid]

    def to_dict(self) -> dict:
        """As sweep.json holds it (and reads it back: tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict) -> "Design":
        """ValueError (what is wrong, in words) unless `values` is a design this toolkit wrote; a key added later
        (LATER_DESIGN_KEYS) that it lacks is read as the value it had then."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown or not isinstance(values.get("name"), str):
            problem = f"unknown key {unknown[0]!r}" if unknown else "no 'name'"
            raise ValueError(f"{problem}; expected the keys {', '.join(known)}")
        for key in OBJECT_KEYS:
            if not isinstance(values.get(key, {}), dict):
                raise ValueError(f"{key!r} must be a JSON object")
        return cls(**{**LATER_DESIGN_KEYS, **values})

    def same_as(self, other: "Design") -> bool:
        """Whether two designs are one: the name follows the folder, and where the data is (NOT_IDENTITY) is no part
        of a run, so neither is part of what ran; a design of the first format (runs None) is the same as one that
        differs from it only in its run ids."""
        runs = other.runs if self.runs is None or other.runs is None else self.runs
        return dataclasses.replace(self, runs=runs).what_ran() == other.what_ran()

    def what_ran(self) -> "Design":
        # A fixed key at RunConfig's default fixes what every run had anyway: keys a preset came to pin later
        # (activation, residual, norm) leave the design what it was.
        defaults = RunConfig().to_dict()
        at_default = {key for key, value in self.fixed.items() if key in defaults and defaults[key] == value}
        fixed = {key: value for key, value in self.fixed.items() if key not in (*NOT_IDENTITY, *at_default)}
        return dataclasses.replace(self, name="", fixed=fixed)


def read_file(value: dict) -> list[Design]:
    """The designs of a sweep.json's object, oldest first; ValueError (in words) for one this toolkit did not write.
    Its first format was one design object, without run ids; the next is {"designs": [...]}, each with "runs"."""
    if "designs" not in value:
        return [Design.from_dict({**value, "runs": None})]
    designs = value["designs"]
    if not isinstance(designs, list) or not all(isinstance(d, dict) and "runs" in d for d in designs):
        raise ValueError("'designs' must be a list of objects, each with 'runs'")
    return [Design.from_dict(design) for design in designs]


def file_content(designs: list[Design]) -> dict:
    """What sweep.json holds for `designs` (always the current format)."""
    return {"designs": [design.to_dict() for design in designs]}
