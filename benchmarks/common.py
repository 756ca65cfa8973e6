"""What the benchmarks share: the runner's vocabulary for a run (--preset, --set, --data-root, parsed by the sweep's
own parser) and the one way a benchmark writes its result (JSON, a Markdown twin, the command line that made it).

A benchmark takes the same keys as `python -m ablations.run`, so a recipe is named once (ablations/sweep/presets.py)
and a key means the same thing in both.
"""

import argparse
import os
import shlex
import sys
from pathlib import Path

from ablations import atomic
from ablations.config import RunConfig, portable_path
from ablations.sweep.grid import build_sweep, sweep_configs
from ablations.sweep.presets import PRESETS

# The precisions a benchmark times a model in: a GPU's training precision (what precision=auto picks there) and fp32.
TIMED_PRECISIONS = ("bf16", "fp32")


def add_recipe_options(parser: argparse.ArgumentParser, preset: str) -> None:
    """--preset, --set and --data-root, as the runner has them."""
    parser.add_argument("--preset", choices=PRESETS, default=preset, help=f"the recipe (default {preset})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE,...", help="override its keys")
    parser.add_argument("--data-root", metavar="PATH", help="where the data is (default: the preset's; docs/data.md)")


def recipe_config(args: argparse.Namespace) -> RunConfig:
    """The run of --preset, --set and --data-root, validated, its data_root absolute; ConfigError naming a bad value."""
    (cfg,) = sweep_configs(args.preset, build_sweep(PRESETS[args.preset].values, args.set, [], 1), args.data_root)
    return cfg


def speed_words(ratio: float) -> str:
    """A time ratio (the other's time / this one's) in words: 2.0 -> "2.00x faster", 0.9 -> "1.11x slower" (a
    reader takes "0.9x faster" for faster)."""
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def check_out(out: Path | None) -> None:
    """Refuse an --out that cannot be written now, not after the benchmark has run for an hour."""
    if out is None:
        return
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is not accepted: it is a folder; expected a .json path")
    if out.suffix == ".md":  # the .md written beside it would replace the JSON
        raise ValueError(f"--out {str(out)!r} is not accepted: expected a .json path (the .md goes beside it)")
    if out.with_suffix(".md").is_dir():
        raise ValueError(f"--out {str(out)!r} is not accepted: {str(out.with_suffix('.md'))!r} is a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"--out {str(out)!r} is not accepted: cannot create its folder ({error.strerror})") from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {str(out)!r} is not accepted: its folder is not writable")


def recorded_command(argv: list[str] | None) -> str:
    """The command that made a result as a reader of the repository types it: `python -m benchmarks.<name>` (not
    the module's file), with every absolute path recorded as results record a path (`portable_path`: relative to
    the repository inside it, else its name only), so a result never carries a machine's own path."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    program = ["-m", spec.name] if spec is not None else [sys.argv[0]]
    args = sys.argv[1:] if argv is None else argv
    return "python " + shlex.join([*program, *(portable_path(arg) if os.path.isabs(arg) else arg for arg in args)])


def write_result(out: Path, argv: list[str] | None, result: dict, report: str, quiet: bool = False) -> None:
    """`result` as JSON at `out` and `report` as Markdown beside it, each headed by the command that made them
    (`quiet`: without saying so, for the partial results a benchmark writes as it goes)."""
    command = recorded_command(argv)
    atomic.write_json(out, {"command": command, **result})
    atomic.write_text(out.with_suffix(".md"), f"`{command}`\n{report}")
    if not quiet:
        print(f"wrote {out} and {out.with_suffix('.md')}")
