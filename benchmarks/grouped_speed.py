"""Training step throughput of N seeds as one grouped model (benchmarks/grouped_train.py) against the same N runs'
steps one after another (the engine's Trainer.train_step, one model after the other), for N = 1, 2, 4, 8, at the GPU
study's shape (studies/cifar10-gpu.toml's baseline: ConvMixer-256/8 k5 p2, batch 512) and the smoke preset's
(ConvMixer-64/1 k5 p4, batch 64), on 32 px images and 10 classes.

Each step gets random images already on the device, as benchmarks.measure's bare step: the model, loss, backward,
clip and AdamW, no augmentation or evaluation. The two ways alternate round by round (a round: the N solo steps, or
one grouped step), after warm-up rounds, so a busy spell of a shared machine hits both alike; each row's figure is
the median round, as images per second (N x batch / round). The rows share --time-budget seconds: each row times
rounds until its share is spent, at least two of each. Issue 31's rule: if the grouped step beats the runs one
after another by 1.5x or more at the study's shape on a GPU, the runner trains seeds together; else it is left.

    python -m benchmarks.grouped_speed --device cuda --time-budget 60 --out "$OUT/grouped.json"
    python -m benchmarks.grouped_speed --device cpu --shapes smoke --out results/benchmarks/grouped-cpu-smoke.json
"""

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ablations.config import ConfigError, RunConfig
from ablations.engine.setup import Workload, fastest_setup
from ablations.engine.train import Trainer, run_dtype
from ablations.sweep.grid import build_sweep
from ablations.sweep.presets import PRESETS
from ablations.sweep.study import read_study
from benchmarks.common import check_out, speed_words, write_result
from benchmarks.grouped_train import check_groupable, grouped_trainer
from benchmarks.measure import random_batch
from convmixer.arguments import OneLineParser, UsageError, run_cli
from convmixer.runtime import cuda_math_flags, hardware_name, resolve_device, step_seconds, toolkit_commit

PROG = "python -m benchmarks.grouped_speed"
STUDY = Path(__file__).resolve().parents[1] / "studies" / "cifar10-gpu.toml"
SHAPES = ("study", "smoke")
IMAGE_SIZE, CLASSES, IN_CHANS = 32, 10, 3  # CIFAR-10's, and the synthetic set's
BUILD_IN_RATIO = 1.5  # issue 31: the grouped step at the study's shape on a GPU, against the runs one after another
WARM_UP_ROUNDS = {"cuda": 2}  # cuDNN's autotuner and lazy initialisation; a CPU has nothing to tune: 1
MIN_ROUNDS = 2


def shape_config(shape: str, sets: list[str]) -> RunConfig:
    """The run of `shape` (the study's baseline, seed 0, or the smoke preset's run) with --set's keys."""
    values = read_study(STUDY).sweep.fixed if shape == "study" else PRESETS["smoke"].values
    (cfg,) = build_sweep(values, sets, [], 1).configs()
    return cfg


def solo_trainers(cfgs: list[RunConfig], device: torch.device) -> list[Trainer]:
    """The engine's Trainer of each run, its model initialised and laid out as train_run does it."""
    cfg, dtype = cfgs[0], run_dtype(cfgs[0].precision, device)
    work = Workload(device, dtype, cfg.dim, cfg.kernel_size, IMAGE_SIZE // cfg.patch_size, cfg.batch_size)
    setup = fastest_setup(cfg.channels_last, cfg.depthwise_impl, work)
    trainers = []
    for run in cfgs:
        torch.manual_seed(run.seed)
        trainers.append(Trainer(run, run.model_config(CLASSES, IN_CHANS).build(), device, dtype, setup))
    return trainers


def round_steps(cfgs: list[RunConfig], device: torch.device) -> dict[str, Callable[[], None]]:
    """One round of each way: every run's solo step one after another, and the one grouped step."""
    solos = solo_trainers(cfgs, device)
    grouped = grouped_trainer(cfgs, CLASSES, IN_CHANS, IMAGE_SIZE, device)
    batches = [random_batch(cfg, IMAGE_SIZE, CLASSES, device) for cfg in cfgs]
    images, targets = torch.cat([x for x, _ in batches], 1), torch.stack([y for _, y in batches], -1)
    lr = cfgs[0].lr

    def sequential() -> None:
        for trainer, (x, y) in zip(solos, batches, strict=True):
            trainer.train_step(x, y, lr)

    return {"sequential": sequential, "grouped": lambda: grouped.train_step(images, targets, lr)}


def measure_row(cfg: RunConfig, groups: int, device: torch.device, budget_s: float) -> dict:
    """Both ways for `groups` seeds of cfg, alternating rounds until `budget_s` has passed (warm-up included)."""
    started = time.perf_counter()
    cfgs = [dataclasses.replace(cfg, seed=seed) for seed in range(groups)]
    steps = round_steps(cfgs, device)
    for _ in range(WARM_UP_ROUNDS.get(device.type, 1)):
        for step in steps.values():
            step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    while len(seconds["grouped"]) < MIN_ROUNDS or time.perf_counter() - started < budget_s:
        for name, step in steps.items():
            seconds[name] += step_seconds(step, device, warmup=0, repeats=1)
    images = groups * cfg.batch_size
    row = {f"{name}_images_per_s": images / statistics.median(times) for name, times in seconds.items()}
    return {
        "groups": groups,
        "rounds": len(seconds["grouped"]),
        **row,
        "ratio": row["grouped_images_per_s"] / row["sequential_images_per_s"],
    }


def measure_rows(
    shapes: dict[str, RunConfig],
    groups: list[int],
    device: torch.device,
    budget_s: float,
    on_row: Callable[[list[dict]], None],
) -> list[dict]:
    """Every (shape, N) row; a row that runs out of device memory says so and the others still run."""
    rows, plan = [], [(shape, n) for shape in shapes for n in groups]
    deadline = time.perf_counter() + budget_s
    for index, (shape, n) in enumerate(plan):
        share = max(deadline - time.perf_counter(), 0.0) / (len(plan) - index)
        try:
            row = measure_row(shapes[shape], n, device, share)
        except torch.OutOfMemoryError:
            row = {"groups": n, "error": "out of memory"}
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the next row's models start from an empty cache, not this row's leftovers
        rows.append({"shape": shape, **row})
        print(table_line(rows[-1], shapes[shape]), flush=True)
        on_row(rows)
    return rows


TABLE_HEAD = (
    "| shape | N | batch per run | sequential img/s | grouped img/s | grouped vs sequential | rounds |\n"
    "|---|---|---|---|---|---|---|"
)


def table_line(row: dict, cfg: RunConfig) -> str:
    shape = f"{row['shape']}: {cfg.dim}/{cfg.depth} k{cfg.kernel_size} p{cfg.patch_size}"
    if "error" in row:
        return f"| {shape} | {row['groups']} | {cfg.batch_size} | {row['error']} | | | |"
    return (
        f"| {shape} | {row['groups']} | {cfg.batch_size} | {row['sequential_images_per_s']:.0f} | "
        f"{row['grouped_images_per_s']:.0f} | {speed_words(row['ratio'])} | {row['rounds']} |"
    )


def verdict(rows: list[dict], device: torch.device) -> str:
    """Issue 31's rule applied to the study's rows: only a GPU decides."""
    study = [row for row in rows if row["shape"] == "study" and "ratio" in row and row["groups"] > 1]
    if device.type != "cuda":
        return (
            f"Measured on a {device.type.upper()}: the rule (>= {BUILD_IN_RATIO}x at the study's shape) is for a GPU."
        )
    if not study:
        return "No study row measured: no decision."
    best = max(study, key=lambda row: row["ratio"])
    won = best["ratio"] >= BUILD_IN_RATIO
    return f"Best at the study's shape: N={best['groups']}, {best['ratio']:.2f}x the runs one after another: " + (
        f"at least {BUILD_IN_RATIO}x, build it into the runner." if won else f"under {BUILD_IN_RATIO}x: leave it."
    )


def parse_groups(text: str) -> list[int]:
    try:
        groups = [int(word) for word in text.split(",")]
    except ValueError:
        groups = []
    if not groups or min(groups) < 1:
        raise UsageError(f"--groups {text!r} is not accepted: expected model counts >= 1, e.g. 1,2,4,8")
    return groups


def parse_shapes(text: str) -> list[str]:
    shapes = text.split(",")
    if not shapes or any(shape not in SHAPES for shape in shapes):
        raise UsageError(f"--shapes {text!r} is not accepted: expected one or more of {', '.join(SHAPES)}")
    return shapes


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda where there is one)")
    parser.add_argument("--groups", default="1,2,4,8", help="model counts N (default 1,2,4,8)")
    parser.add_argument("--shapes", default="study,smoke", help="study, smoke or both (default study,smoke)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE,...", help="override both shapes' keys"
    )
    parser.add_argument(
        "--time-budget", type=float, default=60.0, metavar="S", help="seconds for all rows (default 60)"
    )
    parser.add_argument("--out", type=Path, metavar="FILE.json", help="write the result as JSON and Markdown")
    args = parser.parse_args(argv)
    groups, shape_names = parse_groups(args.groups), parse_shapes(args.shapes)
    check_out(args.out)
    shapes = {shape: shape_config(shape, args.set) for shape in shape_names}
    for cfg in shapes.values():
        check_groupable([cfg])  # a key the prototype does not do fails here, before anything is timed
    device = resolve_device(args.device)
    hardware, load_before = hardware_name(device), os.getloadavg()[0]
    threads = f", {torch.get_num_threads()} torch threads" if device.type == "cpu" else ""
    header = f"\nGrouped seeds against runs one after another, training step, on {hardware} ({device.type}{threads})\n"
    print(header + "\n" + TABLE_HEAD, flush=True)

    def write(rows: list[dict], complete: bool = False) -> None:
        if args.out is None:
            return
        lines = "\n".join(table_line(row, shapes[row["shape"]]) for row in rows)
        load = [load_before, os.getloadavg()[0]]
        summary = f"{verdict(rows, device)} Load average {load[0]:.1f} before, {load[1]:.1f} after."
        report = f"{header}\n{TABLE_HEAD}\n{lines}\n\n{summary}\n"
        result = {
            "hardware": hardware,
            "device": device.type,
            "torch_version": torch.__version__,
            "toolkit_commit": toolkit_commit(),
            "complete": complete,
            "load_average": load,
            "configs": {name: cfg.to_dict() for name, cfg in shapes.items()},
            "rows": rows,
        }
        write_result(args.out, argv, result, report, quiet=not complete)

    with cuda_math_flags(benchmark=device.type == "cuda", tf32=shapes[shape_names[0]].tf32):
        rows = measure_rows(shapes, groups, device, args.time_budget, write)
    print("\n" + verdict(rows, device))
    write(rows, complete=True)
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG, (ConfigError, ValueError))


if __name__ == "__main__":
    sys.exit(cli())
