"""`python -m ablations.train`: one run, on one process or on several under torchrun, into a result folder as a
sweep of that one run would write it (same run id, files, lock and summary.csv).

    python -m ablations.train --preset smoke --set kernel_size=9                 # one process
    torchrun --nproc-per-node 2 -m ablations.train --preset smoke --set kernel_size=9,hflip=false
    torchrun --nproc-per-node 8 -m ablations.train --preset imagenet --data-root /data/imagenet

Under torchrun every process parses the same command line and takes its place from torchrun's environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; docs/engine.md): this entry point alone reads them, and
hands the engine its `Ranks`. Rank 0 does what `python -m
ablations.run` does (checks, the folder's lock, the design and data records, summary.csv) and trains with the
others, which only train. batch_size is the global batch. A rerun resumes from the last epoch's checkpoint.
"""

import argparse
import contextlib
import io
import os
import signal
import sys
from pathlib import Path

from ablations.atomic import WriteError
from ablations.config import ConfigError
from ablations.data import DataError
from ablations.store import Store, StoreError
from ablations.sweep import plan as planning
from ablations.sweep.execute import check_processes, follow_run, torchrun_rank, warn_oversubscribed
from ablations.sweep.grid import build_sweep, sweep_configs
from ablations.sweep.inprocess import InProcessLauncher
from ablations.sweep.plan import run_plan, runs_to_train
from ablations.sweep.presets import DEFAULT_PRESET, PRESETS
from convmixer.arguments import OneLineParser, folder_path, run_cli

PROG = "python -m ablations.train"
BAD_INPUT = (ConfigError, DataError, StoreError, WriteError)
PEERS_WAITING = 3  # rank 0's exit when its folder or plan refused the run after its peers set off to train
DEFAULT_ROOT = Path("sweeps")  # as python -m ablations.run: sweeps/<preset> unless --out says otherwise


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, help=f"the recipe the keys override (default {DEFAULT_PRESET})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE,...", help="the run's keys")
    parser.add_argument("--data-root", metavar="PATH", help="where the run's data is (a folder or archive)")
    parser.add_argument("--out", type=folder_path, metavar="DIR", help="result folder (default: sweeps/<preset>)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (under torchrun: cuda:LOCAL_RANK)")
    parser.add_argument("--retry-failed", action="store_true", help="rerun the run if it failed")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoint.pt once the run is done")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preset = args.preset or DEFAULT_PRESET
    sweep = build_sweep(PRESETS[preset].values, args.set, [], 1)
    (cfg,) = sweep_configs(preset, sweep, args.data_root)
    from ablations.engine.distributed import Ranks  # torch: once the command line is parsed
    from ablations.engine.train import check_cuda_graphs
    from convmixer.runtime import parse_device

    try:  # named, not "auto", in the run's log and progress; a bad name is refused before anything is written
        parsed = parse_device(args.device)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_cuda_graphs(cfg, parsed)
    device = str(parsed)
    ranks = Ranks.from_env()  # torchrun's variables, read here only
    check_processes(ranks.world_size, [cfg])
    warn_oversubscribed(int(os.environ.get("LOCAL_WORLD_SIZE", 1)), device)  # torchrun's processes on this machine
    store = Store(args.out if args.out is not None else DEFAULT_ROOT / preset)
    if not ranks.main:
        if runs_to_train([cfg], store, args.retry_failed):  # rank 0 decides the same from the same files
            with contextlib.suppress(Exception):  # follow_run left it for rank 0's failure record and line
                follow_run(cfg, store.run_dir(cfg), device, ranks)
        return 0
    try:
        store.check_folder()
        plan = planning.plan([cfg], store, args.retry_failed, keep_checkpoints=args.keep_checkpoints)
    except BAD_INPUT as error:
        if ranks.world_size == 1:
            raise
        print(f"{PROG}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return PEERS_WAITING
    store.root.mkdir(parents=True, exist_ok=True)
    if ranks.world_size > 1 and torchrun_rank(os.environ) is not None:
        signal.signal(signal.SIGTERM, stop_for_torchrun)
    launcher = InProcessLauncher(store, device, ranks)
    processes = f" on {ranks.world_size} processes" if ranks.world_size > 1 else ""
    announce = f"run {cfg.run_id()} of preset {preset}{processes}: {len(plan.todo)} to train; results in {store.root}"
    ended = run_plan(plan, launcher, sweep.design(store.root.resolve().name, preset), None, lambda: print(announce))
    print(f"{cfg.run_id()}: {ended.states[cfg.run_id()].describe(cfg.epochs)}; summary: {store.summary}")
    return ended.exit_code


class StoppedByTorchrun(Exception):
    """Rank 0's SIGTERM from torchrun, which stops every rank once one has died (a SIGKILLed peer leaves no cause
    of its own). Transient, as a killed rank is under the other launchers: a plain rerun resumes the run."""

    transient = True


def stop_for_torchrun(signum: int, frame: object) -> None:
    """Rank 0's SIGTERM handler under torchrun: the run fails with a record (metrics.json, transient) rather than
    the process vanishing without one. When a failure is being recorded already (gloo saw the peer go first), the
    signal is left alone: that record names what happened, and torchrun waits 30 s before its SIGKILL."""
    if sys.exc_info()[0] is not None:
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the record is written while torchrun waits
    raise StoppedByTorchrun("stopped by torchrun (SIGTERM), which stops every rank once one has died")


def cli(argv: list[str] | None = None) -> int:
    """main's exit code, bad input in one line (exit 2). Under torchrun the line is rank 0's alone, and every rank
    exits 0 once it is printed: torchrun answers any non-zero exit with its own multi-line ChildFailedError
    traceback, so the failure is told by the line and the run's record (its metrics.json, summary.csv), not by
    torchrun's exit status. Only rank 0 stopped alone, before its peers could join it (PEERS_WAITING), exits
    non-zero: torchrun then stops the peers, which would otherwise wait for it until the collective timeout."""
    rank = torchrun_rank(os.environ)
    try:
        with contextlib.redirect_stderr(io.StringIO()) if rank else contextlib.nullcontext():
            code = run_cli(main, argv, PROG, BAD_INPUT)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last epoch")
        return 130
    return code if rank is None or code == PEERS_WAITING else 0


if __name__ == "__main__":
    sys.exit(cli())
