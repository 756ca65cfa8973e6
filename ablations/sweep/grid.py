"""From command-line overrides to the validated list of RunConfigs a sweep will train.

`--set KEY=VALUE,...` fixes keys for every run, `--grid KEY=V1,V2,...` adds an axis of the cartesian product,
`--vary KEY=V1,V2,...` changes one key at a time from the baseline (the paper's kind of ablation table: the
baseline run is shared by every axis), `--seeds N` adds seed=0..N-1. Values are parsed by the RunConfig field's
type and every expanded config is validated before anything runs, so a typo fails in a second with a one-line
ConfigError instead of an hour in. Study files (ablations.sweep.study) describe the same Sweep in TOML.
"""

import difflib
import itertools
import math
from dataclasses import dataclass, field

from ablations.config import ConfigError, RunConfig, field_types, parse_value, portable_path
from ablations.design import AUTO, Design
from ablations.sweep.presets import check_data_read, sweep_data_root

# The order runs are trained in. "seeds": every variant for seed 0 first, so a half-finished sweep already spans
# the design. "axes": the baseline's seeds, then each vary axis in the order written with all its seeds (grid axes
# are crossed with every run, so they come whole with each), so a sweep cut short (a GPU lent for minutes) leaves
# whole axes finished, the earlier ones first. An axis is one swept key and its values (ablations.design).
ORDERS = ("seeds", "axes")


@dataclass
class Sweep:
    """What to train: the fixed keys (the baseline's values included), the cartesian `grid` axes crossed with every
    run, in command-line order, the number of seeds, the one-at-a-time `vary` axes, and the run order."""

    fixed: dict = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    seeds: int = 1
    vary: dict[str, list] = field(default_factory=dict)
    order: str = "seeds"  # one of ORDERS
    auto: bool = False  # seeds "auto": `seeds` is then the most per variant, given stage by stage (analysis.sequential)
    resolve: float = 1.0  # with auto: the difference (points) whose interval stops a comparison

    def varying_keys(self) -> list[str]:
        return list(self.vary) + list(self.grid) + (["seed"] if self.seeds > 1 else [])

    def baseline(self) -> dict:
        """The values of the varied keys that every vary axis starts from ({} for a plain grid)."""
        return {key: self.fixed.get(key, getattr(RunConfig, key)) for key in self.vary}

    def variants(self) -> list[dict]:
        """The baseline, then each vary axis's values in order, with the baseline's own value only once."""
        baseline = self.baseline().items()
        changes = [{key: value} for key, values in self.vary.items() for value in values]
        return [{}] + [change for change in changes if not change.items() <= baseline]

    def size(self) -> int:
        """How many runs configs() makes, counted from the axes without making them."""
        return self.seeds * len(self.variants()) * math.prod(len(values) for values in self.grid.values())

    def named_data_root(self) -> str | None:
        """How the design names a data_root, for a message; None when it names none."""
        if "data_root" in self.fixed:
            return f"data_root={self.fixed['data_root']!r}"
        for flag, axes in (("--grid", self.grid), ("--vary", self.vary)):
            if "data_root" in axes:
                return f"{flag} data_root={','.join(map(str, axes['data_root']))}"
        return None

    def check_size(self, max_runs: int) -> None:
        """Refuse a design beyond `max_runs` (--max-runs) from its axis lengths, before a RunConfig is built."""
        if max_runs < 1:
            raise ConfigError(f"--max-runs {max_runs} is not accepted: expected an integer >= 1")
        if self.size() > max_runs:
            raise ConfigError(
                f"the design has {self.size():,} runs, more than --max-runs {max_runs:,}: check its axes and seeds, "
                "or raise --max-runs"
            )

    def configs(self) -> list[RunConfig]:
        """Every run, in ORDERS[self.order]'s order."""
        seeds = range(self.seeds) if self.seeds > 1 else [None]
        if self.order == "axes":
            pairs = [(change, seed) for change in self.variants() for seed in seeds]
        else:
            pairs = [(change, seed) for seed in seeds for change in self.variants()]
        runs = []
        for change, seed in pairs:
            for combo in itertools.product(*self.grid.values()):
                values = {**self.fixed, **change, **dict(zip(self.grid, combo, strict=True))}
                if seed is not None:
                    values["seed"] = seed
                runs.append(RunConfig(**values))
        for cfg in runs:
            cfg.validate()
        return runs

    def design(self, name: str, preset: str, study: str | None = None, description: str = "") -> Design:
        """The sweep's design, for the store's sweep.json: what the report needs to group and compare runs."""
        fixed = {key: portable_path(value) if key == "data_root" else value for key, value in self.fixed.items()}
        values = {"fixed": fixed, "baseline": self.baseline(), "vary": self.vary, "grid": self.grid}
        seeds = {"seeds": self.seeds}
        if self.auto:
            seeds = {"seeds": AUTO, "max_seeds": self.seeds, "resolve": self.resolve}
        return Design(name, preset, study, description, **values, **seeds, order=self.order)


def check_key(key: str, option: str) -> str:
    types = field_types()
    if key in types:
        return key
    close = difflib.get_close_matches(key, types, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "see `python -m ablations.run --help` for the keys"
    raise ConfigError(f"{option}: unknown key {key!r}; {hint}")


def split_assignment(text: str, option: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise ConfigError(f"{option} {text!r} is malformed: expected KEY=VALUE")
    return check_key(key.strip(), option), value


def parse_sets(items: list[str]) -> dict:
    """`--set a=1,b=2 --set c=3` as {a: 1, b: 2, c: 3}; a key given twice is an error."""
    fixed = {}
    for item in items:
        for assignment in item.split(","):
            if "=" not in assignment:
                raise ConfigError(f"--set {item!r} is malformed: {assignment!r} is not KEY=VALUE (lists go in --grid)")
            key, value = split_assignment(assignment, "--set")
            if key in fixed:
                raise ConfigError(f"--set: key {key!r} given twice")
            fixed[key] = parse_value(key, value, "--set")
    return fixed


def check_axis(key: str, values: list, option: str) -> list:
    """An axis's values, refusing a repeated one (it would be the same run twice)."""
    repeated = [value for i, value in enumerate(values) if value in values[:i]]
    if repeated:
        raise ConfigError(f"{option} {key}: value {repeated[0]!r} given twice")
    return values


def parse_grid(items: list[str], option: str = "--grid") -> dict[str, list]:
    """`--grid a=1,2 --grid b=x,y` as {a: [1, 2], b: ["x", "y"]}; a repeated key or value is an error."""
    axes = {}
    for item in items:
        key, values = split_assignment(item, option)
        if key in axes:
            raise ConfigError(f"{option}: key {key!r} given twice; put all its values in one {option} {key}=V1,V2")
        axes[key] = check_axis(key, [parse_value(key, value, option) for value in values.split(",")], option)
    return axes


def check_sweep(sweep: Sweep, sources: dict[str, str]) -> Sweep:
    """Refuse a key that two parts of the design claim; `sources` names the parts ("--set", "[fixed]", ...)."""
    parts = {"fixed": sweep.fixed, "vary": sweep.vary, "grid": sweep.grid}
    for (first, a), (second, b) in itertools.combinations(parts.items(), 2):
        both = sorted(set(a) & set(b))
        if both:
            raise ConfigError(f"key {both[0]!r} is in both {sources[first]} and {sources[second]}; give it in one")
    if sweep.seeds < 1:
        raise ConfigError(f"{sources['seeds']} {sweep.seeds} is not accepted: expected an integer >= 1")
    if sweep.seeds > 1 and "seed" in set(sweep.fixed) | set(sweep.vary) | set(sweep.grid):
        raise ConfigError(f"{sources['seeds']} and a 'seed' key exclude each other; use one of them")
    return sweep


def build_sweep(preset: dict, sets: list[str], grids: list[str], seeds: int, varies: list[str] = ()) -> Sweep:
    """The sweep from a preset's values and the --set/--grid/--vary/--seeds options (they override the preset)."""
    fixed, grid, vary = parse_sets(sets), parse_grid(grids), parse_grid(list(varies), "--vary")
    sources = {"fixed": "--set", "vary": "--vary", "grid": "--grid", "seeds": "--seeds"}
    # A --set key that --vary changes is allowed: --set gives the baseline's value.
    check_sweep(Sweep({k: v for k, v in fixed.items() if k not in vary}, grid, seeds, vary), sources)
    return Sweep({**preset, **fixed}, grid, seeds, vary)


def sweep_configs(preset: str, sweep: Sweep, given: str | None) -> list[RunConfig]:
    """The sweep's runs, validated, with the data_root each trains with made absolute: `given` (--data-root) or the
    preset's own (`sweep_data_root`) in place of theirs. ConfigError in one line for data that is missing, or a
    path given to runs that read no files (`check_data_read`)."""
    data_root = sweep_data_root(preset, {*sweep.fixed, *sweep.varying_keys()}, given)
    configs = sweep.configs()
    named = f"--data-root {given!r}" if given is not None else sweep.named_data_root()
    check_data_read([cfg.dataset for cfg in configs], named)
    return [cfg.with_absolute_data_root(data_root) for cfg in configs]
