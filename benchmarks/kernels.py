"""Speed of ConvMixer's depthwise conv per kernel size: the whole model, the conv alone (forward + backward) and the
conv's forward alone, each against its floors.

For each kernel size (--kernels, default 3,5,7,9,15,31), precision (bf16 autocast, fp32), layout (channels_last,
NCHW) and implementation, it times one step of each --what: `model` is one forward + backward of ConvMixer-256/8
(patch 2, 32x32 images, batch 512, 10 classes); `depthwise` one forward + backward of one depthwise conv alone at
the shape the model gives it (256 channels, 16x16, batch 512); `forward` that conv's forward alone (no autograd).
Implementations (--impls): on CPU, torch; on CUDA, cuDNN with its autotuner off (`cudnn`) or on (`cudnn+tune`,
torch.backends.cudnn.benchmark; within 1 % of `cudnn` in every row of the H200 table, so not timed by default),
and the Triton kernels of convmixer.depthwise (`triton`).

Each row gives the median step time, the FLOP/s achieved, the time per FLOP relative to k=5 of the same row
kind (measured in the same run), and the floors predicted before measuring. FLOPs: a depthwise conv does
2*k*k*C*H*W*N per direction, three directions for forward + backward (output, input gradient, weight gradient),
one for the forward; the model's forward FLOPs from convmixer.count, times 3. Bytes, with A one activation
(N*C*H*W at the precision's size): at least the activations in and out, 2A for the forward and 3A for the
backward (read the gradient and the input, write the input gradient), per mixer layer; the Triton kernels move
2A per direction, 6A for forward + backward (convmixer/depthwise_kernels.py gives the model of each direction).
The floor time is those bytes at the device's copy rate, measured in the same run. Rows are written to --out as
they are measured, so a run cut off at its time limit keeps them. Run it alone on the device: anything sharing it
shows up in every row.

    python -m benchmarks.kernels --out results/benchmarks/kernels-h200.json        # on a GPU: every row
    python -m benchmarks.kernels --what depthwise,forward --out "$OUT/kernels.json"  # on a GPU: the conv alone
    python -m benchmarks.kernels --device cpu --tiny --kernels 3,5                  # a quick CPU try

torch and the model are imported by the functions that time them, after the command line is parsed (annotations
are strings), so that --help and a bad option answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import itertools
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


def parse_list(flag: str, text: str, accepted: tuple[str, ...]) -> tuple[str, ...]:
    """'a,b' as ('a', 'b'); ValueError unless every item is one of `accepted`, once."""
    items = tuple(item.strip() for item in text.split(","))
    if not set(items) <= set(accepted) or len(set(items)) != len(items):
        raise ValueError(f"{flag} {text!r} is not accepted: expected distinct items of {', '.join(accepted)}")
    return items


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
    add("--kernels", default="3,5,7,9,15,31", help="kernel sizes, comma-separated (k=5 is the baseline)")
    add("--what", default=",".join(STEPS), help=f"what to time, comma-separated: {', '.join(STEPS)}")
    add("--impls", default=None, help=f"on CUDA, comma-separated: {', '.join(CUDA_IMPLS)} (default cudnn,triton)")
    add("--tiny", action="store_true", help=f"a tiny model and batch for a quick CPU try ({TINY})")
    add("--batch-size", type=int, default=None, help=f"images per step (default {FULL.batch}; --tiny {TINY.batch})")
    add("--repeats", type=int, default=None, help="timed steps per row, after 3 untimed (default 10; --tiny 2)")
    add("--out", type=Path, default=None, help="write the rows to this .json and the tables to a .md beside it")
    add("--sass", action="store_true", help="no timing: the Triton kernels' sm_90 code per tile (ptxas; no GPU needed)")
    return parser.parse_args(argv)


CUDA_IMPLS = ("cudnn", "cudnn+tune", "triton")


def impls_on(device: torch.device, asked: str | None) -> tuple[str, ...]:
    """The implementations to time: --impls (default cudnn,triton) on CUDA; torch, the only one, on a CPU."""
    impls = parse_list("--impls", asked or "cudnn,triton", CUDA_IMPLS)
    return impls if device.type == "cuda" else ("torch",)


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


def forward_step(
    shape: Shape, k: int, impl: str, layout: torch.memory_format, dtype: torch.dtype | None, device: torch.device
) -> Callable[[], None]:
    """The depthwise conv's forward alone, without autograd."""
    import torch

    from convmixer.depthwise import DepthwiseConv2d, use_impl

    conv = DepthwiseConv2d(shape.dim, k).to(device, memory_format=layout)
    use_impl(conv, impl)
    x = torch.randn(shape.batch, shape.dim, shape.size, shape.size, device=device, dtype=dtype or torch.float32)
    x = x.contiguous(memory_format=layout)

    def step() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            conv(x)

    return step


STEPS = {"model": model_step, "depthwise": depthwise_step, "forward": forward_step}


def floors(shape: Shape, what: str, k: int, precision: str) -> tuple[float, float]:
    """(FLOPs, bytes) of one step of `what`, predicted from the shapes alone."""
    activation = shape.batch * shape.dim * shape.size**2 * (2 if precision == "bf16" else 4)
    conv_flops = 2 * k * k * shape.dim * shape.size**2 * shape.batch
    if what == "model":
        config = ConvMixerConfig(shape.dim, shape.depth, k, shape.patch, num_classes=10)
        return 3 * shape.batch * closed_form(config, shape.image).flops, 5 * activation * shape.depth
    if what == "forward":
        return conv_flops, 2 * activation
    return 3 * conv_flops, 5 * activation


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
    """Each row's time per FLOP over that of the k=BASELINE row of the same what, precision, layout and impl, and
    its time over cuDNN's (`cudnn`) for the same what, kernel size, precision and layout."""
    kind = ("what", "precision", "layout", "impl")
    base = {tuple(row[k] for k in kind): row for row in rows if row["kernel"] == BASELINE and row["seconds"]}
    same = ("what", "kernel", "precision", "layout")
    cudnn = {tuple(row[k] for k in same): row for row in rows if row["impl"] == "cudnn" and row["seconds"]}
    for row in rows:
        other = base.get(tuple(row[k] for k in kind))
        ok = other is not None and row["seconds"]
        row["per_flop_vs_k5"] = (row["seconds"] / row["flops"]) / (other["seconds"] / other["flops"]) if ok else None
        reference = cudnn.get(tuple(row[k] for k in same))
        row["vs_cudnn"] = row["seconds"] / reference["seconds"] if reference and row["seconds"] else None


def cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def rows_table(rows: list[dict]) -> str:
    lines = [
        "| what | k | precision | layout | impl | ms/step | fastest ms | time / cuDNN's | TFLOP/s | time/FLOP vs k=5 | "
        "GFLOP | MB floor | floor ms (copy rate) | floor / time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        seconds, rate = r["seconds"], r.get("flop_per_s")
        lines.append(
            f"| {r['what']} | {r['kernel']} | {r['precision']} | {r['layout']} | {r['impl']} | "
            f"{cell(seconds and seconds * 1e3, '.2f')} | {cell(r['fastest_s'] and r['fastest_s'] * 1e3, '.2f')} | "
            f"{cell(r.get('vs_cudnn'), '.2f')} | {cell(rate and rate / 1e12, '.3f')} | "
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
        kernels = parse_kernels(args.kernels)
        if args.sass:
            print(sass_table(kernels))
            return 0
        device = parse_device(args.device)
        whats = parse_list("--what", args.what, tuple(STEPS))
        impls = impls_on(device, args.impls)
        shape = TINY if args.tiny else FULL
        repeats = args.repeats if args.repeats is not None else 2 if args.tiny else 10
        for flag, value in (("--batch-size", args.batch_size), ("--repeats", repeats)):
            if value is not None and value < 1:
                raise ValueError(f"{flag} {value} is not accepted: expected an integer >= 1")
        check_out(args.out)
    except ValueError as error:
        raise UsageError(str(error)) from None
    shape = dataclasses.replace(shape, batch=args.batch_size or shape.batch)
    rate = copy_rate(device, max(4 * shape.batch * shape.dim * shape.size**2, COPY_BYTES))
    header = describe(shape, device, repeats, rate)
    print("\n".join(header), flush=True)
    grid = itertools.product(kernels, TIMED_PRECISIONS, LAYOUTS, impls, whats)
    keys = [dict(zip(("kernel", "precision", "layout", "impl", "what"), values, strict=True)) for values in grid]
    rows = []
    for key in keys:
        rows.append(measure(shape, key, device, repeats, rate))
        print(rows_table(rows[-1:]).splitlines()[-1], flush=True)
        report = tables(header, rows)
        # After every row, so that a run cut off at its time limit (a GPU lent for minutes) keeps what it measured.
        if args.out is not None:
            result = {"header": header, "shape": dataclasses.asdict(shape), "copy_rate_bytes_per_s": rate, "rows": rows}
            done = len(rows) == len(keys)
            write_result(args.out, argv, {**result, "complete": done}, report, quiet=not done)
    print(report)
    return 0


def tables(header: list[str], rows: list[dict]) -> str:
    """The rows so far, with their ratios to k=5 and sorted, and the fastest per precision and kernel size."""
    add_ratios(rows)
    rows.sort(key=lambda r: (r["what"], r["precision"], r["kernel"], r["layout"], r["impl"]))
    return "\n".join(["", *header, "", rows_table(rows), "", fastest_table(rows), ""])


# --- the kernels' machine code, a static proxy for their speed where no GPU is lent ---
SASS_DTYPES = {"bf16": "*bf16", "fp32": "*fp32"}


def compiled_sass(kernel, tile: tuple, k: int, dtype: str, layout: str) -> str:
    """`kernel` compiled for sm_90 at the model's shape (C=256, 16x16: sizes and strides divisible by 16, the
    contiguous stride 1, as Triton specialises them at launch), disassembled."""
    import subprocess
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = kernel.arg_names
    meta = {"K": k, "HAS_BIAS": True, "TILE_H": tile[0], "TILE_W": tile[1], "BLOCK_C": tile[2]}
    unit = ("sxc", "syc", "sgc") if layout == "channels_last" else ("sxw", "syw", "sgw")
    meta.update({name: 1 for name in unit if name in names})
    element = SASS_DTYPES[dtype]
    pointers = {"x": element, "y": element, "g": element, "w": "*fp32", "b": "*fp32", "partial": "*fp32"}
    signature = {name: "constexpr" if name in meta else pointers.get(name, "i32") for name in names}
    aligned = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(names) if name not in meta | {"pad": 0}}
    source = ASTSource(kernel, signature, {(names.index(name),): v for name, v in meta.items()}, aligned)
    binary = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": tile[3]}).asm["cubin"]
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(binary)
        file.flush()
        dump = [str(tools / "cuobjdump"), "--dump-resource-usage", "-sass", file.name]
        return subprocess.run(dump, capture_output=True, text=True, check=True).stdout


def sass_row(sass: str) -> dict:
    """Registers and spills, and the innermost loop holding the taps' FMAs: its instructions per FMA (per tap and
    pixel-channel) and shuffles per FMA."""
    import re

    lines = re.findall(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9]+)", sass)
    branches = re.findall(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?BRA[^;]*?(0x[0-9a-f]+)", sass)
    loops = []
    for at, target in branches:
        body = [op for address, op in lines if int(target, 16) <= int(address, 16) <= int(at, 16)]
        fmas = sum(op in ("FFMA", "FMUL") for op in body)
        if int(target, 16) < int(at, 16) and fmas:
            loops.append((len(body), fmas, body.count("SHFL")))
    usage = re.search(r"REG:(\d+) STACK:\d+ SHARED:(\d+) LOCAL:(\d+)", sass)
    size, fmas, shuffles = min(loops) if loops else (0, 0, 0)
    per_fma = {"per_fma": size / fmas, "shuffles_per_fma": shuffles / fmas} if fmas else {}
    return {"registers": int(usage[1]), "spill_bytes": int(usage[3]), "loop_instructions": size, **per_fma}


def sass_table(kernels: tuple[int, ...]) -> str:
    """Per kernel, tile, kernel size, dtype and layout: the compiled code's registers, spills and loop cost."""
    from convmixer import depthwise

    conv, weight_grad = depthwise.triton_kernels(False)
    lines = [
        "| kernel | tile (h, w, channels, warps) | k | dtype | layout | registers | spill bytes | "
        "loop instructions per tap and pixel-channel | shuffles per tap and pixel-channel |",
        "|---" * 9 + "|",
    ]
    for kernel, tiles in ((conv, depthwise.CONV_TILES), (weight_grad, depthwise.GRAD_TILES)):
        jitted = kernel.fn  # under the autotuner
        for tile, k, dtype, layout in itertools.product(tiles, kernels, SASS_DTYPES, LAYOUTS):
            row = sass_row(compiled_sass(jitted, tile, k, dtype, layout))
            costs = f"{cell(row.get('per_fma'), '.1f')} | {cell(row.get('shuffles_per_fma'), '.2f')}"
            lines.append(
                f"| {jitted.__name__} | {tile} | {k} | {dtype} | {layout} | {row['registers']} | "
                f"{row['spill_bytes']} | {costs} |"
            )
            print(lines[-1], flush=True)
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG)


if __name__ == "__main__":
    sys.exit(cli())
