"""Parameters, MACs and FLOPs of a ConvMixer, traced with fvcore and checked against a closed form.

Two independent counts must agree to the integer: an fvcore trace of the real module (the modular model or the
tweet), with a handle for every op it runs, and the formula written from the architecture (convmixer/counting.py,
free of torch, where training takes its counts from). A disagreement, or an op without a handle, raises
`CountError` instead of silently undercounting. fvcore is optional (`pip install 'convmixer-toolkit[count]'`) and
imported only when a trace runs. The CLI can also time inference (convmixer.throughput). Run
`python -m convmixer.count --help`.
"""

import argparse
import dataclasses
import json
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

from convmixer.arguments import AUTOCAST_PRECISIONS, MissingPackage, OneLineParser, patch_grid, run_cli
from convmixer.config import KNOB_NAMES, ConvMixerConfig
from convmixer.counting import CATEGORIES, CONVENTION, Counts, closed_form
from convmixer.registry import default_image_size, get_config, list_models

if TYPE_CHECKING:
    from torch import nn

# torch (and the modules that need it) is imported by the functions that trace or time a model, not here: the
# closed form is arithmetic, and `--help` or a bad flag must answer without waiting seconds for torch.

Handle = Callable[[list, list], int | Counter]  # fvcore's op handle: (inputs, outputs) -> count


class CountError(RuntimeError):
    """The trace ran an op nobody priced, or disagrees with the closed form: a bug, not bad input."""


def fvcore_handles() -> ModuleType:
    """fvcore's op handles, imported on first use (fvcore is the optional `count` extra)."""
    with warnings.catch_warnings():  # fvcore.nn scripts its losses at import; torch now warns about that
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
        from convmixer.arguments import require

        return require("fvcore.nn.jit_handles", "count")


def _in_category(category: str, handle: Handle) -> Handle:
    def counted(inputs: list, outputs: list) -> Counter:
        count = handle(inputs, outputs)
        return Counter({category: sum(count.values()) if isinstance(count, Counter) else count})

    return counted


def op_handles() -> dict[str, Handle]:
    """Every op ConvMixer runs, priced; fvcore's own handles wherever it has one."""
    jit = fvcore_handles()

    def convolution_mode(inputs: list, outputs: list) -> int:
        # `padding="same"` traces to aten::_convolution_mode, which fvcore does not know (it would drop it)
        return jit.conv_flop_count(jit.get_shape(inputs[0]), jit.get_shape(inputs[1]), jit.get_shape(outputs[0]))

    return {
        "aten::_convolution": _in_category("conv", jit.conv_flop_jit),
        "aten::_convolution_mode": _in_category("conv", convolution_mode),
        "aten::linear": _in_category("linear", jit.linear_flop_jit),
        "aten::batch_norm": _in_category("norm", jit.batchnorm_flop_jit),
        "aten::layer_norm": _in_category("norm", jit.norm_flop_counter(2)),
        "aten::gelu": _in_category("activation", jit.elementwise_flop_counter(0, 1)),
        "aten::relu": _in_category("activation", jit.elementwise_flop_counter(0, 1)),
        "aten::add": _in_category("residual", jit.elementwise_flop_counter(0, 1)),
        "aten::adaptive_avg_pool2d": _in_category("pool", jit.elementwise_flop_counter(1, 0)),
    }


FREE_OPS = ("aten::flatten", "aten::permute")
# The tweet's arguments h, d, k, p, n, in its order; it fixes every other ConvMixerConfig field at the default.
TWEET_ARGUMENTS = ("dim", "depth", "kernel_size", "patch_size", "num_classes")


def trace_counts(model: "nn.Module", image_size: int, in_chans: int = 3) -> Counts:
    """Count any ConvMixer-like module by tracing one image through it in eval mode with fvcore."""
    import torch

    from convmixer.arguments import require
    from convmixer.model import count_parameters

    handles = op_handles()  # first: a missing fvcore fails before any work
    parameter = next(model.parameters())
    image = torch.randn(1, in_chans, image_size, image_size, device=parameter.device, dtype=parameter.dtype)
    analysis = require("fvcore.nn.jit_analysis", "count").JitModelAnalysis(model, image)
    # fvcore silently skips ~60 ops (relu and clamp among them); with that list emptied, an op that is
    # neither priced in op_handles() nor declared free (a None handle) is reported as unsupported.
    analysis._ignored_ops.clear()
    analysis.set_op_handle(**handles, **dict.fromkeys(FREE_OPS))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Using padding='same' with even kernel")  # speed, not counts
            by_operator, unsupported = analysis.by_operator(), analysis.unsupported_ops()
    finally:
        model.train(was_training)
    if unsupported:
        raise CountError(f"no count for op(s) {dict(unsupported)}; add a handle to convmixer.count.op_handles")
    return Counts(count_parameters(model), {category: int(by_operator[category]) for category in CATEGORIES})


def build_model(config: ConvMixerConfig, *, tweet: bool = False) -> "nn.Module":
    """The modular ConvMixer of `config`, or the tweet's nn.Sequential where the tweet can express it."""
    import torch

    from convmixer.tweet import ConvMixer as TweetConvMixer

    if not tweet:
        return config.build()
    with torch.device("meta"):
        config.build()  # validates every field without allocating weights
    fixed = [field for field in dataclasses.fields(config) if field.name not in TWEET_ARGUMENTS]
    if any(getattr(config, field.name) != field.default for field in fixed):
        raise ValueError(
            f"the tweet has only {', '.join(f'{field.name}={field.default!r}' for field in fixed)}; got "
            f"{', '.join(f'{field.name}={getattr(config, field.name)!r}' for field in fixed)} "
            "(drop --tweet to count the modular model)"
        )
    if config.kernel_size % 2 == 0:
        raise ValueError(
            f"kernel_size={config.kernel_size} cannot run in the tweet: its padding=k//2 grows the map by one "
            "pixel for even kernels and the residual add fails; use an odd kernel or drop --tweet"
        )
    return TweetConvMixer(*(getattr(config, name) for name in TWEET_ARGUMENTS))


def count_model(config: ConvMixerConfig, image_size: int, *, tweet: bool = False) -> Counts:
    """Trace the model of `config` (or the tweet) and return its counts, which must equal the closed form."""
    from convmixer.runtime import check_memory

    expected = closed_form(config, image_size)
    # the trace holds the weights, the image and a few feature maps (`pool` reads one map, one MAC per element)
    floats = expected.params + config.in_chans * image_size**2 + 3 * expected.by_category["pool"]
    check_memory(f"dim={config.dim}, depth={config.depth}, image_size={image_size}", floats)
    traced = trace_counts(build_model(config, tweet=tweet), image_size, config.in_chans)
    if traced != expected:
        raise CountError(f"fvcore trace {traced.to_dict()} != closed form {expected.to_dict()} for {config}")
    return traced


PROG = "python -m convmixer.count"
DEFAULT_IMAGE_SIZE = 224  # without --model: the ImageNet resolution of the paper
SHAPE_FLAGS = tuple(field.name for field in dataclasses.fields(ConvMixerConfig))
# The field was n_classes before it took timm's spelling; scripts written then still pass the old flag.
OLD_FLAGS = {"num_classes": ("--n-classes",)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    usage = "%(prog)s (--model NAME | --dim D --depth N) [shape flags] [--tweet] [--json] [--throughput ...]"
    parser = OneLineParser(prog=PROG, usage=usage, description=__doc__.split("\n\n")[0])
    models = ", ".join(f"{name} ({default_image_size(name)} px)" for name in list_models())
    parser.add_argument(
        "--model",
        choices=list_models(),
        metavar="NAME",
        help=f"one of {models}: counted at that image size unless --image-size says otherwise; shape flags "
        "override the model's",
    )
    for flag in SHAPE_FLAGS:
        if flag in KNOB_NAMES:
            parser.add_argument(f"--{flag}", choices=KNOB_NAMES[flag])
        else:
            names = ("--" + flag.replace("_", "-"), *OLD_FLAGS.get(flag, ()))
            parser.add_argument(*names, type=int, help=f"model {flag}")
    parser.add_argument(
        "--image-size",
        type=int,
        metavar="PX",
        help=f"input side in pixels (default: the --model's size from the registry, else {DEFAULT_IMAGE_SIZE})",
    )
    parser.add_argument("--tweet", action="store_true", help="count the 280-character tweet model itself")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--throughput", action="store_true", help="also time inference")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtype", choices=AUTOCAST_PRECISIONS, default="fp32", help="autocast dtype")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args(argv)
    if args.image_size is None:
        args.image_size = default_image_size(args.model) if args.model else DEFAULT_IMAGE_SIZE
    return args


def config_from_args(args: argparse.Namespace) -> ConvMixerConfig:
    overrides = {flag: getattr(args, flag) for flag in SHAPE_FLAGS if getattr(args, flag) is not None}
    if args.model:
        return dataclasses.replace(get_config(args.model), **overrides)
    if args.dim is None or args.depth is None:
        raise ValueError("--dim and --depth are required unless --model NAME is given")
    return ConvMixerConfig(**overrides)


def format_text(config: ConvMixerConfig, image_size: int, tweet: bool, counts: Counts, speed: dict | None) -> str:
    lines = [
        f"{'tweet ' if tweet else ''}{config.name}: kernel {config.kernel_size}, "
        f"patch {config.patch_size}, {config.num_classes} classes, residual {config.residual}, "
        f"norm {config.norm}, activation {config.activation}",
        patch_grid(image_size, config.patch_size, config.in_chans),
        f"{'params':<18}{counts.params / 1e6:10.3f} M  {counts.params:>18,}",
    ]
    for label, value in (("MACs", counts.macs), ("FLOPs", counts.flops), ("conv+linear MACs", counts.conv_linear_macs)):
        lines.append(f"{label:<18}{value / 1e9:10.3f} G  {value:>18,}")
    lines.append("MACs by category")
    lines += [f"  {category:<16}{value / 1e9:10.3f} G  {value:>18,}" for category, value in counts.by_category.items()]
    lines.append("check: fvcore trace == closed form (params and every category, exactly)")
    lines += ["convention:"] + [f"  {line}" for line in CONVENTION]
    if speed:
        lines.append(
            f"throughput on {speed['device']}, batch {speed['batch_size']}, {speed['dtype']}, "
            f"channels_last={speed['channels_last']}, median of {speed['repeats']}"
        )
        lines.append(f"  {'images/s':<16}{speed['images_per_s']:10.1f}")
        lines.append(f"  {'peak memory':<16}{speed['peak_memory_mb']:10.1f} MB  ({speed['peak_memory_kind']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = config_from_args(args)
    counts = count_model(config, args.image_size, tweet=args.tweet)
    speed = None
    if args.throughput:
        from convmixer.throughput import measure_throughput

        model = build_model(config, tweet=args.tweet)
        speed = measure_throughput(
            model,
            args.image_size,
            args.batch_size,
            args.device,
            in_chans=config.in_chans,
            warmup=args.warmup,
            repeats=args.repeats,
            dtype=args.dtype,
            channels_last=args.channels_last,
        )
    if args.json:
        model_fields = {**dataclasses.asdict(config), "tweet": args.tweet, "image_size": args.image_size}
        report = {"model": model_fields, **counts.to_dict(), "convention": list(CONVENTION)}
        print(json.dumps({**report, "throughput": speed} if speed else report, indent=2))
    else:
        print(format_text(config, args.image_size, args.tweet, counts, speed))
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG, (ValueError, MissingPackage))  # bad values raise one-line ValueErrors


if __name__ == "__main__":
    sys.exit(cli())
