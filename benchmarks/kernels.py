"""Speed of ConvMixer's depthwise conv per kernel size: the whole model and the conv alone, forward + backward.

For each kernel size (--kernels, default 3,5,7,9,15), precision (bf16 autocast, fp32), layout (channels_last,
NCHW) and implementation, it times one forward + backward step of ConvMixer-256/8 (patch 2, 32x32 images,
batch 512, 10 classes) and of one depthwise conv alone at the shape the model gives it (256 channels, 16x16,
batch 512). Implementations: on CPU, torch; on CUDA, cuDNN with its autotuner off (`cudnn`) and on (`cudnn+tune`,
torch.backends.cudnn.benchmark), and the Triton kernel of convmixer.depthwise (`triton`).

Each row gives the median step time, the FLOP/s achieved, the time per FLOP relative to k=5 of the same row
kind (measured in the same run), and the floors predicted before measuring: FLOPs (a depthwise conv does
2*k*k*C*H*W*N per direction, three directions for forward + backward: output, input gradient, weight gradient;
the model's forward FLOPs from convmixer.count, times 3) and bytes (at least the activations in and out: 2 for
the forward, 3 for the backward, per mixer layer), with the time those bytes take at the device's copy rate,
measured in the same run. Run it alone on the device: anything sharing it shows up in every row.

    python -m benchmarks.kernels --out results/benchmarks/kernels-h200.json        # on a GPU
    python -m benchmarks.kernels --device cpu --tiny --kernels 3,5                  # a quick CPU try

torch and the model are imported by the functions that time them, after the command line is parsed (annotations
are strings), so that --help and a bad option answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ablations.sweep.presets import CIFAR10_RECIPE
from benchmarks.common import TIMED_PRECISIONS, check_out, write_result
from convmixer.arguments import OneLineParser, UsageError, run_cli
from convmixer.config import ConvMixerConfig
from convmixer.counting import closed_form

if TYPE_CHECKING:
    import torch

PROG = "python -m benchmarks.kernels"
BASELINE = 5  # the kernel size each row's time per FLOP is compared with
COPY_BYTES = 256 * 2**20  # at least this much per copy when measuring the copy rate: more than any cache holds
LAYOUTS = {"channels_last": "channels_last", "NCHW": "contiguous_format"}  # -> torch's memory format
# the implementations a row names -> (DepthwiseConv2d.impl, cuDNN's autotuner on)
ROUTES = {
    "torch": ("torch", False),
    "cudnn": ("torch", False),
    "cudnn+tune": ("torch", True),
    "triton": ("triton", False),
}


@dataclasses.dataclass(frozen=True)
class Shape:
    """The model and batch timed."""

    dim: int
    depth: int
    patch: int
    image: int
    batch: int

    @property
    def size(self) -> int:
        """The side of the feature map the depthwise conv sees."""
        return self.image // self.patch


# the CIFAR-10 reference recipe's model and batch: ConvMixer-256/8 p2 on 32x32 images, batch 512
FULL = Shape(
    CIFAR10_RECIPE["dim"], CIFAR10_RECIPE["depth"], CIFAR10_RECIPE["patch_size"], 32, CIFAR10_RECIPE["batch_size"]
)
TINY = Shape(dim=16, depth=2, patch=2, image=16, batch=4)


def parse_kernels(text: str) -> tuple[int, ...]:
    """'3,5,7' as (3, 5, 7); ValueError unless every item is a distinct odd or even integer >= 1."""
    items = [item.strip() for item in text.split(",")]
    if not all(item.isdigit() and int(item) >= 1 for item in items) or len(set(items)) != len(items):
        raise ValueError(f"--kernels {text!r} is not accepted: expected distinct integers >= 1, like 3,5,7,9,15")
    return tuple(int(item) for item in items)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add("--kernels", default="3,5,7,9,15", help="kernel sizes, comma-separated (k=5 is the baseline)")
    add("--tiny", action="store_true", help=f"a tiny model and batch for a quick CPU try ({TINY})")
    add("--batch-size", type=int, default=None, help=f"images per step (default {FULL.batch}; --tiny {TINY.batch})")
    add("--repeats", type=int, default=None, help="timed steps per row, after 3 untimed (default 10; --tiny 2)")
    add("--out", type=Path, default=None, help="write the rows to this .json and the tables to a .md beside it")
    return parser.parse_args(argv)


def impls_on(device: torch.device) -> tuple[str, ...]:
    return ("cudnn", "cudnn+tune", "triton") if device.type == "cuda" else ("torch",)


def copy_rate(device: torch.device, nbytes: int) -> float:
    """Bytes per second a plain device copy moves (each byte read once and written once), at its fastest of 20:
    the floor is what the device can do, and on a shared machine the median can be far below that."""
    import torch

    from convmixer.runtime import step_seconds

    source = torch.zeros(nbytes // 4, device=device)
    target = torch.zeros_like(source)
    return 2 * source.numel() * 4 / min(step_seconds(lambda: target.copy_(source), device, warmup=3, repeats=20))


def model_step(shape: Shape, k: int, impl: str, layout: torch.memory_format, dtype: torch.dtype | None,
               device: torch.device) -> Callable[[], None]:  # fmt: skip
    """One forward + backward of ConvMixer-dim/depth at kernel size k on a random batch (no optimiser step)."""
    import torch
    import torch.nn.functional as F

    from convmixer.depthwise import use_impl
    from convmixer.model import ConvMixer

    model = ConvMixer(shape.dim, shape.depth, k, shape.patch, 10).to(device, memory_format=layout)
    use_impl(model, impl)
    images = torch.randn(shape.batch, 3, shape.image, shape.image, device=device).contiguous(memory_format=layout)
    labels = torch.randint(10, (shape.batch,), device=device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(images).float(), labels)
        loss.backward()

    return step


def depthwise_step(shape: Shape, k: int, impl: str, layout: torch.memory_format, dtype: torch.dtype | None,
                   device: torch.device) -> Callable[[], None]:  # fmt: skip
    """One forward + backward of the depthwise conv alone, its input in the precision a mixer layer hands it."""
    import torch

    from convmixer.depthwise import DepthwiseConv2d, use_impl

    conv = DepthwiseConv2d(shape.dim, k).to(device, memory_format=layout)
    use_impl(conv, impl)
    x = torch.randn(shape.batch, shape.dim, shape.size, shape.size, device=device, dtype=dtype or torch.float32)
    x = x.contiguous(memory_format=layout).requires_grad_()
    grad = torch.randn_like(x)

    def step() -> None:
        conv.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = conv(x)
        out.backward(grad)

    return step


STEPS = {"model": model_step, "depthwise": depthwise_step}


def floors(shape: Shape, what: str, k: int, precision: str) -> tuple[float, float]:
    """(FLOPs, bytes) of one forward + backward step of `what`, predicted from the shapes alone."""
    activation = shape.batch * shape.dim * shape.size**2 * (2 if precision == "bf16" else 4)
    layers = shape.depth if what == "model" else 1
    if what == "model":
        config = ConvMixerConfig(shape.dim, shape.depth, k, shape.patch, num_classes=10)
        flops = 3 * shape.batch * closed_form(config, shape.image).flops
    else:
        flops = 3 * 2 * k * k * shape.dim * shape.size**2 * shape.batch
    return flops, 5 * activation * layers


def measure(shape: Shape, key: dict, device: torch.device, repeats: int, rate: float) -> dict:
    """One row: `key` (what, kernel, precision, layout, impl) timed, with its floors; a failure is its row's error."""
    import torch

    from convmixer.runtime import AUTOCAST_DTYPES, cuda_math_flags, step_seconds

    impl, tune = ROUTES[key["impl"]]
    dtype = AUTOCAST_DTYPES[key["precision"]]
    flops, nbytes = floors(shape, key["what"], key["kernel"], key["precision"])
    row = {**key, "flops": flops, "bytes_floor": nbytes, "floor_s": nbytes / rate}
    try:
        with cuda_math_flags(benchmark=tune, tf32=True):
            layout = getattr(torch, LAYOUTS[key["layout"]])
            step = STEPS[key["what"]](shape, key["kernel"], impl, layout, dtype, device)
            times = step_seconds(step, device, warmup=3, repeats=repeats)
    except Exception as error:  # one implementation failing (a Triton compile, memory) must not lose the table
        message = " ".join(f"{type(error).__name__}: {error}".splitlines())[:300]
        return {**row, "seconds": None, "fastest_s": None, "error": message}
    seconds = statistics.median(times)
    return {**row, "seconds": seconds, "fastest_s": min(times), "flop_per_s": flops / seconds, "error": ""}


def add_ratios(rows: list[dict]) -> None:
    """Each row's time per FLOP over that of the k=BASELINE row of the same what, precision, layout and impl."""
    kind = ("what", "precision", "layout", "impl")
    base = {tuple(row[k] for k in kind): row for row in rows if row["kernel"] == BASELINE and row["seconds"]}
    for row in rows:
        other = base.get(tuple(row[k] for k in kind))
        ok = other is not None and row["seconds"]
        row["per_flop_vs_k5"] = (row["seconds"] / row["flops"]) / (other["seconds"] / other["flops"]) if ok else None


def cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def rows_table(rows: list[dict]) -> str:
    lines = [
        "| what | k | precision | layout | impl | ms/step | fastest ms | TFLOP/s | time/FLOP vs k=5 | GFLOP | "
        "MB floor | floor ms (copy rate) | floor / time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        seconds, rate = r["seconds"], r.get("flop_per_s")
        lines.append(
            f"| {r['what']} | {r['kernel']} | {r['precision']} | {r['layout']} | {r['impl']} | "
            f"{cell(seconds and seconds * 1e3, '.2f')} | {cell(r['fastest_s'] and r['fastest_s'] * 1e3, '.2f')} | "
            f"{cell(rate and rate / 1e12, '.3f')} | "
            f"{cell(r.get('per_flop_vs_k5'), '.2f')} | {r['flops'] / 1e9:.2f} | {r['bytes_floor'] / 2**20:.1f} | "
            f"{r['floor_s'] * 1e3:.3f} | {cell(seconds and r['floor_s'] / seconds, '.1%')} |"
            + (f" {r['error']}" if r["error"] else "")
        )
    return "\n".join(lines)


def fastest_table(rows: list[dict]) -> str:
    """Per precision and kernel size: the fastest layout and implementation of the whole model's step."""
    lines = [
        "| precision | k | fastest layout | fastest impl | ms/step | slowest ms/step |",
        "|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["what"] == "model" and row["seconds"]:
            groups.setdefault((row["precision"], row["kernel"]), []).append(row)
    for (precision, k), group in groups.items():
        best, worst = min(group, key=lambda r: r["seconds"]), max(group, key=lambda r: r["seconds"])
        lines.append(f"| {precision} | {k} | {best['layout']} | {best['impl']} | {best['seconds'] * 1e3:.2f} | "
                     f"{worst['seconds'] * 1e3:.2f} |")  # fmt: skip
    return "\n".join(lines)


def describe(shape: Shape, device: torch.device, repeats: int, rate: float) -> list[str]:
    import torch

    from convmixer.runtime import hardware_name, toolkit_commit

    try:
        triton = f"triton {importlib.import_module('triton').__version__}"
    except ModuleNotFoundError:
        triton = "no triton"
    return [
        f"{hardware_name(device)}; torch {torch.__version__}, {triton}; toolkit {toolkit_commit()}",
        f"ConvMixer-{shape.dim}/{shape.depth} p{shape.patch}, {shape.image}x{shape.image} images, batch {shape.batch} "
        f"(depthwise conv alone: {shape.dim} channels, {shape.size}x{shape.size}); median of {repeats} steps after 3 "
        f"untimed; fp32 rows allow TF32 (torch's default)",
        f"copy rate {rate / 1e9:.1f} GB/s (a device copy, read + write), the floor's bandwidth",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from convmixer.runtime import parse_device

    try:
        device = parse_device(args.device)
        kernels = parse_kernels(args.kernels)
        shape = TINY if args.tiny else FULL
        repeats = args.repeats if args.repeats is not None else 2 if args.tiny else 10
        for flag, value in (("--batch-size", args.batch_size), ("--repeats", repeats)):
            if value is not None and value < 1:
                raise ValueError(f"{flag} {value} is not accepted: expected an integer >= 1")
        check_out(args.out)
    except ValueError as error:
        raise UsageError(str(error)) from None
    shape = dataclasses.replace(shape, batch=args.batch_size or shape.batch)
    impls = impls_on(device)
    rate = copy_rate(device, max(4 * shape.batch * shape.dim * shape.size**2, COPY_BYTES))
    header = describe(shape, device, repeats, rate)
    print("\n".join(header), flush=True)
    rows = []
    for k in kernels:
        for precision in TIMED_PRECISIONS:
            for layout in LAYOUTS:
                for impl in impls:
                    for what in STEPS:
                        key = {"what": what, "kernel": k, "precision": precision, "layout": layout, "impl": impl}
                        rows.append(measure(shape, key, device, repeats, rate))
                        print(rows_table(rows[-1:]).splitlines()[-1], flush=True)
        # After every kernel size, so that a run cut off at its time limit (a GPU lent for minutes) keeps its rows.
        report = tables(header, rows)
        if args.out is not None:
            result = {"header": header, "shape": dataclasses.asdict(shape), "copy_rate_bytes_per_s": rate, "rows": rows}
            write_result(args.out, argv, {**result, "complete": k == kernels[-1]}, report, quiet=k != kernels[-1])
    print(report)
    return 0


def tables(header: list[str], rows: list[dict]) -> str:
    """The rows so far, with their ratios to k=5 and sorted, and the fastest per precision and kernel size."""
    add_ratios(rows)
    rows.sort(key=lambda r: (r["what"], r["precision"], r["kernel"], r["layout"], r["impl"]))
    return "\n".join(["", *header, "", rows_table(rows), "", fastest_table(rows), ""])


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG)


if __name__ == "__main__":
    sys.exit(cli())
