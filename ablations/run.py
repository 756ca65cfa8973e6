"""`python -m ablations.run`: train a grid of ConvMixer ablations into a resumable result store.

    python -m ablations.run --grid kernel_size=3,7,9,15                      # smoke preset: 28 s on 2 idle cores
    python -m ablations.run --preset cifar10 --grid patch_size=1,2,4 --seeds 3
    python -m ablations.run --vary kernel_size=3,9 --vary norm=layer --seeds 3   # one change at a time
    python -m ablations.run --study studies/cifar10-cpu.toml                 # a study file, into sweeps/<name>/

Everything is checked before anything runs (bad input: one line on stderr, exit code 2, nothing written).
Rerunning the same command skips finished runs and resumes unfinished ones; exit code 0 means every run of the
sweep is done, 1 that some failed or diverged. A finished run is never rewritten, and one on other data than
this sweep's is refused; one sweep at a time works in a folder (a second is refused).
"""

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

from ablations.atomic import WriteError
from ablations.config import ConfigError, RunConfig
from ablations.data import DataError, dataset_label
from ablations.design import Design
from ablations.store import DONE, FAILED, Locks, Store, StoreError
from ablations.sweep import plan as planning
from ablations.sweep.execute import check_processes, torchrun_rank, warn_oversubscribed
from ablations.sweep.grid import AUTO, Sweep, build_sweep, sweep_configs
from ablations.sweep.local import LocalLauncher, add_local_options, device_slots, local_devices
from ablations.sweep.plan import check_ids, outcome, run_plan
from ablations.sweep.presets import DEFAULT_PRESET, PRESETS, keys_help
from ablations.sweep.progress import run_label
from ablations.sweep.slurm import SlurmLauncher, SlurmOptions, add_slurm_options, check_cluster
from ablations.sweep.study import Study, read_study
from analysis.sequential import FIRST_SEEDS, MAX_SEEDS, RESOLVE, check_stages, next_stage
from convmixer.arguments import OneLineParser, folder_path, run_cli

PROG = "python -m ablations.run"
UNDER_TORCHRUN = (
    "ablations.run launches its runs' processes itself (--procs-per-run N); under torchrun, train one run with "
    "torchrun --nproc-per-node N -m ablations.train (same flags: --preset, --set, --data-root, --out)"
)
# Where a sweep goes without --out: a folder git ignores (.gitignore), apart from the committed results/.
DEFAULT_ROOT = Path("sweeps")
MAX_RUNS = 10_000  # --max-runs's default: a design beyond it is most likely a typo (a list pasted as a grid axis)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def seeds_value(text: str) -> int | str:
    if text == AUTO:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not accepted: expected an integer >= 1 or {AUTO}") from None


def help_preset(argv: list[str] | None) -> str:
    """The preset named on the command line, so that --help can show its values; a bad name is reported later."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=DEFAULT_PRESET)
    name = pre.parse_known_args(argv)[0].preset
    return name if name in PRESETS else DEFAULT_PRESET


class SweepParser(OneLineParser):
    """The sweep command's parser: a value list split by spaces gets a hint how to write it."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):  # `--grid kernel_size=3 7 9`: the shell split the values
            message += " (a key's values are comma-separated, without spaces: --grid kernel_size=3,7,9)"
        super().error(message)


def build_parser(preset: str = DEFAULT_PRESET) -> OneLineParser:
    parser = SweepParser(
        prog=PROG, description=__doc__, epilog=keys_help(preset),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--study", type=Path, metavar="FILE", help="a study file (studies/*.toml)")
    parser.add_argument(
        "--data-root", metavar="PATH",
        help="where every run's data is (a folder or archive), also for a study; not part of a run's id",
    )  # fmt: skip
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...", help="an axis of the grid")
    parser.add_argument(
        "--vary", action="append", default=[], metavar="KEY=V1,V2,...",
        help="change one key at a time from the baseline (the preset and --set values)",
    )  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE,...", help="fix keys for every run")
    parser.add_argument(
        "--seeds", type=seeds_value, metavar="N|auto",
        help="repeat every run with seed=0..N-1 (default 1); auto: stage by stage where the report needs them",
    )  # fmt: skip
    parser.add_argument(
        "--max-seeds", type=int, metavar="N", help=f"with --seeds auto: the most per variant (default {MAX_SEEDS})"
    )
    parser.add_argument(
        "--resolve", type=float, metavar="POINTS",
        help=f"with --seeds auto: a comparison whose interval lies inside ±POINTS stops (default {RESOLVE:g})",
    )  # fmt: skip
    parser.add_argument("--preset", choices=PRESETS, help=f"the recipe the keys override (default {DEFAULT_PRESET})")
    parser.add_argument("--name", help="sweep name (default: the study's, or preset and swept keys: smoke-kernel_size)")
    parser.add_argument(
        "--out", type=folder_path, metavar="DIR",
        help=f"result folder (default: {DEFAULT_ROOT}/<name>, which git ignores; committed studies go to results/)",
    )  # fmt: skip
    parser.add_argument(
        "--max-runs", type=int, default=MAX_RUNS, metavar="N",
        help=f"refuse a design of more than N runs, before building it (default {MAX_RUNS:,})",
    )  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true",
        help="check all a real run checks (the data too), list runs, write no result (decoded data is cached)",
    )  # fmt: skip
    parser.add_argument("--show-config", action="store_true", help="with --dry-run: print each run's full config")
    parser.add_argument("--retry-failed", action="store_true", help="rerun failed runs from their last checkpoint")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoint.pt of finished runs")
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local")
    parser.add_argument(
        "--procs-per-run", type=int, default=1, metavar="N",
        help="train each run on N processes (DDP): N GPUs per run, or N CPU processes (gloo); under --launcher slurm "
        "a job of N tasks (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--lock-dir", type=folder_path, metavar="DIR",
        help="keep the sweep's locks in DIR, on a filesystem where file locks work (Lustre needs -o flock)",
    )  # fmt: skip
    parser.add_argument(
        "--no-lock", action="store_true", help="take no locks (you make sure no other sweep or job uses the folder)"
    )
    add_local_options(parser)
    add_slurm_options(parser)
    return parser


def load_design(args: argparse.Namespace) -> tuple[Study | None, str, Sweep]:
    """(the study or None, the preset's name, the sweep) from --study or from the other options."""
    if args.study is None:
        preset, seeds = args.preset or DEFAULT_PRESET, 1 if args.seeds in (None, AUTO) else args.seeds
        sweep = build_sweep(PRESETS[preset].values, args.set, args.grid, seeds, args.vary)
        study = None
    else:
        given = [name for name in ("grid", "vary", "set") if getattr(args, name)]
        given += [name for name in ("seeds", "preset") if getattr(args, name) not in (None, AUTO)]
        if given:
            raise ConfigError(f"--study and --{given[0]} exclude each other: the study file holds the whole design")
        study = read_study(args.study)
        preset, sweep = study.preset, study.sweep
    return study, preset, staged_sweep(args, dataclasses.replace(sweep, auto=sweep.auto or args.seeds == AUTO))


def staged_sweep(args: argparse.Namespace, sweep: Sweep) -> Sweep:
    """With seeds auto, the sweep of every run it may train (seeds up to --max-seeds); refuse the stage options
    without it."""
    if not sweep.auto:
        given = "--max-seeds" if args.max_seeds is not None else "--resolve" if args.resolve is not None else None
        if given:
            raise ConfigError(f'{given} is accepted only with seeds auto (--seeds auto, or seeds = "auto")')
        return sweep
    max_seeds = MAX_SEEDS if args.max_seeds is None else args.max_seeds
    resolve = RESOLVE if args.resolve is None else args.resolve
    try:
        check_stages(max_seeds, resolve)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return dataclasses.replace(sweep, seeds=max_seeds, resolve=resolve)


def stage_configs(configs: list[RunConfig], store: Store, sweep: Sweep) -> list[RunConfig]:
    """The runs of the stage a seeds-auto sweep is in: the first stage's seeds of every variant, the seeds the
    sequential design (analysis.sequential, the report's rule) gives the open comparisons next, and those an
    earlier stage finished (so the counts printed are the sweep's)."""
    lines, needed = next_stage(store.root, sweep.seeds, sweep.resolve)
    print("\n".join(lines), flush=True)
    wanted = [(seed, values.items()) for values, seed in needed]

    def in_stage(cfg: RunConfig) -> bool:
        values = cfg.to_dict()
        return (
            cfg.seed < FIRST_SEEDS
            or any(cfg.seed == seed and pairs <= values.items() for seed, pairs in wanted)
            or store.metrics(store.run_dir(cfg)) is not None
        )

    return [cfg for cfg in configs if in_stage(cfg)]


def default_name(study: Study | None, preset: str, sweep: Sweep) -> str:
    return study.name if study is not None else "-".join([preset, *sweep.vary, *sweep.grid])


def result_dir(args: argparse.Namespace, default: str) -> tuple[str, Path]:
    """The sweep's name and folder: --name (default: `default`) under DEFAULT_ROOT, or --out, which --name then
    only names (without --name, --out's folder name is the sweep's)."""
    name = args.name if args.name is not None else default
    if not name.strip() or "/" in name or name in (".", ".."):  # "." and ".." would write sweeps/ or its parent
        raise ConfigError(f"--name {name!r} is not accepted: expected a folder name without '/', not '.' or '..'")
    root = args.out if args.out is not None else DEFAULT_ROOT / name
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--out {str(root)!r} is not accepted: it is a file, expected a folder")
    return (name if args.out is None or args.name is not None else root.resolve().name), root


def create_result_dir(root: Path) -> None:
    """Create the result folder before the first write, so that one that cannot be a folder fails in one line."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--out {str(root)!r} is not accepted: cannot create it ({error.strerror})") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {str(root)!r} is not accepted: it is not writable")


def check_options(args: argparse.Namespace, configs: list[RunConfig], devices: list[str]) -> None:
    import torch  # here, once the command line is parsed: --help and usage errors answer without it

    from ablations.engine.modes import check_cuda_graphs, run_dtype

    for precision in {cfg.precision for cfg in configs}:
        for device in devices:
            run_dtype(precision, torch.device(device))  # fp16 needs CUDA: refuse it now, not in every run
    for cfg in configs:  # as fp16: cuda_graphs needs CUDA
        for device in devices:
            check_cuda_graphs(cfg, torch.device(device))
    if args.time_limit is not None and args.launcher == "slurm":
        raise ConfigError("--time-limit is not accepted with --launcher slurm: use --slurm-time for each job")
    options = SlurmOptions.from_args(args, args.procs_per_run)  # a bad --slurm-* value is refused on any sweep
    if args.launcher == "slurm":
        for precision in {cfg.precision for cfg in configs}:
            run_dtype(precision, torch.device(options.device))
        check_cluster(options)
    check_ids(configs)


def print_table(configs: list[RunConfig], keys: list[str], store: Store) -> None:
    header = ["run_id", *keys, "status"]
    rows = [
        [cfg.run_id(), *(str(getattr(cfg, key)) for key in keys), store.state(store.run_dir(cfg)).describe(cfg.epochs)]
        for cfg in configs
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def make_launcher(args: argparse.Namespace, store: Store, devices: list[str]) -> LocalLauncher | SlurmLauncher:
    if args.launcher == "slurm":
        return SlurmLauncher(store, SlurmOptions.from_args(args, args.procs_per_run))
    limit_s = None if args.time_limit is None else 60 * args.time_limit
    return LocalLauncher(store, devices, args.jobs_per_device, limit_s, args.procs_per_run)


def report(configs: list[RunConfig], keys: list[str], store: Store) -> int:
    """Print how the sweep ended and where its results are; return the exit code."""
    ended = outcome(configs, store)
    counts = ended.counts()
    print(f"{plural(len(configs), 'run')}: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    for cfg in configs:
        state = ended.states[cfg.run_id()]
        if state.status != DONE:
            print(f"  {cfg.run_id()} {run_label(cfg.to_dict(), keys)}: {state.describe(cfg.epochs)}")
    if counts.get(FAILED):
        print("  rerunning the command resumes runs that failed for a passing reason (disk full, a killed worker);")
        print("  add --retry-failed to resume the other failed runs too")
    print(f"summary: {store.summary}")
    print(f"report:  python -m analysis.report {store.root}")
    return ended.exit_code


def first_line(name: str, configs: list[RunConfig], origin: str, keys: list[str]) -> str:
    """What the sweep is, in one line: its name, size, preset or study, model(s), data and swept keys."""
    models = ", ".join(dict.fromkeys(cfg.model_name for cfg in configs))
    data = ", ".join(dict.fromkeys(dataset_label(cfg.dataset, cfg.data_root) for cfg in configs))
    varying = ", ".join(keys) or "nothing"
    return f"sweep {name}: {plural(len(configs), 'run')} of {origin}: {models} on {data}, varying {varying}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser(help_preset(argv)).parse_args(argv)  # --help exits here
    study, preset, sweep = load_design(args)
    sweep.check_size(args.max_runs)
    keys = sweep.varying_keys()
    configs = sweep_configs(preset, sweep, args.data_root)
    check_processes(args.procs_per_run, configs)  # torch, once the design is known to be valid
    devices = local_devices(args) if args.launcher == "local" else []
    if devices == ["cpu"]:  # a run's ranks share this machine's cores (a GPU each is checked by local_devices)
        warn_oversubscribed(args.procs_per_run, "cpu")
    check_options(args, configs, devices)
    name, root = result_dir(args, default_name(study, preset, sweep))
    # Absolute: a SLURM job may start in another folder.
    store = Store(root, Locks(args.lock_dir.absolute() if args.lock_dir else None, args.no_lock))
    store.check_folder()
    origin = f"study {args.study} (preset {preset})" if study is not None else f"preset {preset}"
    print(first_line(name, configs, origin, keys), flush=True)
    design = sweep.design(name, preset, str(args.study) if study else None, study.description if study else "")
    if not sweep.auto:
        return train(args, configs, configs, keys, store, devices, design, study)[0]
    while True:  # a stage at a time, until one has nothing to train: every stage is read off what is done
        code, trained = train(args, stage_configs(configs, store, sweep), configs, keys, store, devices, design, study)
        if args.dry_run or not trained:
            return code


def train(
    args: argparse.Namespace,
    configs: list[RunConfig],
    design_configs: list[RunConfig],
    keys: list[str],
    store: Store,
    devices: list[str],
    design: Design,
    study: Study | None,
) -> tuple[int, int]:
    """Train `configs` (the design's runs, or a stage of them) and say how it ended: the exit code and how many
    runs were to train. With --dry-run, list them instead."""
    # A dry run checks the data too: a run would fail on it.
    plan = planning.plan(configs, store, args.retry_failed, keys, args.keep_checkpoints)
    for path, why in plan.damaged.items():
        print(f"damaged: {why}: it {'will be' if args.dry_run else 'is'} {store.damage_fate(path)}", flush=True)
    slots = len(device_slots(devices, args.jobs_per_device or 0, args.procs_per_run))  # SLURM: no devices here
    workers = f"{plural(slots, 'worker')} on {', '.join(devices)}" if devices else "SLURM jobs"
    if args.procs_per_run > 1:
        workers += f", {args.procs_per_run} processes per run"
    todo = plan.todo
    for note in plan.patch_notes():
        print(note)
    resumed = plan.resumed()  # reads the state of every run to train: once
    also = f", {resumed} of them from a checkpoint" if resumed else ""
    earlier = len(configs) - len(todo)
    line = f"{len(todo)} to train{also} ({earlier} finished earlier) with {workers}; results in {store.root}"
    if args.dry_run:
        print(line)
        print_table(configs, keys, store)
        for cfg in configs if args.show_config else []:
            print(f"{cfg.run_id()} {json.dumps(cfg.to_dict())}")
        return 0, len(todo)
    create_result_dir(store.root)
    launcher = make_launcher(args, store, devices)
    # Announced once the folder is locked and the design recorded: a refusal never follows "N to train".
    # The design's runs are all it may train (every seed up to --max-seeds with seeds auto): one design per sweep.
    ids = [cfg.run_id() for cfg in design_configs]
    run_plan(plan, launcher, design, study.text if study else None, lambda: print(line, flush=True), ids)
    return report(configs, keys, store), len(todo)


def cli(argv: list[str] | None = None) -> int:
    rank = torchrun_rank(os.environ)
    if rank is not None:  # each rank would start its own sweep: one line and exit 2 (rank 0's), nothing written
        if rank == 0:
            print(f"{PROG}: error: {UNDER_TORCHRUN}", file=sys.stderr)
        return 2 if rank == 0 else 0
    try:
        return run_cli(main, argv, PROG, (ConfigError, DataError, StoreError, WriteError))
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume (unfinished runs continue from their last epoch)")
        return 130


if __name__ == "__main__":
    sys.exit(cli())
