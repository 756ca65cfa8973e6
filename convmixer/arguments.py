"""Argument checks shared by the model, the converters and the counters.

A bad argument raises a one-line ValueError that names the argument, its value and what is accepted, worded
the same everywhere, so a CLI can print it as it is.
"""

from collections.abc import Collection


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
