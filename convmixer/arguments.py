"""Argument checks shared by the model, the converters and the counters, and the one way every CLI reports them.

A bad argument raises a one-line ValueError that names the argument, its value and what is accepted, worded
the same everywhere, so a CLI can print it as it is. Every entry point (ablations.run, analysis.report,
convmixer.check, convmixer.count, the benchmarks) parses with `OneLineParser` and runs its main through
`run_cli`, so bad input of any kind ends the same way: one line `<program>: error: <message>` on stderr, exit 2.
A missing optional package is bad input too (`require`: one line naming the extra that installs it).
"""

import argparse
import importlib
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from types import ModuleType
from typing import NoReturn

# The autocast precisions by name, free of torch so that a run config and --help can list them;
# convmixer.runtime.AUTOCAST_DTYPES maps each to its dtype.
AUTOCAST_PRECISIONS = ("fp32", "bf16", "fp16")


def check_choice(name: str, value: object, accepted: Collection) -> None:
    if value not in accepted:
        raise ValueError(f"{name}={value!r} is not accepted; choose one of {', '.join(map(repr, accepted))}")


def check_integer(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is not accepted; it must be an integer >= {minimum}")


def check_patch_fits(patch_size: int, image_size: int, images: str = "") -> None:
    """The one check that a patch fits in the image (a larger one leaves no patch to embed); `images` says whose
    images they are, e.g. " of cifar10". The run config, the data loaders and the counter all call it."""
    if patch_size > image_size:
        raise ValueError(
            f"patch_size={patch_size} is not accepted: larger than the {image_size}x{image_size} images{images}"
        )


def patch_grid(image_size: int, patch_size: int, in_chans: int = 3) -> str:
    """How the patch embedding cuts an image, in the one wording the counter, the runner's console, a run's log and
    the report share: "input 3x32x32 -> 10x10 patches (the last 2 px of each side are dropped)". A stride-p conv
    without padding drops the pixels that do not fill a whole patch."""
    side, dropped = divmod(image_size, patch_size)
    grid = f"input {in_chans}x{image_size}x{image_size} -> {side}x{side} patches"
    return grid + (f" (the last {dropped} px of each side are dropped)" if dropped else "")


class MissingPackage(ImportError):
    """An optional package is not installed; the message is one line naming it and how to install it
    (`require` raises it; free of torch, for the CLIs' lists of bad-input errors)."""


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, an optional dependency of the `extra` feature, or raise MissingPackage saying how to get it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module.split(".")[0]:
            raise  # the package is there but broken: show the real error
        raise MissingPackage(
            f"{module.split('.')[0]} is not installed; it is needed for {extra}: "
            f"pip install 'convmixer-toolkit[{extra}]' (or pip install {module.split('.')[0]})"
        ) from None


class UsageError(ValueError):
    """A command line argparse refused; `run_cli` reports it like any other bad input."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are raised as UsageError instead of printing the usage and exiting, so that
    `run_cli` reports them in the one format of the toolkit (--help still prints and exits 0)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def run_cli(
    main: Callable[[Sequence[str] | None], int],
    argv: Sequence[str] | None,
    prog: str,
    errors: tuple[type[Exception], ...] = (),
) -> int:
    """main(argv)'s exit code; a UsageError or one of `errors` (the program's bad-input errors) instead prints
    `<prog>: error: <message>` as one line on stderr and returns 2, with no traceback."""
    try:
        return main(argv)
    except (UsageError, *errors) as error:
        message = " ".join(str(error).splitlines()) or type(error).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


def folder_path(text: str) -> Path:
    """An argparse type for a folder argument: any path but the empty one."""
    if not text.strip():  # Path("") is ".": output would land in the current folder
        raise argparse.ArgumentTypeError(f"{text!r} is not accepted: expected a folder path")
    return Path(text)
