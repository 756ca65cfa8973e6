"""Decoding image files into one uint8 array (or reading their sizes), over every core the process may use.

Decoding 60,000 small JPEGs is almost all Python-level work in Pillow (header parsing, object set-up), so threads
do not help; processes do. The workers are forked: they inherit the parent's bytes (an archive read into memory)
and write straight into one shared anonymous mapping, so nothing but chunk bounds crosses a pipe, and a worker
starts in milliseconds (a spawned one would import torch first). Where fork is not available the decode runs
in this process. This module imports neither torch nor anything that does, so a forked worker runs only Pillow
and numpy.

Every image is checked against the size limits below before its pixels are decoded, from its header: one odd
file must not shrink a whole dataset, nor take a decoder's memory (a decompression bomb).
"""

import io
import math
import mmap
import multiprocessing
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_PER_WORKER = 1000  # below this many images per worker, forking costs more than it saves
CHUNKS_PER_WORKER = 4  # smaller chunks than workers, so a slow worker does not hold up the end
# An image smaller than this on a side is a mistake (an icon, a thumbnail), not a sample: ConvMixer's smallest
# patch grids need a few pixels, and upscaling 1x1 to the dataset's size would train on a flat colour.
MIN_SIDE = 8
# A larger image is refused before its pixels are decoded: 8192x8192 decodes to 200 MB of RGB, per decoder, and
# beyond lie scans and decompression bombs. Below Pillow's own limits (a warning at 89 MP, silenced as this one
# refuses such an image anyway; an error at 179 MP), so that the message can name the image's size.
MAX_PIXELS = 8192 * 8192
# Above this a JPEG is decoded at 1/2, 1/4 or 1/8 scale (Pillow's draft, in libjpeg's DCT), still at least the
# run's size a side, so a 64 MP photo costs a few MB instead of 200. Smaller images decode exactly as before.
DRAFT_PIXELS = 4096 * 4096


class DecodeFailure(Exception):
    """Image `index` could not be read (`verb` "read"), decoded ("decode") or was refused ("use", out of the size
    limits); `detail` says why, in one line."""

    def __init__(self, index: int, verb: str, detail: str) -> None:
        super().__init__(index, verb, detail)
        self.index, self.verb, self.detail = index, verb, detail


class ImageRefused(ValueError):
    """An image file outside the size limits (MIN_SIDE, MAX_PIXELS); the message says which, in one line."""


def too_large() -> str:
    side = math.isqrt(MAX_PIXELS)
    return f"the limit of {MAX_PIXELS:,} pixels ({side}x{side}) an image may have"


BYTES = (bytes, bytearray, memoryview)  # an image file's bytes; anything else open_image is given is a file object


def open_image(data: bytes | BinaryIO) -> Image.Image:
    """An image file (its bytes, or a file object: Pillow then reads only as far as the header) opened from its
    header, pixels not decoded yet; ImageRefused when its size is out of limits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS, lower, refuses it below
        try:
            image = Image.open(io.BytesIO(data) if isinstance(data, BYTES) else data)
        except Image.DecompressionBombError:  # twice Pillow's limit: it gives no size to name
            raise ImageRefused(f"it is over Pillow's decompression-bomb limit, so over {too_large()}") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise ImageRefused(f"it is {width}x{height}, over {too_large()}")
    if min(width, height) < MIN_SIDE:
        image.close()
        raise ImageRefused(f"it is {width}x{height}, under the {MIN_SIDE} px a side an image must have")
    return image


def image_size(data: bytes | BinaryIO) -> tuple[int, int]:
    """An image file's (width, height), read from its header; ImageRefused when out of limits. A file object is
    closed after."""
    try:
        with open_image(data) as image:
            return image.size
    finally:
        if not isinstance(data, BYTES):
            data.close()


def image_size_or_none(data: bytes | BinaryIO) -> tuple[int, int]:
    """image_size, or (0, 0) for a file bad_images=skip will leave out when it is streamed."""
    try:
        return image_size(data)
    except IMAGE_ERRORS:
        return 0, 0


def decode_image(data: bytes, size: int) -> np.ndarray:
    """One image file as a 3 x size x size uint8 array: RGB, centre-cropped to a square, resized (bilinear)."""
    with open_image(data) as image:
        if image.width * image.height > DRAFT_PIXELS:
            image.draft("RGB", (size, size))  # a no-op for formats other than JPEG
        image = image.convert("RGB")
        if image.size != (size, size):
            image = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
        return np.asarray(image).transpose(2, 0, 1)


# What decoding a bad image file raises: not an image, refused by the size limits, truncated, a corrupt stream.
IMAGE_ERRORS = (UnidentifiedImageError, ImageRefused, Image.DecompressionBombError, OSError, ValueError)


def image_problem(error: Exception) -> tuple[str, str]:
    """What an IMAGE_ERRORS error of an image file means, as (verb, detail): "decode" or "use" (out of the size
    limits), and why in one line."""
    if isinstance(error, UnidentifiedImageError):  # its message holds a BytesIO repr, which tells the user nothing
        return "decode", "not an image file Pillow can identify"
    if isinstance(error, (ImageRefused, Image.DecompressionBombError)):  # Pillow's: a frame too large at load
        return "use", str(error)
    return "decode", " ".join(str(error).split())  # a truncated file, a corrupt stream


# The job of the current pass over the images, set in the parent before the workers fork, so they inherit it
# instead of receiving it through a pipe: (how to read image i, what to make of its bytes, the output array).
_job: tuple[Callable[[int], bytes], Callable[[bytes], object], np.ndarray] | None = None


def _convert_range(start: int, stop: int) -> DecodeFailure | None:
    """Convert images start..stop-1 of the current job into its output; the first failure, or None."""
    read, convert, out = _job
    for i in range(start, stop):
        try:
            data = read(i)
        except OSError as error:
            return DecodeFailure(i, "read", error.strerror or str(error))
        try:
            out[i] = convert(data)
        except IMAGE_ERRORS as error:
            return DecodeFailure(i, *image_problem(error))
    return None


def fork_workers(count: int, cores: int) -> int:
    """How many forked workers decode `count` images on `cores` cores (0: decode in this process)."""
    if sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods():
        return 0
    workers = min(cores, count // MIN_PER_WORKER)
    return workers if workers > 1 else 0


def convert_all(
    read: Callable[[int], bytes],
    count: int,
    convert: Callable[[bytes], object],
    shape: tuple,
    dtype: type,
    workers: int,
) -> np.ndarray:
    """`convert` of images 0..count-1 (`read(i)` gives image i's file bytes), each an array of `shape`, as one
    count x *shape array, made by `workers` forked processes (0: here). Raises the DecodeFailure of the lowest
    failing index."""
    global _job
    length = count * math.prod(shape)
    nbytes = length * np.dtype(dtype).itemsize
    # MAP_SHARED anonymous memory: what a forked worker writes there, the parent sees.
    buffer = mmap.mmap(-1, max(nbytes, 1)) if workers else bytearray(nbytes)
    out = np.frombuffer(buffer, dtype, length).reshape(count, *shape)
    _job = (read, convert, out)
    try:
        if not workers:
            failures = [_convert_range(0, count)]
        else:
            Image.init()  # every plugin imported before the fork: a child never imports (the import lock)
            step = max(1, -(-count // (workers * CHUNKS_PER_WORKER)))
            bounds = [(start, min(start + step, count)) for start in range(0, count, step)]
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                failures = list(pool.map(_convert_range, *zip(*bounds, strict=True)))
    finally:
        _job = None
    failed = [failure for failure in failures if failure is not None]
    if failed:
        raise min(failed, key=lambda failure: failure.index)
    return out


def decode_all(read: Callable[[int], bytes], count: int, size: int, workers: int) -> np.ndarray:
    """Images 0..count-1 (`read(i)` gives image i's file bytes) as one count x 3 x size x size uint8 array,
    decoded by `workers` forked processes (0: here). Raises the DecodeFailure of the lowest failing index."""
    return convert_all(read, count, lambda data: decode_image(data, size), (3, size, size), np.uint8, workers)


def image_sizes(read: Callable[[int], BinaryIO], count: int, workers: int, skip_bad: bool = False) -> np.ndarray:
    """The (width, height) of images 0..count-1, from their headers (`read(i)` gives image i as a file object, read
    only as far as its header), as a count x 2 array, each image checked against the size limits; read by `workers`
    forked processes (0: here). Raises like decode_all; with `skip_bad`, a bad image is (0, 0) instead."""
    return convert_all(read, count, image_size_or_none if skip_bad else image_size, (2,), np.int64, workers)
