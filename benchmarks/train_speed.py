"""Training speed and accuracy of the engine against the reference recipe, same data and device, one command.

Trains one run, named as the runner names it (--preset, default cifar10-jpeg: the reference recipe's ConvMixer-256/8
k5 p2 on the CIFAR-10 JPEG copy; --set KEY=VALUE,... overrides its keys; --data-root or $CONVMIXER_CIFAR10_JPEG
says where the data is), for the same number of epochs in several ways:
  engine               the product's own command, `python -m ablations.run`, in a fresh process per seed, timed
                       from process start to exit (bf16 on CUDA, fp32 on CPU)
  engine-compiled      the same with compile=true for --compiled-seeds seeds (2), Inductor's cache fresh for this
                       benchmark: the first seed compiles cold, the later ones load the cache (what the second
                       run of a sweep sees)
  engine-fp16          the engine at the reference's precision (fp16 autocast + GradScaler; CUDA only; opt-in)
  engine-2-per-device  all seeds in one sweep with --jobs-per-device 2 (needs --seeds >= 2): against the engine's
                       seeds one after another, whether two runs side by side on one device gain throughput
  reference            locuslab/convmixer-cifar10's train.py as published: PIL transforms in 2 DataLoader
                       workers, NCHW, fp16 autocast + GradScaler on CUDA, plain AdamW
  reference-workers    the published recipe with --workers (16) DataLoader workers
  reference-tuned      the published recipe with --workers workers, channels_last and fused AdamW (opt-in)
Besides: the bare training step (the engine's train_step on random images already on the device: eager, compiled,
and with CUDA graphs on a GPU), the device's copy rate and the op-level bytes of one step (achieved memory
bandwidth), and a table of the engine's targets with every ratio taken against baselines measured in this run.
--reference-epochs N times the reference variants over their first N epochs and extrapolates their total (said so
in the table). With --out it writes the lot as JSON and Markdown.

    python -m benchmarks.train_speed --data-root PATH/TO/cifar10-jpeg.tar.gz --seeds 2 --out h200.json   # a GPU
    python -m benchmarks.train_speed --data-root PATH --set epochs=2,train_subset=1000,dim=64 --device cpu

torch, the data, the reference recipe and the measurements are imported by the functions that run them, after the
command line is parsed (annotations are strings), so that --help and a bad option answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ablations.config import ConfigError, RunConfig
from ablations.data import DataError, dataset_label
from benchmarks.common import add_recipe_options, check_out, recipe_config, speed_words, write_result
from benchmarks.engine_targets import BASELINE, TARGETS_PRESET, full_recipe, targets, targets_table
from convmixer.arguments import OneLineParser, UsageError, run_cli
from convmixer.counting import closed_form

if TYPE_CHECKING:
    import torch

    from ablations.data.sources import Split

# Dense bf16/fp16 tensor-core peak from the datasheets (SXM parts), matched against the CUDA device name.
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
ENGINE_VARIANTS = ("engine", "engine-compiled", "engine-fp16", "engine-2-per-device")
VARIANTS = (*ENGINE_VARIANTS, "reference", "reference-workers", "reference-tuned")
OPT_IN = ("engine-fp16", "reference-tuned")  # run only when named in --variants
PROG = "python -m benchmarks.train_speed"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add_recipe_options(parser, TARGETS_PRESET)  # the run's keys, in the runner's words; seed= is the first seed
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add("--workers", type=int, default=16, help="DataLoader workers of reference-workers and reference-tuned")
    add("--seeds", type=int, default=1, help="run every variant with this many seeds (seed, seed + 1, ...)")
    add(
        "--compiled-seeds",
        type=int,
        default=2,
        help="seeds of engine-compiled (the first compiles cold, the later ones show the warm cache)",
    )
    add(
        "--variants",
        help=f"comma-separated, of {', '.join(VARIANTS)} (default: all but {', '.join(OPT_IN)}, "
        "that run on the device and with the seeds given)",
    )
    add(
        "--reference-epochs",
        type=int,
        default=0,
        help="time the references over this many epochs and "
        "extrapolate their total (0: train them for all epochs, which also gives their accuracy)",
    )
    add("--bare-steps", type=int, default=50, help="timed steps of the bare training step")
    add("--copy-mb", type=int, default=1024, help="size of the copy that measures the device's copy rate")
    add("--peak-tflops", type=float, default=None, help="device peak for MFU (default: datasheet table)")
    add("--out", type=Path, default=None, help="write results to this .json and a .md beside it")
    return parser.parse_args(argv)


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given is not None or device.type != "cuda":
        return given
    import torch

    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def variants_to_run(text: str | None, device: torch.device, seeds: int) -> list[str]:
    """--variants as a list; by default every variant but the opt-in ones that runs on the device and the seeds."""
    runnable = {"engine-fp16": device.type == "cuda", "engine-2-per-device": seeds >= 2}
    if text is None:
        return [name for name in VARIANTS if name not in OPT_IN and runnable.get(name, True)]
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in VARIANTS or names.count(name) > 1:
            raise ValueError(f"--variants {text!r} is not accepted: expected distinct names of {', '.join(VARIANTS)}")
    if "engine-fp16" in names and not runnable["engine-fp16"]:
        raise ValueError(f"--variants {text!r} is not accepted: engine-fp16 needs CUDA; this device is {device.type}")
    if "engine-2-per-device" in names and not runnable["engine-2-per-device"]:
        raise ValueError(f"--variants {text!r} is not accepted: engine-2-per-device needs --seeds 2 or more")
    return names


def engine_config(name: str, cfg: RunConfig) -> RunConfig:
    overrides = {"engine-compiled": {"compile": True}, "engine-fp16": {"precision": "fp16"}}.get(name, {})
    return dataclasses.replace(cfg, **overrides)


def run_engine(name: str, cfg: RunConfig, seeds: list[int], device: torch.device, work: Path) -> list[dict]:
    """The engine variant's runs, one per seed: {"history", "metrics", "process_s"} (process_s: the seed's own
    process, start to exit; for engine-2-per-device the one sweep process that ran all seeds side by side)."""
    from benchmarks import measure

    env = measure.product_env(work / "inductor")
    if name == "engine-2-per-device":
        runs, wall = measure.product_runs(cfg, seeds, device, 2, work, env)
        return [{**run, "process_s": wall} for run in runs]
    results = []
    for seed in seeds:
        (run,), wall = measure.product_runs(engine_config(name, cfg), [seed], device, 1, work, env)
        results.append({**run, "process_s": wall})
    return results


def run_reference(
    name: str, cfg: RunConfig, splits: tuple[Split, Split], device: torch.device, args: argparse.Namespace
) -> dict:
    from benchmarks.reference_recipe import PUBLISHED, TUNED, train_reference
    from convmixer.runtime import cuda_math_flags

    variant = {
        "reference": PUBLISHED,
        "reference-workers": dataclasses.replace(PUBLISHED, workers=args.workers),
        "reference-tuned": dataclasses.replace(TUNED, workers=args.workers),
    }[name]
    with cuda_math_flags(benchmark=False, tf32=True):  # the original leaves cuDNN's autotuner off (torch's default)
        history = train_reference(cfg, *splits, device, variant, stop_after=args.reference_epochs or None)
    return {"history": history, "metrics": None, "process_s": None}


def images_per_s(records: list[dict]) -> float:
    return sum(r["train_time_s"] * r["train_images_per_s"] for r in records) / sum(r["train_time_s"] for r in records)


def total_time(history: list[dict], epochs: int) -> float:
    """The time of all `epochs` epochs (train + test): measured, or, for a run stopped early, its first epoch plus
    the median of its later ones for each epoch it did not run."""
    times = [r["epoch_time_s"] for r in history]
    if len(times) >= epochs:
        return sum(times)
    return times[0] + (epochs - 1) * statistics.median(times[1:] or times)


def summarise(runs: list[dict], epochs: int, train_flops_per_image: float, peak: float | None) -> dict:
    """One variant over its seeds: times and rates averaged, "steady" over the epochs after the first (warm-up,
    compilation), accuracies listed per seed (only for runs that trained every epoch)."""
    histories = [run["history"] for run in runs]
    steady_rate = statistics.mean(images_per_s(history[1:] or history) for history in histories)
    complete = all(len(history) >= epochs for history in histories)
    processes = [run["process_s"] for run in runs if run["process_s"] is not None]
    # The engine warms up each batch shape before epoch 1 (set-up, not an epoch); the references do not.
    warm_ups = [(run["metrics"] or {}).get("warm_up_s", 0.0) for run in runs]
    return {
        "seeds": len(runs),
        "epochs": epochs,
        "epochs_run": len(histories[0]),
        "total_epoch_time_s": statistics.mean(total_time(history, epochs) for history in histories),
        "extrapolated": not complete,
        "first_epoch_time_s": statistics.mean(history[0]["epoch_time_s"] for history in histories),
        "first_epoch_time_per_seed_s": [history[0]["epoch_time_s"] for history in histories],
        "warm_up_time_per_seed_s": warm_ups,
        "steady_epoch_time_s": statistics.median(r["epoch_time_s"] for h in histories for r in (h[1:] or h)),
        "process_time_s": statistics.mean(processes) if processes else None,
        "process_time_per_seed_s": processes or None,
        "train_images_per_s": statistics.mean(images_per_s(history) for history in histories),
        "steady_train_images_per_s": steady_rate,
        "final_test_acc": [history[-1]["test_acc"] for history in histories] if complete else None,
        "best_test_acc": [max(r["test_acc"] for r in history) for history in histories] if complete else None,
        "mfu": steady_rate * train_flops_per_image / (peak * 1e12) if peak else None,
    }


def accuracy(values: list[float] | None) -> str:
    if values is None:
        return "n/a (not every epoch ran)"
    if len(values) == 1:
        return f"{values[0]:.4f} (one seed)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} ({len(values)} seeds)"


def seconds(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


ROWS: tuple[tuple[str, str, Callable], ...] = (  # (label, summary key, format)
    ("epochs run (of the recipe's)", "epochs_run", str),
    ("time for all epochs, s (train + test)", "total_epoch_time_s", seconds),
    ("  extrapolated from the epochs run", "extrapolated", lambda v: "yes" if v else "no"),
    ("process start to exit, s (mean over seeds)", "process_time_s", seconds),
    ("epoch 1, s", "first_epoch_time_s", lambda v: seconds(v, 2)),
    ("steady epoch (median after epoch 1), s", "steady_epoch_time_s", lambda v: seconds(v, 2)),
    ("train images/s, all epochs", "train_images_per_s", "{:.0f}".format),
    ("train images/s, after epoch 1", "steady_train_images_per_s", "{:.0f}".format),
    ("test acc after the last epoch", "final_test_acc", accuracy),
    ("best test acc", "best_test_acc", accuracy),
    ("model FLOP utilisation, after epoch 1", "mfu", lambda v: "n/a" if v is None else f"{v:.2%}"),
)


def markdown_table(summaries: dict[str, dict]) -> str:
    names = list(summaries)
    lines = ["| " + " | ".join(["", *names]) + " |", "|" + "---|" * (len(names) + 1)]
    for label, key, fmt in ROWS:
        lines.append("| " + " | ".join([label, *(fmt(summaries[name][key]) for name in names)]) + " |")
    if BASELINE in summaries:
        base = summaries[BASELINE]["total_epoch_time_s"]
        ratios = [speed_words(base / summaries[name]["total_epoch_time_s"]) for name in names]
        lines.append("| " + " | ".join([f"all epochs' time against {BASELINE}", *ratios]) + " |")
    return "\n".join(lines)


def epoch_table(histories: dict[str, list[dict]]) -> str:
    """Epoch by epoch, for the first seed of each variant."""
    names = list(histories)
    header = ["epoch"] + [f"{name} {column}" for name in names for column in ("s", "img/s", "test acc")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i in range(max(len(h) for h in histories.values())):
        cells = [str(i + 1)]
        for name in names:
            if i >= len(histories[name]):
                cells += [""] * 3
                continue
            r = histories[name][i]
            cells += [f"{r['epoch_time_s']:.2f}", f"{r['train_images_per_s']:.0f}", f"{r['test_acc']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bare_and_bandwidth(
    cfg: RunConfig,
    splits: tuple[Split, Split],
    device: torch.device,
    variants: list[str],
    args: argparse.Namespace,
    work: Path,
) -> dict:
    """The bare step in each mode the engine variants call for, and the achieved memory bandwidth of the eager
    step against the device's copy rate."""
    from benchmarks import measure

    modes = ["eager"] + (["compiled"] if "engine-compiled" in variants else [])
    modes += ["cudagraphs"] if "engine-compiled" in variants and device.type == "cuda" else []
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor")  # warm from the engine-compiled runs
    classes, size, train_images = len(splits[0].classes), splits[0].images.shape[-1], len(splits[0].labels)
    bare = {}
    for mode in modes:
        step = measure.bare_step(cfg, size, classes, device, mode, args.bare_steps)
        bare[mode] = {**step, "epoch_time_s": train_images / step["images_per_s"]}
    step_bytes = measure.step_bytes(cfg, size, classes, device)
    copy = measure.copy_rate(device, args.copy_mb)
    achieved = step_bytes * bare["eager"]["images_per_s"] / cfg.batch_size
    return {"bare": bare, "step_bytes": step_bytes, "copy_bytes_per_s": copy, "achieved_bytes_per_s": achieved}


def extra_lines(extra: dict) -> list[str]:
    bare = "; ".join(
        f"{mode} {step['images_per_s']:.0f} img/s ({step['epoch_time_s']:.2f} s per epoch's images)"
        for mode, step in extra["bare"].items()
    )
    return [
        f"bare training step ({next(iter(extra['bare'].values()))['steps']} steps, random images on the device): "
        f"{bare}",
        f"memory: one eager step moves {extra['step_bytes'] / 1e9:.2f} GB at op level (inputs + outputs of every "
        f"non-view aten op) -> {extra['achieved_bytes_per_s'] / 1e9:.1f} GB/s achieved; device copy rate (read + "
        f"write) {extra['copy_bytes_per_s'] / 1e9:.1f} GB/s",
    ]


def describe(cfg: RunConfig, device: torch.device, args: argparse.Namespace, peak: float | None) -> list[str]:
    import torch

    from benchmarks.reference_recipe import PUBLISHED
    from convmixer.runtime import autocast_dtype

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    engine_precision = autocast_dtype(cfg.precision, device) or "fp32"
    reference_precision = "fp16 autocast + GradScaler" if device.type == "cuda" else "fp32 (no CUDA)"
    data = dataset_label(cfg.dataset, cfg.data_root)
    return [
        f"{cfg.model_name} k{cfg.kernel_size} p{cfg.patch_size} on {data}",
        f"device {name}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads",
        f"engine: `python -m ablations.run` per seed, precision {engine_precision}, channels_last "
        f"{cfg.channels_last}, fused AdamW on CUDA, cuDNN autotuner on; compiled: compile=true with a fresh Inductor "
        "cache (seed 1 cold, later seeds warm); engine-fp16: fp16 + GradScaler; on a CPU each product run has one "
        "thread (the sweep's rule) and the references all threads",
        f"reference: {reference_precision}, {PUBLISHED.workers} workers, NCHW, AdamW (foreach); reference-workers: "
        f"the same with {args.workers} workers; reference-tuned: {args.workers} workers, channels_last, fused AdamW "
        "on CUDA; all with cuDNN's autotuner off (as published)",
        f"recipe: batch {cfg.batch_size}, onecycle lr {cfg.lr}, wd {cfg.weight_decay}, RandAugment n{cfg.randaug_n} "
        f"m{cfg.randaug_m}, scale {cfg.scale}, jitter {cfg.jitter}, reprob {cfg.reprob}, clip {cfg.clip_norm or 'off'}",
        f"MFU: 3 x forward FLOPs x images/s / {f'{peak} TFLOP/s peak' if peak else 'peak (n/a: unknown device)'}",
        "variants run one after another in this order, each seed in turn; speed-ups compare all epochs' time "
        "(train + test); normalisation constants and augmentation maths differ (engine: batched float ops on the "
        "device; reference: PIL on uint8)",
    ]


def check_args(args: argparse.Namespace) -> tuple[RunConfig, torch.device, list[str]]:
    """The config, device and variants of the command line, or ValueError naming the bad value."""
    from convmixer.runtime import autocast_dtype, parse_device  # torch: once the options are parsed

    cfg = recipe_config(args)
    device = parse_device(args.device)
    autocast_dtype(cfg.precision, device)
    checks = (
        ("--workers", args.workers, 0),
        ("--seeds", args.seeds, 1),
        ("--compiled-seeds", args.compiled_seeds, 1),
        ("--reference-epochs", args.reference_epochs, 0),
        ("--bare-steps", args.bare_steps, 1),
        ("--copy-mb", args.copy_mb, 1),
    )
    for flag, value, least in checks:
        if value < least:
            raise ValueError(f"{flag} {value} is not accepted: expected an integer >= {least}")
    variants = variants_to_run(args.variants, device, args.seeds)
    if args.peak_tflops is not None and not (math.isfinite(args.peak_tflops) and args.peak_tflops > 0):
        raise ValueError(f"--peak-tflops {args.peak_tflops} is not accepted: expected a number > 0")
    check_out(args.out)
    return cfg, device, variants


def run_variant(
    name: str, cfg: RunConfig, splits: tuple[Split, Split], device: torch.device, args: argparse.Namespace, work: Path
) -> list[dict]:
    """One variant's runs, one per seed (engine-compiled: --compiled-seeds of them)."""
    if name == "engine-compiled":
        return run_engine(name, cfg, list(range(cfg.seed, cfg.seed + args.compiled_seeds)), device, work)
    seeds = list(range(cfg.seed, cfg.seed + args.seeds))
    if name in ENGINE_VARIANTS:
        return run_engine(name, cfg, seeds, device, work)
    return [run_reference(name, dataclasses.replace(cfg, seed=s), splits, device, args) for s in seeds]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg, device, variants = check_args(args)
    except ValueError as error:  # ConfigError is a ValueError
        raise UsageError(str(error)) from None

    from ablations.data.sources import load_splits

    peak = peak_tflops(device, args.peak_tflops)
    loaded = load_splits(cfg, resident_bytes=sys.maxsize)  # every variant trains from the same images
    cfg.check_image_size(loaded.image_size, f" in data_root={cfg.data_root!r}")
    splits, train_images = (loaded.train, loaded.test), len(loaded.train.labels)
    counts = closed_form(cfg.model_config(len(splits[0].classes), 3), splits[0].images.shape[-1])
    header = describe(cfg, device, args, peak)
    sizes = f"{train_images} train / {len(splits[1].labels)} test images, {cfg.epochs} epochs, "
    header.insert(1, sizes + f"{counts.params / 1e6:.3f} M params, {counts.flops / 1e9:.3f} GFLOPs forward per image")
    print("\n".join(header), flush=True)

    def summaries_of(runs: dict[str, list[dict]]) -> dict[str, dict]:
        return {name: summarise(seeds, cfg.epochs, 3 * counts.flops, peak) for name, seeds in runs.items()}

    runs = {}
    with tempfile.TemporaryDirectory(prefix="train-speed-") as folder:
        for name in variants:
            runs[name] = run_variant(name, cfg, splits, device, args, Path(folder))
            so_far = markdown_table(summaries_of(runs))
            print(f"{name} done:\n{so_far}", flush=True)
            if args.out is not None:  # a run cut off at its time limit (a GPU lent for minutes) keeps these
                partial = {"header": header, "config": cfg.to_dict(), "runs": runs, "complete": False}
                write_result(args.out, argv, partial, "\n".join(["", *header, "", so_far, ""]), quiet=True)
        extra = bare_and_bandwidth(cfg, splits, device, variants, args, Path(folder))
    summaries = summaries_of(runs)
    goals = targets(summaries, extra)
    first_seed = {name: seeds[0]["history"] for name, seeds in runs.items()}
    tables = [epoch_table(first_seed), markdown_table(summaries), targets_table(goals, full_recipe(cfg, train_images))]
    report = "\n" + "\n\n".join(["\n".join(header + extra_lines(extra)), *tables]) + "\n"
    print(report)
    if args.out is not None:
        result = {"header": header, "config": cfg.to_dict(), "seeds": args.seeds, "counts": counts.to_dict()}
        result |= {"peak_tflops": peak, "runs": runs, "summaries": summaries, **extra, "targets": goals}
        write_result(args.out, argv, {**result, "complete": True}, report)
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG, (DataError, ConfigError))


if __name__ == "__main__":
    sys.exit(cli())
