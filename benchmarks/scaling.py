"""Scaling of one run over several processes (DDP): training images/s on 1, 2, ... N processes, and the efficiency
against the 1-process run measured in the same invocation.

Each point is the product's own command, `python -m ablations.run --procs-per-run N`, in a fresh process and a
fresh result folder, one run at a time; its images/s is metrics.json's train_images_per_s (all ranks' images over
the training time, evaluation excluded). Efficiency is images/s(N) / (N x images/s(1)). On the CPU every process
trains single-threaded (the runner's rule), so N processes need N free cores to scale; the load average before
and after is recorded with the result.

    python -m benchmarks.scaling --procs 1,2 --set epochs=2 --out results/benchmarks/scaling-cpu.json
    python -m benchmarks.scaling --device cuda --procs 1,2,4,8 --preset cifar10-jpeg --data-root PATH --out x.json
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ablations.config import ConfigError
from ablations.data import DataError
from benchmarks.common import add_recipe_options, check_out, recipe_config, write_result
from convmixer.arguments import OneLineParser, UsageError, run_cli

PROG = "python -m benchmarks.scaling"


def parse_procs(text: str) -> list[int]:
    try:
        procs = [int(word) for word in text.split(",")]
    except ValueError:
        procs = []
    if not procs or min(procs) < 1 or procs[0] != 1:
        raise UsageError(f"--procs {text!r} is not accepted: expected process counts from 1, e.g. 1,2,4")
    return procs


def images_per_s(args: argparse.Namespace, procs: int, folder: Path) -> float:
    """Train the recipe once on `procs` processes with the sweep command; its metrics.json's train images/s."""
    out = folder / f"procs-{procs}"
    command = [sys.executable, "-m", "ablations.run", "--preset", args.preset, *(f"--set={s}" for s in args.set)]
    command += ["--devices", args.device, "--jobs-per-device", "1", "--procs-per-run", str(procs), "--out", str(out)]
    command += ["--data-root", args.data_root] if args.data_root else []
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    (metrics,) = [json.loads(path.read_text()) for path in out.glob("runs/*/metrics.json")]
    return metrics["train_images_per_s"]


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_options(parser, "smoke")
    parser.add_argument("--procs", default="1,2", help="process counts, from 1 (default 1,2)")
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    parser.add_argument("--out", type=Path, metavar="FILE.json", help="write the result as JSON and Markdown")
    args = parser.parse_args(argv)
    procs = parse_procs(args.procs)
    check_out(args.out)
    cfg = recipe_config(args)
    from convmixer.runtime import hardware_name, resolve_device  # torch: once the command line is checked

    hardware = hardware_name(resolve_device(args.device))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        rates = {n: images_per_s(args, n, Path(folder)) for n in procs}
    rows = [{"processes": n, "images_per_s": rate, "efficiency": rate / (n * rates[1])} for n, rate in rates.items()]
    load = [load_before, os.getloadavg()[0]]
    table = ["| processes | train images/s | speed-up | efficiency |", "|---|---|---|---|"]
    table += [
        f"| {r['processes']} | {r['images_per_s']:.0f} | {r['images_per_s'] / rates[1]:.2f}x | {r['efficiency']:.0%} |"
        for r in rows
    ]
    report = (
        f"\n{cfg.model_name} k{cfg.kernel_size} p{cfg.patch_size}, {cfg.dataset}, global batch {cfg.batch_size}, "
        f"{cfg.epochs} epochs, on {hardware} (load average {load[0]:.1f} before, {load[1]:.1f} after)\n\n"
        + "\n".join(table)
        + "\n"
    )
    print(report)
    if args.out is not None:
        result = {
            "hardware": hardware,
            "device": args.device,
            "config": cfg.recorded().to_dict(),
            "rows": rows,
            "load_average": load,
        }
        write_result(args.out, argv, result, report)
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG, (DataError, ConfigError, ValueError))


if __name__ == "__main__":
    sys.exit(cli())
