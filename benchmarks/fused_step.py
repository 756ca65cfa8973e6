"""The engine's training step eager, compiled and compiled with CUDA graphs, against its floor:
`python -m benchmarks.fused_step`.

For each kernel size of --kernels it predicts the step's floor (benchmarks/step_model.py, with the copy and FLOP
rates measured in the same run), then times the engine's own `train_step` (random images already on the device)
in each mode: eager; compiled (compile=true: Inductor fuses each norm with its activation and the residual add,
forward and backward); cudagraphs (compile=true, cuda_graphs=true: the compiled forward and backward replayed as
CUDA graphs; plain Inductor on a CPU). For a compiled mode it also counts the kernels of one step: Inductor's own
fused kernels and the library calls it leaves (convolutions, matrix products), beside the aten ops of the same
forward and backward run eagerly.
A row is printed and written (--out) after every mode, so a run cut off at its time limit keeps what it measured.

    python -m benchmarks.fused_step --kernels 5,9 --out results/benchmarks/fused-step-h200.json        # on a GPU
    python -m benchmarks.fused_step --device cpu --set dim=16,depth=1,batch_size=4 --image-size 16 --kernels 5
"""

import argparse
import dataclasses
import re
import statistics
from pathlib import Path

from benchmarks.common import add_recipe_options, write_result
from benchmarks.step_floor import check_args, measure_rates, step_shape
from benchmarks.step_model import floor_seconds, step_costs
from convmixer.arguments import OneLineParser, UsageError, run_cli

PROG = "python -m benchmarks.fused_step"
MODES = ("eager", "compiled", "cudagraphs")
WARMUP = 3  # untimed steps first: the compile, cuDNN's autotuner, the CUDA graphs' recording
# In Inductor's output code: a launch of a kernel it generated (C++ on a CPU, Triton on a GPU; layers of one shape
# share a kernel's definition, so launches, not definitions, are the step's kernels), and a call left to a library.
FUSED_KERNEL = re.compile(r"^\s+(cpp_fused\w*|triton_\w+)(?:\.run)?\(", re.M)
LIBRARY_CALL = re.compile(r"(extern_kernels\.\w+|torch\.ops\.aten\.\w+\.\w+)\(")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add_recipe_options(parser, "cifar10")  # the run's keys in the runner's words; no data is read
    add("--kernels", default=None, help="kernel sizes, comma-separated (default: the run's kernel_size)")
    add("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)} (default all)")
    add("--image-size", type=int, default=32, help="height and width of the random images (default 32)")
    add("--classes", type=int, default=10, help="classes of the head (default 10)")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add("--steps", type=int, default=20, help="timed steps per mode (default 20)")
    add("--copy-mb", type=int, default=256, help="size of the copy that measures the copy rate (default 256)")
    add("--matmul-size", type=int, default=None, help="side of the products that measure the FLOP rates")
    add("--out", type=Path, default=None, help="write the rows to this .json and a table to a .md beside it")
    return parser.parse_args(argv)


def kernel_counts(codes: list[str]) -> dict[str, int]:
    """The kernels of Inductor's output code for one step (its forward and backward modules)."""
    return {
        "fused_launches": sum(len(FUSED_KERNEL.findall(code)) for code in codes),
        "library_calls": sum(len(LIBRARY_CALL.findall(code)) for code in codes),
    }


def eager_ops(trainer, images, targets) -> int:
    """The aten ops (views left out) of the model's eager forward and backward, the loss's included: each is a
    kernel of its own. What Inductor compiles is the same forward and backward (the loss and AdamW stay eager)."""
    import torch.nn.functional as F

    from benchmarks.measure import OpBytes

    with OpBytes() as counter:
        F.cross_entropy(trainer.logits(images), targets).backward()
    trainer.model.zero_grad(set_to_none=True)
    return counter.ops


def one_mode(cfg, args: argparse.Namespace, device, mode: str) -> dict:
    """The median seconds of the engine's train_step in `mode`, and its kernels (compiled: from the first step)."""
    import torch
    from torch._inductor.utils import run_and_get_code

    from benchmarks.measure import bare_trainer, random_batch
    from convmixer.runtime import step_seconds

    torch.manual_seed(cfg.seed)
    trainer = bare_trainer(cfg, args.classes, device, mode)
    images, targets = random_batch(cfg, args.image_size, args.classes, device)
    trainer.model.train()

    def step() -> None:
        trainer.train_step(images, targets, cfg.lr)

    if mode == "eager":
        counts = {"eager_ops": eager_ops(trainer, images, targets)}
    else:  # the first step compiles, or loads the compiled code from Inductor's cache: its output code either way
        counts = kernel_counts(run_and_get_code(step)[1])
    seconds = statistics.median(step_seconds(step, device, warmup=WARMUP, repeats=args.steps))
    return {"kernel_size": cfg.kernel_size, "mode": mode, "step_ms": seconds * 1e3, **counts}


def rows_table(rows: list[dict]) -> str:
    lines = ["| k | mode | step ms | floor ms | step / floor | kernels (fused + library) or eager ops |"]
    lines.append("|---|---|---|---|---|---|")
    for row in rows:
        kernels = row.get("eager_ops", f"{row.get('fused_launches')} + {row.get('library_calls')}")
        lines.append(
            f"| {row['kernel_size']} | {row['mode']} | {row['step_ms']:.3f} | {row['floor_ms']:.3f} | "
            f"{row['step_ms'] / row['floor_ms']:.1f} | {kernels} |"
        )
    return "\n".join(lines)


def write_rows(args: argparse.Namespace, argv, header: str, rates, cfg, rows: list[dict], complete: bool) -> None:
    result = {
        "header": header,
        "rates": dataclasses.asdict(rates),
        "config": cfg.recorded().to_dict(),
        "rows": rows,
        "complete": complete,
    }
    write_result(args.out, argv, result, f"{header}\n\n{rows_table(rows)}\n", quiet=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg, device, kernels = check_args(args)
        modes = args.modes.split(",")
        unknown = [mode for mode in modes if mode not in MODES]
        if unknown:
            raise ValueError(f"--modes {args.modes!r} is not accepted: expected modes of {', '.join(MODES)}")
    except ValueError as error:  # ConfigError is a ValueError
        raise UsageError(str(error)) from None
    import torch

    from ablations.engine.train import PRECISION_NAMES, run_dtype
    from convmixer.runtime import cuda_math_flags, hardware_name, toolkit_commit

    dtype = run_dtype(cfg.precision, device)
    header = f"{hardware_name(device)}; torch {torch.__version__}; toolkit {toolkit_commit()}"
    print(header, flush=True)
    rows = []
    with cuda_math_flags(benchmark=device.type == "cuda", tf32=cfg.tf32):  # as a run trains
        size = args.matmul_size or (8192 if device.type == "cuda" else 512)
        rates = measure_rates(device, dtype, cfg.tf32, args.copy_mb, size)
        for k in kernels:
            run = dataclasses.replace(cfg, kernel_size=k)
            shape = step_shape(run, args.image_size, args.classes, PRECISION_NAMES[dtype], cfg.channels_last is True)
            floor_ms = sum(floor_seconds(cost, rates) for cost in step_costs(shape)) * 1e3
            for mode in modes:
                rows.append({**one_mode(run, args, device, mode), "floor_ms": floor_ms})
                print(rows_table(rows[-1:]).splitlines()[-1], flush=True)
                if args.out is not None:  # after every mode: a run cut off at its time limit keeps these rows
                    write_rows(args, argv, header, rates, cfg, rows, complete=len(rows) == len(kernels) * len(modes))
    return 0


def cli(argv: list[str] | None = None) -> int:
    from ablations.config import ConfigError

    return run_cli(main, argv, PROG, (ConfigError,))


if __name__ == "__main__":
    raise SystemExit(cli())
