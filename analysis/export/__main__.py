"""`python -m analysis.export SWEEP --to parquet|tensorboard|wandb|mlflow [--out DIR]`: a sweep folder's runs into
DIR (default: SWEEP/export), as analysis.export's modules describe. The format's package is an optional extra; a
missing one is a one-line error naming it. The command line is parsed before pandas, torch or the format's package
is imported, so --help and usage errors answer at once."""

import importlib
import sys
from pathlib import Path

from ablations.config import ConfigError
from analysis.errors import AnalysisError
from analysis.export import FORMATS
from convmixer.arguments import MissingPackage, OneLineParser, folder_path, require, run_cli

PROG = "python -m analysis.export"


def export(sweep: Path, to: str, out: Path) -> tuple[Path, int]:
    """Write the runs of `sweep` as format `to` into `out`; the path written and the number of runs."""
    from analysis.export.runs import read_runs

    chosen = FORMATS[to]
    require(chosen.package, chosen.extra)
    runs = read_runs(sweep)
    if not runs:
        raise AnalysisError(f"{sweep} is not accepted: it has no run folders to export")
    writer = importlib.import_module(f"analysis.export.{chosen.module}")
    return writer.write(runs, out), len(runs)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog=PROG, description="A sweep's runs as Parquet, TensorBoard, W&B (offline) or MLflow (file store)."
    )
    parser.add_argument("sweep", type=folder_path, help="a sweep folder, e.g. results/smoke-kernel_size")
    parser.add_argument(
        "--to",
        required=True,
        choices=list(FORMATS),
        help="the format; each needs its extra: "
        + ", ".join(f'{name}: "convmixer-toolkit[{spec.extra}]"' for name, spec in FORMATS.items()),
    )
    parser.add_argument("--out", type=folder_path, help="output folder (default: SWEEP/export)")
    args = parser.parse_args(argv)
    path, count = export(args.sweep, args.to, args.out or args.sweep / "export")
    print(f"wrote {path}: {count} runs of {args.sweep} as {args.to}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG, (AnalysisError, ConfigError, MissingPackage, OSError))


if __name__ == "__main__":
    sys.exit(cli())
