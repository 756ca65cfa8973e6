"""Training speed and accuracy of the engine against the reference recipe, same data, device and process.

Trains ConvMixer-256/8 (k5, p2) on the CIFAR-10 JPEG copy for the same number of epochs in up to four ways:
  engine              ablations.engine.train.train_run (data and augmentation on the device) at its own precision
                      (bf16 on CUDA, fp32 on CPU)
  engine-fp16         the engine at the reference's precision (fp16 autocast + GradScaler; CUDA only)
  reference           locuslab/convmixer-cifar10's train.py as published: PIL transforms in 2 DataLoader
                      workers, NCHW, fp16 autocast + GradScaler on CUDA, plain AdamW
  reference-tuned     the same recipe with 8 workers (--workers), channels_last and fused AdamW
The hyperparameters default to the reference README's 92.5%-in-25-epochs command. Prints per-epoch numbers and a
summary with ratios to the published reference and model FLOP utilisation; --seeds N repeats every variant with
seeds 0..N-1 and reports accuracy as mean +- standard deviation over them ("one seed" otherwise). With --out it
writes the lot as JSON and Markdown.

    python -m benchmarks.train_speed --epochs 25 --out results/train_speed.json     # on a GPU
"""

import argparse
import dataclasses
import math
import os
import shlex
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from ablations import atomic
from ablations.config import PRECISIONS, ConfigError, RunConfig
from ablations.data import dataset_label
from ablations.data.sources import DataError, Split, load_splits
from ablations.engine.train import train_run
from benchmarks.reference_recipe import PUBLISHED, TUNED, train_reference
from convmixer.arguments import OneLineParser, UsageError, run_cli
from convmixer.count import closed_form
from convmixer.runtime import autocast_dtype, cuda_math_flags, parse_device

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "../shared/data/cifar10-jpeg.tar.gz"
# Dense bf16/fp16 tensor-core peak from the datasheets (SXM parts), matched against the CUDA device name.
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
VARIANTS = ("engine", "engine-fp16", "reference", "reference-tuned")
PROG = "python -m benchmarks.train_speed"
BASELINE = "reference"  # ratios are to the reference as published


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--epochs", type=int, default=25)
    add("--data", default=str(DEFAULT_DATA), help="ImageFolder tree or .tar.gz of it (train/ and test/)")
    add("--train-subset", type=int, default=0, help="this many training images, stratified (0: all)")
    add("--test-subset", type=int, default=0, help="this many test images, stratified (0: all)")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add("--workers", type=int, default=TUNED.workers, help="DataLoader workers of reference-tuned")
    add("--batch-size", type=int, default=512)
    add("--width", type=int, default=256)
    add("--depth", type=int, default=8)
    add("--kernel-size", type=int, default=5)
    add("--patch-size", type=int, default=2)
    # The reference README's command: --lr-max=0.05 --ra-n=2 --ra-m=12 --wd=0.005 --scale=1.0 --jitter=0 --reprob=0
    add("--lr", type=float, default=0.05)
    add("--wd", type=float, default=0.005)
    add("--ra-n", type=int, default=2)
    add("--ra-m", type=int, default=12)
    add("--scale", type=float, default=1.0)
    add("--jitter", type=float, default=0.0)
    add("--reprob", type=float, default=0.0)
    add("--clip-norm", type=float, default=0.0, help="0: off, as in the README command (its --clip-norm is 1.0)")
    add("--precision", choices=PRECISIONS, default="auto", help="the engine's; auto: bf16 on CUDA, fp32 on CPU")
    add("--compile", action="store_true", help="torch.compile the engine's model")
    add("--seed", type=int, default=0, help="the first seed")
    add("--seeds", type=int, default=1, help="run every variant with this many seeds (--seed, --seed + 1, ...)")
    add("--variants", help=f"comma-separated, of {', '.join(VARIANTS)} "
        "(engine-fp16 only on CUDA; default: all that run on the device)")  # fmt: skip
    add("--peak-tflops", type=float, default=None, help="device peak for MFU (default: datasheet table)")
    add("--out", type=Path, default=None, help="write results to this .json and a .md beside it")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    cfg = RunConfig(
        dim=args.width, depth=args.depth, kernel_size=args.kernel_size, patch_size=args.patch_size,
        dataset="imagefolder", data_root=args.data, train_subset=args.train_subset, test_subset=args.test_subset,
        scale=args.scale, randaug_n=args.ra_n, randaug_m=args.ra_m, jitter=args.jitter, reprob=args.reprob,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.wd, schedule="onecycle",
        clip_norm=args.clip_norm, precision=args.precision, compile=args.compile, seed=args.seed,
    )  # fmt: skip
    cfg.validate()
    return cfg


def check_out(out: Path | None) -> None:
    """Refuse an --out that cannot be written now, not after the benchmark has trained for an hour."""
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


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given is not None or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def variants_to_run(text: str | None, device: torch.device) -> list[str]:
    """--variants as a list; by default every variant that runs on the device (engine-fp16 needs CUDA)."""
    if text is None:
        return [name for name in VARIANTS if name != "engine-fp16" or device.type == "cuda"]
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in VARIANTS or names.count(name) > 1:
            raise ValueError(f"--variants {text!r} is not accepted: expected distinct names of {', '.join(VARIANTS)}")
    if "engine-fp16" in names and device.type != "cuda":
        raise ValueError(f"--variants {text!r} is not accepted: engine-fp16 needs CUDA; this device is {device.type}")
    return names


def train_variant(name: str, cfg: RunConfig, splits: tuple[Split, Split], device: torch.device, workers: int):
    """One variant's per-epoch history for cfg (its seed included)."""
    if name.startswith("engine"):
        history: list[dict] = []
        precision = "fp16" if name == "engine-fp16" else cfg.precision
        train_run(dataclasses.replace(cfg, precision=precision), None, device=device, on_epoch=history.append)
        return history
    variant = PUBLISHED if name == "reference" else dataclasses.replace(TUNED, workers=workers)
    with cuda_math_flags(benchmark=False, tf32=True):  # the original leaves cuDNN's autotuner off (torch's default)
        return train_reference(cfg, *splits, device, variant)


def images_per_s(records: list[dict]) -> float:
    return sum(r["train_time_s"] * r["train_images_per_s"] for r in records) / sum(r["train_time_s"] for r in records)


def summarise(runs: list[list[dict]], train_flops_per_image: float, peak: float | None) -> dict:
    """One variant over its seeds: times and rates averaged, "steady" over the epochs after the first (warm-up,
    compilation), accuracies listed per seed."""
    steady_rate = statistics.mean(images_per_s(history[1:] or history) for history in runs)
    return {
        "seeds": len(runs),
        "epochs": len(runs[0]),
        "total_epoch_time_s": statistics.mean(sum(r["epoch_time_s"] for r in history) for history in runs),
        "median_epoch_time_s": statistics.median(r["epoch_time_s"] for history in runs for r in history),
        "train_images_per_s": statistics.mean(images_per_s(history) for history in runs),
        "steady_train_images_per_s": steady_rate,
        "final_test_acc": [history[-1]["test_acc"] for history in runs],
        "best_test_acc": [max(r["test_acc"] for r in history) for history in runs],
        "mfu": steady_rate * train_flops_per_image / (peak * 1e12) if peak else None,
    }


def accuracy(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f} (one seed)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} ({len(values)} seeds)"


ROWS: tuple[tuple[str, str, Callable], ...] = (  # (label, summary key, format)
    ("epochs", "epochs", str),
    ("time for all epochs, s (train + test)", "total_epoch_time_s", "{:.1f}".format),
    ("median epoch time, s", "median_epoch_time_s", "{:.2f}".format),
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
        base = summaries[BASELINE]["steady_train_images_per_s"]
        ratios = [f"{summaries[name]['steady_train_images_per_s'] / base:.2f}x" for name in names]
        lines.append("| " + " | ".join([f"speed after epoch 1 / {BASELINE}", *ratios]) + " |")
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


def describe(cfg: RunConfig, device: torch.device, args: argparse.Namespace, peak: float | None) -> list[str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    engine_precision = autocast_dtype(cfg.precision, device) or "fp32"
    reference_precision = "fp16 autocast + GradScaler" if device.type == "cuda" else "fp32 (no CUDA)"
    data = dataset_label(cfg.dataset, cfg.data_root)
    return [
        f"{cfg.model_name} k{cfg.kernel_size} p{cfg.patch_size} on {data}",
        f"device {name}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads",
        f"engine: precision {engine_precision}, channels_last {cfg.channels_last}, compile {cfg.compile}, fused AdamW "
        f"on CUDA, cuDNN autotuner on; engine-fp16: the same at fp16 + GradScaler",
        f"reference: {reference_precision}, {PUBLISHED.workers} workers, NCHW, AdamW (foreach); reference-tuned: "
        f"{args.workers} workers, channels_last, fused AdamW on CUDA; both with cuDNN's autotuner off (as published)",
        f"recipe: batch {cfg.batch_size}, onecycle lr {cfg.lr}, wd {cfg.weight_decay}, RandAugment n{cfg.randaug_n} "
        f"m{cfg.randaug_m}, scale {cfg.scale}, jitter {cfg.jitter}, reprob {cfg.reprob}, clip {cfg.clip_norm or 'off'}",
        f"MFU: 3 x forward FLOPs x images/s / {f'{peak} TFLOP/s peak' if peak else 'peak (n/a: unknown device)'}",
        "variants run one after another in this order, each seed in turn; normalisation constants and augmentation "
        "maths differ (engine: batched float ops on the device; reference: PIL on uint8)",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = config_from_args(args)
        device = parse_device(args.device)
        autocast_dtype(cfg.precision, device)
        variants = variants_to_run(args.variants, device)
        for flag, value, least in (("--workers", args.workers, 0), ("--seeds", args.seeds, 1)):
            if value < least:
                raise ValueError(f"{flag} {value} is not accepted: expected an integer >= {least}")
        if not Path(cfg.data_root).exists():
            raise ValueError(f"--data {cfg.data_root!r} is not accepted: it does not exist")
        if args.peak_tflops is not None and not (math.isfinite(args.peak_tflops) and args.peak_tflops > 0):
            raise ValueError(f"--peak-tflops {args.peak_tflops} is not accepted: expected a number > 0")
        check_out(args.out)
    except ValueError as error:  # ConfigError is a ValueError
        raise UsageError(str(error)) from None

    peak = peak_tflops(device, args.peak_tflops)
    loaded = load_splits(cfg, resident_bytes=sys.maxsize)  # every variant trains from the same tensors
    cfg.check_image_size(loaded.image_size, f" in --data {cfg.data_root!r}")
    splits = loaded.train, loaded.test
    counts = closed_form(cfg.model_config(len(splits[0].classes), 3), splits[0].images.shape[-1])
    header = describe(cfg, device, args, peak)
    header.insert(1, f"{len(splits[0].labels)} train / {len(splits[1].labels)} test images, {cfg.epochs} epochs, "
                  f"{counts.params / 1e6:.3f} M params, {counts.flops / 1e9:.3f} GFLOPs forward per image")  # fmt: skip
    print("\n".join(header), flush=True)

    seeds = range(args.seed, args.seed + args.seeds)
    histories = {
        name: [train_variant(name, dataclasses.replace(cfg, seed=seed), splits, device, args.workers) for seed in seeds]
        for name in variants
    }
    summaries = {name: summarise(runs, 3 * counts.flops, peak) for name, runs in histories.items()}
    first_seed = {name: runs[0] for name, runs in histories.items()}
    report = "\n".join(["", "\n".join(header), "", epoch_table(first_seed), "", markdown_table(summaries), ""])
    print(report)
    if args.out is not None:
        command = "python " + shlex.join([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
        atomic.write_json(args.out, {
            "command": command, "header": header, "config": cfg.to_dict(), "seeds": list(seeds),
            "counts": counts.to_dict(), "peak_tflops": peak, "histories": histories, "summaries": summaries,
        })  # fmt: skip
        atomic.write_text(args.out.with_suffix(".md"), f"`{command}`\n{report}")
        print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG, (DataError, ConfigError))


if __name__ == "__main__":
    sys.exit(cli())
