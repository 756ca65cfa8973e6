"""Each op of a ConvMixer training step against its floor: `python -m benchmarks.step_floor`.

For each kernel size of --kernels it predicts, before measuring, the bytes and FLOPs of every op of one training
step in each direction (benchmarks/step_model.py). It then measures, in the same run, the device's ceilings: its
copy rate (bytes read + written per second by a large device copy), its vector rate (a float32 matrix product
with TF32 off: CUDA cores on a GPU, the CPU's own rate on a CPU) and its matrix rate (a matrix product in the
step's dtype: tensor cores on a GPU), and gives each op its floor, max(bytes / copy rate, FLOPs / its unit's
rate). Last it times the engine's own `train_step` (eager, random images already on the device, AdamW), profiles
the same steps with torch.profiler, maps the profiler's events onto the model's ops
(benchmarks/step_profile.py), and prints per op and direction: floor, measured, measured / floor; then every op
together, what matched no op, and the whole step timed without the profiler. Rows are printed as they come and
the result (`--out`) is written after every kernel size.

    python -m benchmarks.step_floor --kernels 5,9 --out results/benchmarks/step-floor-h200.json      # on a GPU
    python -m benchmarks.step_floor --device cpu --set dim=16,depth=2,batch_size=8 --image-size 16    # a CPU try
"""

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

from benchmarks.common import add_recipe_options, check_out, recipe_config, write_result
from benchmarks.kernels import parse_kernels
from benchmarks.step_model import OPS, Rates, StepShape, bound, floor_seconds, step_costs
from convmixer.arguments import OneLineParser, UsageError, run_cli

PROG = "python -m benchmarks.step_floor"
WARMUP = 3  # untimed steps before the timed and the profiled ones (cuDNN's autotuner, lazy initialisation)
OTHER = "other"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add_recipe_options(parser, "cifar10")  # the run's keys in the runner's words; no data is read
    add("--kernels", default=None, help="kernel sizes, comma-separated (default: the run's kernel_size)")
    add("--image-size", type=int, default=32, help="height and width of the random images (default 32)")
    add("--classes", type=int, default=10, help="classes of the head (default 10)")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add("--steps", type=int, default=5, help="timed steps, and as many profiled steps (default 5)")
    add("--copy-mb", type=int, default=256, help="size of the copy that measures the copy rate (default 256)")
    add(
        "--matmul-size",
        type=int,
        default=None,
        help="side of the matrix products that measure the FLOP rates (default 8192 on CUDA, 512 on a CPU)",
    )
    add(
        "--predict",
        metavar="COPY,VECTOR,MATRIX",
        default=None,
        help="measure nothing: the floors with these rates "
        "(copy in GB/s, read + write; vector and matrix in TFLOP/s), e.g. 4186,67,788",
    )
    add("--out", type=Path, default=None, help="write the rows to this .json and the tables to a .md beside it")
    return parser.parse_args(argv)


def given_rates(text: str) -> Rates:
    """--predict's 'COPY,VECTOR,MATRIX' (GB/s, TFLOP/s, TFLOP/s) as Rates in bytes and FLOPs per second."""
    try:
        copy, vector, matrix = (float(item) for item in text.split(","))
    except ValueError:
        copy = vector = matrix = 0.0
    if min(copy, vector, matrix) <= 0:
        raise ValueError(
            f"--predict {text!r} is not accepted: expected three positive numbers COPY,VECTOR,MATRIX "
            "(GB/s, TFLOP/s, TFLOP/s), like 4186,67,788"
        )
    return Rates(copy=copy * 1e9, vector=vector * 1e12, matrix=matrix * 1e12)


def matmul_rate(device, dtype, size: int, repeats: int = 5) -> float:
    """FLOP/s of a size x size x size matrix product in `dtype` on random data, at its fastest of `repeats`."""
    import torch

    from convmixer.runtime import step_seconds

    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    return 2 * size**3 / min(step_seconds(lambda: a @ b, device, warmup=2, repeats=repeats))


def measure_rates(device, dtype, tf32: bool, copy_mb: int, matmul_size: int) -> Rates:
    """The device's ceilings in this run: copy, vector (float32 product, TF32 off) and matrix (in the step's
    dtype; float32 steps with TF32 allowed, as the engine's convs run them)."""
    import torch

    from benchmarks.measure import copy_rate

    vector = matmul_rate(device, torch.float32, matmul_size)
    if dtype is None and tf32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            matrix = matmul_rate(device, torch.float32, matmul_size)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False
    else:
        matrix = matmul_rate(device, dtype or torch.float32, matmul_size)
    return Rates(copy=copy_rate(device, copy_mb), vector=vector, matrix=matrix)


def flop_rate(per_second: float) -> str:
    return f"{per_second / 1e12:.1f} TFLOP/s" if per_second >= 1e12 else f"{per_second / 1e9:.1f} GFLOP/s"


MODEL_KEYS = ("dim", "depth", "kernel_size", "patch_size", "norm", "residual", "activation")


def step_shape(cfg, image_size: int, classes: int, dtype_name: str, channels_last: bool) -> StepShape:
    """The step model's view of a run of cfg on image_size px images of `classes` classes."""
    model = {key: getattr(cfg, key) for key in MODEL_KEYS}
    return StepShape(
        **model,
        image_size=image_size,
        batch=cfg.batch_size,
        num_classes=classes,
        dtype=dtype_name,
        channels_last=channels_last,
        clip_norm=cfg.clip_norm > 0,
    )


def profile_step(cfg, image_size: int, classes: int, device, steps: int) -> dict:
    """The engine's train_step of cfg: its median seconds without the profiler, then the profiled steps'
    seconds per (op, direction) and, on CUDA, their kernels."""
    import torch

    from benchmarks.measure import bare_trainer, random_batch
    from benchmarks.step_profile import StepMap, profile_steps
    from convmixer.runtime import step_seconds

    torch.manual_seed(cfg.seed)
    trainer = bare_trainer(cfg, classes, device, "eager")
    images, targets = random_batch(cfg, image_size, classes, device)
    trainer.model.train()

    def step() -> None:
        trainer.train_step(images, targets, cfg.lr)

    timed = statistics.median(step_seconds(step, device, warmup=WARMUP, repeats=steps))
    mapped = StepMap(profile_steps(step, trainer.model, device, steps))
    per_step = {key: seconds / steps for key, seconds in mapped.seconds(device).items()}
    kernels = {key: {name: s / steps for name, s in found.items()} for key, found in mapped.kernels().items()}
    return {
        "step_s": timed,
        "measured": per_step,
        "kernels": kernels,
        "channels_last": trainer.setup.channels_last,
        "impl": trainer.setup.impl,
    }


def floor_rows(shape: StepShape, rates: Rates, measured: dict | None = None, step_s: float = 0.0) -> list[dict]:
    """Per op and direction: its bytes, FLOPs and floor, then the whole step's floor (every op's, one after another);
    with `measured` (seconds per op and direction), each op's measured seconds and measured / floor, what matched
    no op, the profiled total and the step timed without the profiler (`step_s`)."""
    rows = [
        {**dataclasses.asdict(cost), "bound": bound(cost, rates), "floor_s": floor_seconds(cost, rates)}
        for cost in step_costs(shape)
    ]
    floor = sum(row["floor_s"] for row in rows)
    if measured is None:
        return [*rows, {"op": "step", "direction": "", "floor_s": floor}]
    for row in rows:
        row["measured_s"] = measured.get((row["op"], row["direction"]), 0.0)
        row["ratio"] = row["measured_s"] / row["floor_s"]
    modelled = {(row["op"], row["direction"]) for row in rows}
    unmatched = sum(seconds for key, seconds in measured.items() if key not in modelled)
    rows.append({"op": OTHER, "direction": "", "measured_s": unmatched})
    for name, seconds in (("profiled total", sum(measured.values())), ("step (timed)", step_s)):
        rows.append({"op": name, "direction": "", "floor_s": floor, "measured_s": seconds, "ratio": seconds / floor})
    return rows


def rows_table(rows: list[dict]) -> str:
    lines = [
        "| op | direction | MB | GFLOP | bound | floor ms | measured ms | measured / floor |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        size = f"{row['bytes'] / 1e6:.2f} | {row['flops'] / 1e9:.3f}" if "bytes" in row else " | "
        floor = f"{row['floor_s'] * 1e3:.3f}" if "floor_s" in row else ""
        ratio = f"{row['ratio']:.1f}x" if "ratio" in row else ""
        measured = f"{row['measured_s'] * 1e3:.3f}" if "measured_s" in row else ""
        lines.append(
            f"| {row['op']} | {row['direction']} | {size} | {row.get('bound', '')} | {floor} | {measured} | {ratio} |"
        )
    return "\n".join(lines)


def kernels_table(kernels: dict[tuple[str, str], dict[str, float]], top: int = 3) -> str:
    """On CUDA: each op's `top` kernels by device time."""
    lines = ["| op | direction | kernel | ms |", "|---|---|---|---:|"]
    order = {op: i for i, op in enumerate(OPS)}
    for (op, direction), found in sorted(kernels.items(), key=lambda item: (order.get(item[0][0], 99), item[0][1])):
        for name, seconds in sorted(found.items(), key=lambda item: -item[1])[:top]:
            lines.append(f"| {op} | {direction} | `{name[:90]}` | {seconds * 1e3:.3f} |")
    return "\n".join(lines)


def check_args(args: argparse.Namespace):
    """The run, its device and kernel sizes; ValueError naming a bad value."""
    from convmixer.runtime import parse_device

    cfg = recipe_config(args)
    device = parse_device(args.device)
    kernels = parse_kernels(args.kernels) if args.kernels is not None else (cfg.kernel_size,)
    for flag, value in (
        ("--image-size", args.image_size),
        ("--classes", args.classes),
        ("--steps", args.steps),
        ("--copy-mb", args.copy_mb),
        ("--matmul-size", args.matmul_size or 1),
    ):
        if value < 1:
            raise ValueError(f"{flag} {value} is not accepted: expected an integer >= 1")
    for k in kernels:
        step_shape(dataclasses.replace(cfg, kernel_size=k), args.image_size, args.classes, "fp32", True).check()
    check_out(args.out)
    return cfg, device, kernels


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg, device, kernels = check_args(args)
        predicted = given_rates(args.predict) if args.predict is not None else None
    except ValueError as error:  # ConfigError is a ValueError
        raise UsageError(str(error)) from None
    import torch

    from ablations.engine.modes import PRECISION_NAMES, run_dtype
    from convmixer.runtime import cuda_math_flags, hardware_name, toolkit_commit

    dtype = run_dtype(cfg.precision, device)
    header = [] if predicted else [f"{hardware_name(device)}; torch {torch.__version__}; toolkit {toolkit_commit()}"]
    with cuda_math_flags(benchmark=device.type == "cuda", tf32=cfg.tf32):  # as a run trains
        size = args.matmul_size or (8192 if device.type == "cuda" else 512)
        rates = predicted or measure_rates(device, dtype, cfg.tf32, args.copy_mb, size)
        where = "given (--predict): nothing measured" if predicted else "measured in this run"
        header.append(
            f"copy {rates.copy / 1e9:.1f} GB/s (read + write), vector {flop_rate(rates.vector)} (float32 "
            f"product, TF32 off), matrix {flop_rate(rates.matrix)} ({PRECISION_NAMES[dtype]} product), "
            f"{where}"
        )
        print("\n".join(header), flush=True)
        results = []
        for k in kernels:
            run = dataclasses.replace(cfg, kernel_size=k)
            results.append(one_kernel(run, args, device, rates, PRECISION_NAMES[dtype], measure=not predicted))
            report = "\n".join(["", *header, *(part for result in results for part in result["report"]), ""])
            if args.out is not None:  # after every kernel size: a run cut off at its time limit keeps these
                result = {
                    "header": header,
                    "rates": dataclasses.asdict(rates),
                    "config": cfg.recorded().to_dict(),
                    "kernels": [{key: r[key] for key in r if key != "report"} for r in results],
                    "complete": k == kernels[-1],
                }
                write_result(args.out, argv, result, report, quiet=k != kernels[-1])
    return 0


def one_kernel(cfg, args: argparse.Namespace, device, rates: Rates, dtype_name: str, measure: bool) -> dict:
    """One kernel size: the floor predicted, then (`measure`) the step measured and profiled; the table printed."""
    shape = step_shape(cfg, args.image_size, args.classes, dtype_name, True)
    title = (
        f"ConvMixer-{cfg.dim}/{cfg.depth} k{cfg.kernel_size} p{cfg.patch_size}, {args.image_size} px, batch "
        f"{cfg.batch_size}, {dtype_name}, norm={cfg.norm}"
    )
    floor = sum(floor_seconds(cost, rates) for cost in step_costs(shape))
    print(f"\n{title}: predicted floor {floor * 1e3:.3f} ms per step{'; measuring' if measure else ''}", flush=True)
    if not measure:
        rows = floor_rows(shape, rates)
        report = [f"### {title}: predicted", "", rows_table(rows)]
        print("\n".join(report[2:]), flush=True)
        return {
            "kernel_size": cfg.kernel_size,
            "shape": dataclasses.asdict(shape),
            "rows": rows,
            "report": ["", *report],
        }
    measured = profile_step(cfg, args.image_size, args.classes, device, args.steps)
    shape = dataclasses.replace(shape, channels_last=measured["channels_last"])
    rows = floor_rows(shape, rates, measured["measured"], measured["step_s"])
    layout = "channels_last" if shape.channels_last else "NCHW"
    title += f", {layout}, depthwise {measured['impl']}; {args.steps} steps timed, {args.steps} profiled"
    report = [f"### {title}", "", rows_table(rows)]
    if measured["kernels"]:
        report += ["", kernels_table(measured["kernels"])]
    print("\n".join(report[2:]), flush=True)
    kernels = [{"op": op, "direction": d, "kernels": found} for (op, d), found in measured["kernels"].items()]
    return {
        "kernel_size": cfg.kernel_size,
        "shape": dataclasses.asdict(shape),
        "rows": rows,
        "top_kernels": kernels,
        "depthwise_impl": measured["impl"],
        "report": ["", *report],
    }


def cli(argv: list[str] | None = None) -> int:
    from ablations.config import ConfigError

    return run_cli(main, argv, PROG, (ConfigError,))


if __name__ == "__main__":
    sys.exit(cli())
