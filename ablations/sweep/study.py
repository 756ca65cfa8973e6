"""Study files: an ablation design in TOML (`studies/<name>.toml`), read into the same Sweep as the command line.

    description = "what the study asks"
    preset = "cifar10-jpeg"        # the recipe the keys below override
    seeds = 3                       # or "auto": seeds stage by stage where the report needs them (--max-seeds)
    order = "axes"                  # optional: train whole axes in turn (default "seeds": seed 0 of all first)
    [fixed]                         # keys every run shares
    dim = 48
    [baseline]                      # the run every vary axis starts from
    kernel_size = 5
    [vary]                          # one factor at a time from the baseline; the baseline run is shared
    kernel_size = [3, 5, 7, 9]
    [grid]                          # optional: cartesian axes crossed with every run above
    lr = [0.01, 0.02]

Every value is checked against the RunConfig field's type here, so a study file with a typo fails in one line
naming the file, the table and the key, before anything is written.
"""

import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ablations.config import ConfigError, typed_value
from ablations.sweep.grid import AUTO, ORDERS, Sweep, check_axis, check_key, check_sweep
from ablations.sweep.presets import PRESETS

TOP_LEVEL = ("description", "preset", "seeds", "order", "fixed", "baseline", "vary", "grid")


@dataclass(frozen=True)
class Study:
    name: str  # the file's stem: results go to sweeps/<name>/
    description: str
    preset: str
    sweep: Sweep
    text: str  # the file as written, kept beside the results


def table(data: dict, name: str, where: str) -> dict:
    values = data.get(name, {})
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: {name} must be a table [{name}], not {type(values).__name__}")
    return {check_key(key, f"{where} [{name}]"): value for key, value in values.items()}


def axes(data: dict, name: str, where: str) -> dict[str, list]:
    result = {}
    for key, values in table(data, name, where).items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where} [{name}] {key}={values!r} is not accepted: expected a non-empty list")
        result[key] = check_axis(key, [typed_value(key, v, f"{where} [{name}]") for v in values], f"{where} [{name}]")
    return result


def parse_study(data: dict, where: str) -> tuple[str, str, Sweep]:
    """(description, preset, sweep) from a study file's parsed TOML; `where` names the file in errors."""
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        close = difflib.get_close_matches(unknown[0], TOP_LEVEL, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"expected {', '.join(TOP_LEVEL)}"
        raise ConfigError(f"{where}: unknown entry {unknown[0]!r}; {hint}")
    preset, seeds = data.get("preset", "smoke"), data.get("seeds", 1)
    if preset not in PRESETS:
        raise ConfigError(f"{where}: preset={preset!r} is not accepted: choose one of {', '.join(PRESETS)}")
    auto = seeds == AUTO  # the runner's --max-seeds gives the most
    if type(seeds) is not int and not auto:
        raise ConfigError(f"{where}: seeds={seeds!r} is not accepted: expected an integer >= 1 or {AUTO!r}")
    seeds = 1 if auto else seeds
    order = data.get("order", "seeds")
    if order not in ORDERS:
        raise ConfigError(f"{where}: order={order!r} is not accepted: choose one of {', '.join(ORDERS)}")
    fixed = {key: typed_value(key, value, f"{where} [fixed]") for key, value in table(data, "fixed", where).items()}
    baseline = {
        key: typed_value(key, value, f"{where} [baseline]") for key, value in table(data, "baseline", where).items()
    }
    vary, grid = axes(data, "vary", where), axes(data, "grid", where)
    stray = sorted(set(baseline) - set(vary))
    if stray:
        raise ConfigError(f"{where}: [baseline] {stray[0]} is not in [vary]; fixed keys go in [fixed]")
    sources = {"fixed": "[fixed]", "vary": "[vary]", "grid": "[grid]", "seeds": "seeds"}
    check_sweep(Sweep(fixed, grid, seeds, vary), sources)
    return (
        str(data.get("description", "")),
        preset,
        Sweep({**PRESETS[preset].values, **fixed, **baseline}, grid, seeds, vary, order, auto),
    )


def read_study(path: Path) -> Study:
    """The study in `path`; any problem with the file is a one-line ConfigError naming it."""
    try:
        text = Path(path).read_text()
        data = tomllib.loads(text)
    except OSError as error:
        raise ConfigError(f"--study {str(path)!r} cannot be read ({error.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"--study {str(path)!r} is not valid TOML ({error})") from None
    description, preset, sweep = parse_study(data, str(path))
    return Study(Path(path).stem, description, preset, sweep, text)
