"""Start-up of a run's data: how long `build_data` takes before the first epoch can begin, after the imports.

Measures, in one process, the data of a run named as the runner names it (--preset, default cifar10-jpeg: the
CIFAR-10 JPEG copy, all 60,000 images; --set KEY=VALUE,...; --data-root or $CONVMIXER_CIFAR10_JPEG):
  serial      a cold start (empty decoded-split cache) decoding in this process only: the reference
  cold        a cold start decoding on every usable core (forked workers), what a run does
  warm        a second process's start: the decoded splits come from the cache
  kept        the next run in the same worker process: the dataset is still on its device
and prints each one's wall time and CPU time (this process and its workers: on a busy machine the CPU time shows
what the wall time cannot, whether the workers added work), with the ratio serial / cold. Every cold start gets
its own empty cache folder (a temporary one, removed afterwards), so nothing of the user's cache is read or
written.

    python -m benchmarks.startup --data-root PATH/TO/cifar10-jpeg.tar.gz    # CPU; --device cuda on a GPU machine
"""

import argparse
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ablations.config import ConfigError
from ablations.data import DataError
from benchmarks.common import add_recipe_options, recipe_config, speed_words
from convmixer.arguments import OneLineParser, run_cli

if TYPE_CHECKING:
    import torch

    from ablations.data import loaders

# torch and the data's loaders are imported once the command line is parsed: --help answers without them.

PROG = "python -m benchmarks.startup"


@contextlib.contextmanager
def serial_decoding() -> Iterator[None]:
    """Decode in this process only, as the toolkit did before it forked workers."""
    from ablations.data import tree

    forked = tree.fork_workers
    tree.fork_workers = lambda count, cores: 0
    try:
        yield
    finally:
        tree.fork_workers = forked


@contextlib.contextmanager
def use_cache(folder: Path) -> Iterator[None]:
    """Point the decoded-split cache ($CONVMIXER_CACHE) at `folder` for the duration."""
    saved = os.environ.get("CONVMIXER_CACHE")
    os.environ["CONVMIXER_CACHE"] = str(folder)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["CONVMIXER_CACHE"]
        else:
            os.environ["CONVMIXER_CACHE"] = saved


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the decode workers), user and system."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(start: Callable[[], "loaders.Data"], device: "torch.device") -> tuple[float, float, "loaders.Data"]:
    """(wall seconds, CPU seconds, the data) of one start-up."""
    from convmixer.runtime import synchronize

    began, cpu = time.perf_counter(), cpu_seconds()
    data = start()
    synchronize(device)
    return time.perf_counter() - began, cpu_seconds() - cpu, data


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_options(parser, "cifar10-jpeg")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto (default cpu)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    from ablations.data import decode, loaders, sources
    from convmixer.runtime import cpu_name, device_name, resolve_device, usable_cores

    device = resolve_device(args.device)
    cfg = recipe_config(args)
    times, cpu = {}, {}

    def start() -> "loaders.Data":
        return loaders.build_data(cfg, device)

    with tempfile.TemporaryDirectory(prefix="convmixer-startup-") as scratch:
        for name, decoding in (("serial", serial_decoding), ("cold", contextlib.nullcontext)):
            with use_cache(Path(scratch) / name), decoding():
                loaders._kept.clear()  # a new process holds no data
                sources.forget_splits()
                times[name], cpu[name], data = timed(start, device)
        with use_cache(Path(scratch) / "cold"):
            loaders._kept.clear()
            sources.forget_splits()
            times["warm"], cpu["warm"], data = timed(start, device)
            times["kept"], cpu["kept"], data = timed(start, device)
    images = data.train.num_samples + data.test.num_samples
    figures = {
        "data": cfg.data_root,
        "images": images,
        "device": device_name(device),
        "cpu": cpu_name(),
        "cores": usable_cores(),
        "decode_workers": decode.fork_workers(data.train.num_samples, usable_cores()),
        **{f"{name}_s": round(seconds, 3) for name, seconds in times.items()},
        **{f"{name}_cpu_s": round(seconds, 3) for name, seconds in cpu.items()},
        "speedup_cold_vs_serial": round(times["serial"] / times["cold"], 2),
    }
    print(f"start-up of {images:,} images of {Path(cfg.data_root).name} on {figures['device']}, {figures['cpu']}")
    print("  start    wall s   CPU s (this process and its workers)")
    for name in times:
        print(f"  {name:<7} {times[name]:7.3f} {cpu[name]:7.3f}")
    speed = speed_words(times["serial"] / times["cold"])
    print(f"  cold start {speed} than serial ({figures['decode_workers']} workers)")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG, (DataError, ConfigError))


if __name__ == "__main__":
    raise SystemExit(cli())
