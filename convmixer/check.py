"""`python -m convmixer.check`: proves the modular ConvMixer computes the tweet's function, config by config.

For each config it builds the tweet, randomises every BatchNorm (so a swapped norm would show), copies the
weights into the modular model with `tweet_to_modular`, and compares logits in eval mode, then one train-mode
step: logits from batch statistics, the updated running statistics, and gradients for the input and every
parameter. Even kernels are not comparable: the tweet's `padding=k//2` grows the map and its residual add fails;
the check shows that failure and what the modular model computes instead.

torch and the models are imported by the functions that build and compare them, so that `--help` and a bad option
answer at once (annotations are strings: `from __future__ import annotations`).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from convmixer.arguments import OneLineParser, run_cli

if TYPE_CHECKING:
    import torch
    from torch import nn

    from convmixer.interop import StateDict
    from convmixer.model import ConvMixer

Converter = Callable[["StateDict"], "StateDict"]

# Differences are relative: max |modular - tweet| / max |tweet|, per compared tensor. With odd kernels the two
# models run the same kernels in the same order and every difference is exactly 0 on CPU. The tolerances are for
# a build that orders the arithmetic differently (another conv algorithm, a GPU): a float32 copy of these models
# differs from the float64 one by at most 1.4e-5 (parameter gradients; logits ~5e-7), so float32 gets 1e-4;
# float64 rounding is ~5e8 times finer, so 1e-10 still leaves a margin of >1000. A wrong weight mapping gives O(1).
TOLERANCES = {"float64": 1e-10, "float32": 1e-4}  # by torch dtype name
DTYPES = {"float32": ("float32",), "float64": ("float64",), "both": ("float64", "float32")}
COLUMNS = ("eval logits", "train logits", "running stats", "input grad", "param grad")
PROG = "python -m convmixer.check"
BATCH_SIZE = 4
N_CLASSES = 10


@dataclass(frozen=True)
class Case:
    dim: int
    depth: int
    kernel_size: int
    patch_size: int
    image_size: int

    def __str__(self) -> str:
        return f"{self.dim}/{self.depth} k{self.kernel_size} p{self.patch_size} img{self.image_size}"


CASES = (
    Case(8, 0, 9, 7, 14),  # no mixer layer at all
    Case(8, 0, 4, 2, 8),  # even kernel, but depth 0 never uses it
    Case(8, 1, 1, 1, 6),  # 1x1 depthwise kernel, 1x1 patches
    Case(8, 1, 3, 2, 9),  # patch size not dividing the image
    Case(8, 1, 9, 1, 8),  # kernel larger than the feature map
    Case(16, 2, 5, 2, 16),  # the CIFAR recipe's k5 p2
    Case(12, 3, 7, 3, 20),
    Case(8, 2, 9, 7, 28),  # the ImageNet k9 p7
    Case(24, 2, 5, 4, 17),
    Case(4, 3, 3, 5, 15),
    Case(8, 1, 2, 1, 6),
    Case(8, 2, 4, 2, 12),
    Case(8, 3, 6, 3, 13),
    Case(16, 1, 8, 7, 32),
)
QUICK_CASES = (CASES[0], CASES[2], CASES[3], CASES[7], CASES[11])


@dataclass
class Row:
    case: Case
    dtype: torch.dtype
    differences: dict[str, float] = field(default_factory=dict)
    tweet_error: str = ""
    # even kernels: max |modular depthwise conv - tweet's conv cropped| for the two possible crops
    crop_first: float = float("nan")
    crop_last: float = float("nan")

    @property
    def tolerance(self) -> float:
        return TOLERANCES[dtype_name(self.dtype)]

    @property
    def status(self) -> str:
        if self.tweet_error:
            same_kernel_as_crop = self.crop_first <= self.tolerance
            return "DIFFERS" if self.case.kernel_size % 2 == 0 and same_kernel_as_crop else "FAIL"
        return "PASS" if all(value <= self.tolerance for value in self.differences.values()) else "FAIL"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def relative_difference(modular: torch.Tensor, tweet: torch.Tensor) -> float:
    difference = (modular.double() - tweet.double()).abs().max().item()
    scale = tweet.double().abs().max().item()
    return difference / scale if scale > 0 else difference


def randomize_batch_norms(model: nn.Module) -> None:
    """Give every BatchNorm distinct affine parameters and running statistics (the defaults are 1s and 0s)."""
    import torch
    from torch import nn

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(int(torch.randint(1, 100, ())))


def build_pair(case: Case, dtype: torch.dtype, seed: int, convert: Converter) -> tuple[nn.Sequential, ConvMixer]:
    import torch

    from convmixer.model import ConvMixer
    from convmixer.tweet import ConvMixer as TweetConvMixer

    torch.manual_seed(seed)
    tweet = TweetConvMixer(case.dim, case.depth, case.kernel_size, case.patch_size, N_CLASSES).to(dtype)
    randomize_batch_norms(tweet)
    modular = ConvMixer(case.dim, case.depth, case.kernel_size, case.patch_size, N_CLASSES).to(dtype)
    modular.load_state_dict(convert(tweet.state_dict()))
    return tweet, modular


def train_step(model: nn.Module, images: torch.Tensor, probe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and input gradient of one train-mode pass; parameter gradients and running stats stay on the model."""
    model.train()
    images = images.clone().requires_grad_()
    logits = model(images)
    (logits * probe).sum().backward()  # a random probe, so no gradient direction is special
    return logits.detach(), images.grad


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with every parameter replaced by its gradient, so it converts like the weights do."""
    parameters = dict(model.named_parameters())
    return {key: parameters[key].grad if key in parameters else value for key, value in model.state_dict().items()}


def max_over_keys(modular: StateDict, tweet_as_modular: StateDict, keys: Sequence[str]) -> float:
    return max((relative_difference(modular[key], tweet_as_modular[key]) for key in keys), default=0.0)


def compare(tweet: nn.Sequential, modular: ConvMixer, images: torch.Tensor) -> dict[str, float]:
    import torch

    from convmixer.interop import tweet_to_modular

    differences = {"eval logits": relative_difference(modular.eval()(images), tweet.eval()(images))}
    probe = torch.randn(len(images), N_CLASSES, dtype=images.dtype)
    modular_logits, modular_input_grad = train_step(modular, images, probe)
    tweet_logits, tweet_input_grad = train_step(tweet, images, probe)
    differences["train logits"] = relative_difference(modular_logits, tweet_logits)
    tweet_state = tweet_to_modular(tweet.state_dict())
    buffers = [key for key, _ in modular.named_buffers()]
    differences["running stats"] = max_over_keys(modular.state_dict(), tweet_state, buffers)
    differences["input grad"] = relative_difference(modular_input_grad, tweet_input_grad)
    parameters = [key for key, _ in modular.named_parameters()]
    differences["param grad"] = max_over_keys(gradients(modular), tweet_to_modular(gradients(tweet)), parameters)
    return differences


def compare_even_kernel_crops(tweet: nn.Sequential, modular: ConvMixer, images: torch.Tensor) -> tuple[float, float]:
    """How the modular 'same' conv relates to the tweet's k//2 conv, whose output is one row and column larger."""
    features = modular.stem(images)
    same = modular.blocks[0].depthwise.conv(features)
    grown = tweet[1][0][0][0](features)  # the first mixer layer's depthwise conv
    return relative_difference(same, grown[..., 1:, 1:]), relative_difference(same, grown[..., :-1, :-1])


def check_case(case: Case, dtype: torch.dtype, seed: int, convert: Converter | None = None) -> Row:
    """One config in one dtype; `convert` copies the tweet's weights into the modular model (tweet_to_modular)."""
    import torch

    from convmixer.interop import tweet_to_modular

    tweet, modular = build_pair(case, dtype, seed, convert or tweet_to_modular)
    images = torch.randn(BATCH_SIZE, 3, case.image_size, case.image_size, dtype=dtype)
    row = Row(case, dtype)
    try:
        tweet.eval()(images)
    except RuntimeError as error:
        row.tweet_error = f"{type(error).__name__}: {error}"
        if case.depth > 0 and case.kernel_size % 2 == 0:
            with torch.no_grad():
                row.crop_first, row.crop_last = compare_even_kernel_crops(tweet, modular, images)
        return row
    row.differences = compare(tweet, modular, images)
    return row


def run_check(
    cases: Sequence[Case], dtypes: Sequence[torch.dtype], seed: int, convert: Converter | None = None
) -> list[Row]:
    with warnings.catch_warnings():
        # PyTorch warns that even-kernel 'same' padding pads asymmetrically: that is the point of those rows.
        warnings.filterwarnings("ignore", message="Using padding='same' with even kernel lengths")
        return [check_case(case, dtype, seed, convert) for dtype in dtypes for case in cases]


def format_number(value: float) -> str:
    return "0" if value == 0 else f"{value:.1e}"


def format_row(row: Row) -> str:
    label = f"{row.case!s:<22} {dtype_name(row.dtype):<8}"
    if row.tweet_error:
        return f"{label} {row.status:<7} not the same function: tweet fails with {row.tweet_error}"
    cells = " ".join(f"{format_number(row.differences[column]):>13}" for column in COLUMNS)
    bitwise = "yes" if all(value == 0 for value in row.differences.values()) else "no"
    return f"{label} {row.status:<7} {cells} {bitwise:>7}"


def even_kernel_summary(rows: Sequence[Row]) -> str:
    differing = [row for row in rows if row.status == "DIFFERS"]
    if not differing:
        return ""
    crop_first = max(row.crop_first for row in differing)
    crop_last = min(row.crop_last for row in differing)
    return textwrap.fill(
        f"{len(differing)} row(s) with an even kernel are not the same function. The tweet pads k//2 on every side, "
        "so for even k its depthwise conv outputs (H+1)x(W+1) and the residual `s[0](x)+x` raises a size mismatch. "
        "The modular model uses padding='same' (k/2-1 on top/left, k/2 on bottom/right) and keeps HxW: its "
        f"depthwise conv equals the tweet's conv with the first row and column dropped (max rel. diff "
        f"{format_number(crop_first)}), not with the last ones dropped (min rel. diff {format_number(crop_last)}).",
        width=116,
    )


def registry_summary() -> str:
    """Every registered config and the default model must build; the meta device skips allocating weights."""
    import torch

    from convmixer.model import ConvMixer, count_parameters
    from convmixer.registry import create_model, list_models

    with torch.device("meta"):
        models = {name: create_model(name) for name in list_models()}
        models["ConvMixer(256, 8) defaults"] = ConvMixer(256, 8)
    counts = (f"  {name:<30} {count_parameters(model) / 1e6:6.2f}M" for name, model in models.items())
    return "\n".join(["builds (parameters):", *counts])


def report(rows: Sequence[Row]) -> str:
    tolerances = ", ".join(f"{name} {tol:.0e}" for name, tol in TOLERANCES.items())
    header = f"{'config (dim/depth)':<22} {'dtype':<8} {'result':<7} " + " ".join(f"{c:>13}" for c in COLUMNS)
    lines = [
        f"max |modular - tweet| / max |tweet|; tolerance: {tolerances}",
        header + f" {'bitwise':>7}",
        *map(format_row, rows),
    ]
    n_failed = sum(row.status == "FAIL" for row in rows)
    n_passed = sum(row.status == "PASS" for row in rows)
    lines += [even_kernel_summary(rows), registry_summary(), f"{n_passed} passed, {n_failed} failed"]
    return "\n".join(line for line in lines if line)


MAX_TORCH_SEED = 2**64 - 1  # torch.manual_seed raises on anything larger; the check seeds torch directly


def parse_seed(text: str) -> int:
    # isdigit() alone lets through '²' and other digits int() refuses
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_TORCH_SEED:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}; expected an integer from 0 to {MAX_TORCH_SEED}")
    return int(text)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description="Check that the modular ConvMixer computes the tweet's function.")
    parser.add_argument("--dtype", choices=list(DTYPES), default="both", help="precision(s) to compare in")
    parser.add_argument("--quick", action="store_true", help=f"only {len(QUICK_CASES)} of the {len(CASES)} configs")
    parser.add_argument("--seed", type=parse_seed, default=0, help="seed for weights and inputs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, convert: Converter | None = None, one_thread: bool = False) -> int:
    """Print the comparison table; 0 if every comparable row is within tolerance, else 1.

    `convert` copies the tweet's weights into the modular model; a test swaps in a broken one to see the check fail.
    """
    args = parse_args(argv)
    import torch

    if one_thread:  # the models are tiny: OpenMP handoffs cost more than they save, worst on a busy CPU
        torch.set_num_threads(1)
    dtypes = [getattr(torch, name) for name in DTYPES[args.dtype]]
    rows = run_check(QUICK_CASES if args.quick else CASES, dtypes, args.seed, convert)
    print(report(rows))
    return 1 if any(row.status == "FAIL" for row in rows) else 0


def cli(argv: Sequence[str] | None = None, one_thread: bool = False) -> int:
    return run_cli(lambda args: main(args, one_thread=one_thread), argv, PROG)


if __name__ == "__main__":
    sys.exit(cli(one_thread=True))
