"""Decoding image files into one uint8 array, over every core the process may use.

Decoding 60,000 small JPEGs is almost all Python-level work in Pillow (header parsing, object set-up), so threads
do not help; processes do. The workers are forked: they inherit the parent's bytes (an archive read into memory)
and write straight into one shared anonymous mapping, so nothing but chunk bounds crosses a pipe, and a worker
starts in milliseconds (a spawned one would import torch first). Where fork is not available the decode runs
in this process. This module imports neither torch nor anything that does, so a forked worker runs only Pillow
and numpy.
"""

import io
import mmap
import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_PER_WORKER = 1000  # below this many images per worker, forking costs more than it saves
CHUNKS_PER_WORKER = 4  # smaller chunks than workers, so a slow worker does not hold up the end


class DecodeFailure(Exception):
    """Image `index` could not be read (`verb` "read") or decoded ("decode"); `detail` says why, in one line."""

    def __init__(self, index: int, verb: str, detail: str) -> None:
        super().__init__(index, verb, detail)
        self.index, self.verb, self.detail = index, verb, detail


def decode_image(data: bytes, size: int) -> np.ndarray:
    """One image file as a 3 x size x size uint8 array: RGB, centre-cropped to a square, resized (bilinear)."""
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        if image.size != (size, size):
            image = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
        return np.asarray(image).transpose(2, 0, 1)


# The job of the current decode, set in the parent before the workers fork, so they inherit it instead of
# receiving it through a pipe: (how to read image i, the output array, the size).
_job: tuple[Callable[[int], bytes], np.ndarray, int] | None = None


def _decode_range(start: int, stop: int) -> DecodeFailure | None:
    """Decode images start..stop-1 of the current job into its output; the first failure, or None."""
    read, out, size = _job
    for i in range(start, stop):
        try:
            data = read(i)
        except OSError as error:
            return DecodeFailure(i, "read", error.strerror or str(error))
        try:
            out[i] = decode_image(data, size)
        except UnidentifiedImageError:  # its message holds a BytesIO repr, which tells the user nothing
            return DecodeFailure(i, "decode", "not an image file Pillow can identify")
        except (OSError, ValueError) as error:  # a truncated file, a corrupt stream
            return DecodeFailure(i, "decode", " ".join(str(error).split()))
    return None


def fork_workers(count: int, cores: int) -> int:
    """How many forked workers decode `count` images on `cores` cores (0: decode in this process)."""
    if sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods():
        return 0
    workers = min(cores, count // MIN_PER_WORKER)
    return workers if workers > 1 else 0


def decode_all(read: Callable[[int], bytes], count: int, size: int, workers: int) -> np.ndarray:
    """Images 0..count-1 (`read(i)` gives image i's file bytes) as one count x 3 x size x size uint8 array,
    decoded by `workers` forked processes (0: here). Raises the DecodeFailure of the lowest failing index."""
    global _job
    nbytes = count * 3 * size * size
    # MAP_SHARED anonymous memory: what a forked worker writes there, the parent sees.
    buffer = mmap.mmap(-1, max(nbytes, 1)) if workers else bytearray(nbytes)
    out = np.frombuffer(buffer, np.uint8, nbytes).reshape(count, 3, size, size)
    _job = (read, out, size)
    try:
        if not workers:
            failures = [_decode_range(0, count)]
        else:
            Image.init()  # every plugin imported before the fork: a child never imports (the import lock)
            step = max(1, -(-count // (workers * CHUNKS_PER_WORKER)))
            bounds = [(start, min(start + step, count)) for start in range(0, count, step)]
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                failures = list(pool.map(_decode_range, *zip(*bounds, strict=True)))
    finally:
        _job = None
    failed = [failure for failure in failures if failure is not None]
    if failed:
        raise min(failed, key=lambda failure: failure.index)
    return out
