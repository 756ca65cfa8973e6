"""Training speed and accuracy of the engine against the reference recipe, same data, device and process.

Trains ConvMixer-256/8 (k5, p2) on the CIFAR-10 JPEG copy twice for the same number of epochs: with
`ablations.train.train_run` (data and augmentation on the device) and with a plain re-implementation of
locuslab/convmixer-cifar10's train.py (PIL transforms in DataLoader workers). The hyperparameters default to the
reference README's 92.5%-in-25-epochs command. Prints per-epoch numbers, a summary with engine / reference
ratios and model FLOP utilisation, and with --out writes the lot as JSON and Markdown.

    python benchmarks/train_speed.py --epochs 25 --out results/train_speed.json     # on a GPU
"""

import argparse
import math
import os
import shlex
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: the reference sits beside it

from reference_recipe import train_reference  # noqa: E402

from ablations import atomic  # noqa: E402
from ablations.config import PRECISIONS, ConfigError, RunConfig  # noqa: E402
from ablations.data import load_resident  # noqa: E402
from ablations.datasets import DataError, ImageTree  # noqa: E402
from ablations.train import train_run  # noqa: E402
from convmixer.count import closed_form  # noqa: E402
from convmixer.runtime import autocast_dtype, parse_device  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "../shared/data/cifar10-jpeg.tar.gz"
# Dense bf16/fp16 tensor-core peak from the datasheets (SXM parts), matched against the CUDA device name.
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--epochs", type=int, default=25)
    add("--data", default=str(DEFAULT_DATA), help="ImageFolder tree or .tar.gz of it (train/ and test/)")
    add("--train-subset", type=int, default=0, help="this many training images, stratified (0: all)")
    add("--test-subset", type=int, default=0, help="this many test images, stratified (0: all)")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add("--workers", type=int, default=8, help="DataLoader workers of the reference")
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
    add("--seed", type=int, default=0)
    add("--only", choices=("both", "engine", "reference"), default="both")
    add("--peak-tflops", type=float, default=None, help="device peak for MFU (default: datasheet table)")
    add("--out", type=Path, default=None, help="write results to this .json and a .md beside it")
    return parser, parser.parse_args(argv)


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


def summarise(history: list[dict], train_flops_per_image: float, peak: float | None) -> dict:
    """Totals over all epochs, and steady-state numbers over epochs after the first (warm-up, compilation)."""
    steady = history[1:] or history
    images = sum(r["train_time_s"] * r["train_images_per_s"] for r in history)
    steady_images = sum(r["train_time_s"] * r["train_images_per_s"] for r in steady)
    steady_rate = steady_images / sum(r["train_time_s"] for r in steady)
    return {
        "epochs": len(history),
        "total_epoch_time_s": sum(r["epoch_time_s"] for r in history),
        "median_epoch_time_s": statistics.median(r["epoch_time_s"] for r in history),
        "train_images_per_s": images / sum(r["train_time_s"] for r in history),
        "steady_train_images_per_s": steady_rate,
        "final_test_acc": history[-1]["test_acc"],
        "best_test_acc": max(r["test_acc"] for r in history),
        "mfu": steady_rate * train_flops_per_image / (peak * 1e12) if peak else None,
    }


ROWS = (  # (label, summary key, format)
    ("epochs", "epochs", "{:d}"),
    ("time for all epochs, s (train + test)", "total_epoch_time_s", "{:.1f}"),
    ("median epoch time, s", "median_epoch_time_s", "{:.2f}"),
    ("train images/s, all epochs", "train_images_per_s", "{:.0f}"),
    ("train images/s, after epoch 1", "steady_train_images_per_s", "{:.0f}"),
    ("test acc after the last epoch", "final_test_acc", "{:.4f}"),
    ("best test acc", "best_test_acc", "{:.4f}"),
    ("model FLOP utilisation, after epoch 1", "mfu", "{:.2%}"),
)


def markdown_table(summaries: dict[str, dict]) -> str:
    names = list(summaries)
    both = len(names) == 2
    header = ["", *names] + (["engine / reference"] if both else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, key, fmt in ROWS:
        values = [summaries[name][key] for name in names]
        cells = [fmt.format(v) if v is not None else "n/a" for v in values]
        if both:
            ratio = values[0] / values[1] if None not in values and values[1] else None
            cells.append(f"{ratio:.2f}x" if ratio is not None and key != "epochs" else "")
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def epoch_table(histories: dict[str, list[dict]]) -> str:
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
    engine_precision = autocast_dtype(cfg.precision, device)
    data = "CIFAR-10 (JPEG q75 copy)" if Path(cfg.data_root).name == DEFAULT_DATA.name else cfg.data_root
    return [
        f"ConvMixer-{cfg.dim}/{cfg.depth} k{cfg.kernel_size} p{cfg.patch_size} on {data}",
        f"device {name}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads",
        f"engine: precision {engine_precision or 'fp32'}, channels_last {cfg.channels_last}, compile {cfg.compile}; "
        f"reference: {'fp16 autocast + GradScaler' if device.type == 'cuda' else 'fp32'}, {args.workers} workers",
        f"recipe: batch {cfg.batch_size}, onecycle lr {cfg.lr}, wd {cfg.weight_decay}, RandAugment n{cfg.randaug_n} "
        f"m{cfg.randaug_m}, scale {cfg.scale}, jitter {cfg.jitter}, reprob {cfg.reprob}, clip {cfg.clip_norm or 'off'}",
        f"MFU: 3 x forward FLOPs x images/s / {f'{peak} TFLOP/s peak' if peak else 'peak (n/a: unknown device)'}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
    try:
        cfg = config_from_args(args)
        device = parse_device(args.device)
        autocast_dtype(cfg.precision, device)
        if args.workers < 0:
            raise ValueError(f"--workers {args.workers} is not accepted: expected an integer >= 0")
        if not Path(cfg.data_root).exists():
            raise ValueError(f"--data {cfg.data_root!r} is not accepted: it does not exist")
        if args.peak_tflops is not None and not (math.isfinite(args.peak_tflops) and args.peak_tflops > 0):
            raise ValueError(f"--peak-tflops {args.peak_tflops} is not accepted: expected a number > 0")
        check_out(args.out)
    except ValueError as error:  # ConfigError is a ValueError
        parser.error(str(error))

    peak = peak_tflops(device, args.peak_tflops)
    try:
        train_split, test_split = load_resident(cfg, ImageTree(Path(cfg.data_root)))
    except (DataError, ConfigError) as error:
        parser.error(str(error))
    counts = closed_form(cfg.model_config(len(train_split.classes), 3), train_split.images.shape[-1])
    header = describe(cfg, device, args, peak)
    header.insert(1, f"{len(train_split.labels)} train / {len(test_split.labels)} test images, {cfg.epochs} epochs, "
                  f"{counts.params / 1e6:.3f} M params, {counts.flops / 1e9:.3f} GFLOPs forward per image")  # fmt: skip
    print("\n".join(header), flush=True)

    histories, results = {}, {}
    if args.only in ("both", "engine"):
        history: list[dict] = []
        results["engine_metrics"] = train_run(cfg, None, device=device, on_epoch=history.append)
        histories["engine"] = history
    if args.only in ("both", "reference"):
        torch.backends.cudnn.benchmark = False  # the original leaves cuDNN's autotuner off; the engine turns it on
        histories["reference"] = train_reference(cfg, train_split, test_split, device, args.workers)

    summaries = {name: summarise(h, 3 * counts.flops, peak) for name, h in histories.items()}
    report = "\n".join(["", "\n".join(header), "", epoch_table(histories), "", markdown_table(summaries), ""])
    print(report)
    if args.out is not None:
        command = "python " + shlex.join([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
        atomic.write_json(args.out, {
            "command": command, "header": header, "config": cfg.to_dict(), "counts": counts.to_dict(),
            "peak_tflops": peak, "histories": histories, "summaries": summaries, **results,
        })  # fmt: skip
        atomic.write_text(args.out.with_suffix(".md"), f"`{command}`\n{report}")
        print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
