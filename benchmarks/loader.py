"""The streaming loader's speed: images per second a CPU core cuts to training crops, from a folder or from shards,
decoded by Pillow or by torchvision.io.decode_jpeg.

It generates ImageNet-like JPEGs (--images of them, in 10 classes, quality 90, sizes and aspect ratios as
ImageNet's common ones: 500x375, 375x500, 500x333, 333x500, 640x480, 500x500; a smooth colour field under
per-pixel noise, about as costly to decode as a photograph of that size), writes them as an ImageFolder tree and
as WebDataset shards (ablations.data.make_shards), and reads every training image through the toolkit's own streamed
split (ablations.data.stream.ImageFiles: read, random-resized crop from the full-size file, flip, resize to
--size), in this process, one thread: img/s per core, what one loader worker delivers. Two decoders of a JPEG
in the worker: Pillow, and torchvision.io.decode_jpeg (decode=cpu's; the crop then cut on tensors); with --device
cuda also nvJPEG (decode=gpu: the worker reads the header, the GPU decodes and cuts). The best of --repeats passes
counts, so a busy machine's pauses drop out.

    python -m benchmarks.loader --out results/benchmarks/loader-cpu.json
"""

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.common import check_out, write_result
from convmixer.arguments import OneLineParser, check_integer, run_cli

if TYPE_CHECKING:
    from ablations.data.stream import ImageFiles

PROG = "python -m benchmarks.loader"
SIZES = ((500, 375), (375, 500), (500, 333), (333, 500), (640, 480), (500, 500))
CLASSES = 10


def write_images(root: Path, count: int) -> None:
    """`count` ImageNet-like JPEGs in root/{train,val}/<class>/ (val: one per class, the tree needs it)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in (("train", -(-count // CLASSES)), ("val", 1)):
        for label in range(CLASSES):
            folder = root / split / f"n{label:08d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                width, height = SIZES[(i + label) % len(SIZES)]
                field = Image.fromarray((rng.random((height // 16 + 1, width // 16 + 1, 3)) * 255).astype(np.uint8))
                smooth = np.asarray(field.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
                pixels = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"n{label:08d}_{i}.JPEG", quality=90)


def one_pass(files: "ImageFiles", epoch: int, device: str) -> float:
    """Seconds to cut every training image of `files` once, as a loader worker (and, for decode=gpu, the device)."""
    import torch

    from ablations.data.stream import collate, finish_on_device

    start = time.perf_counter()
    batch = collate([files[(epoch, i)] for i in range(len(files))])
    images = finish_on_device(batch, files.size, torch.device(device), train=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if images.shape != (len(files), 3, files.size, files.size) or any(batch.problems):
        raise ValueError(f"the loader gave {tuple(images.shape)} images, problems {set(batch.problems)}")
    return seconds


def streamed_files(root: Path, decode: str, decoder: str, size: int) -> "ImageFiles":
    from ablations.config import RunConfig
    from ablations.data.sources import load_splits
    from ablations.data.stream import ImageFiles

    cfg = RunConfig(dataset="imagefolder", data_root=str(root), image_size=size, scale=0.08, decode=decode)
    files = ImageFiles(load_splits(cfg, resident_bytes=0).train, scale=cfg.scale, flip=cfg.hflip, decode=decode)
    files.cpu_decoder = decoder
    return files


def variants(device: str) -> list[tuple[str, str, str]]:
    """(what the table calls it, decode, ImageFiles.cpu_decoder) of each decoder measured on `device`."""
    cpu = [("Pillow, in the worker", "cpu", "pillow"), ("torchvision decode_jpeg, in the worker", "cpu", "torchvision")]
    return cpu + ([("nvJPEG (decode=gpu)", "gpu", "torchvision")] if device.startswith("cuda") else [])


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="training images to generate (default 300)")
    parser.add_argument("--size", type=int, default=224, help="the crop's side in px (default 224)")
    parser.add_argument("--repeats", type=int, default=3, help="passes per variant; the best counts (default 3)")
    parser.add_argument("--device", default="cpu", help="where decode=gpu decodes: cpu (torchvision), cuda (nvJPEG)")
    parser.add_argument("--out", type=Path, help="write the result as JSON (and a Markdown twin beside it)")
    args: argparse.Namespace = parser.parse_args(argv)
    for name in ("images", "size", "repeats"):
        check_integer(f"--{name}", getattr(args, name), minimum=CLASSES if name == "images" else 1)
    check_out(args.out)
    import torch

    from ablations.data.make_shards import write_shards

    torch.set_num_threads(1)  # one core: what one loader worker has
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp) / "tree", args.images)
        write_shards(Path(tmp) / "tree", Path(tmp) / "shards")
        cases = [
            (layout, name, streamed_files(Path(tmp) / folder, decode, decoder, args.size))
            for layout, folder in (("folder", "tree"), ("shards", "shards"))
            for name, decode, decoder in variants(args.device)
        ]
        best = [math.inf] * len(cases)
        for epoch in range(args.repeats):  # each pass of every case in turn, so that a busy spell hits them alike
            for k, (_, _, files) in enumerate(cases):
                best[k] = min(best[k], one_pass(files, epoch, args.device))
        for (layout, name, files), seconds in zip(cases, best, strict=True):
            speed = len(files) / seconds
            rows.append({"layout": layout, "decoder": name, "images": len(files), "images_per_s": round(speed, 1)})
            print(f"{layout:7} {name:40} {speed:7.1f} img/s per core")
    from convmixer.runtime import cpu_name, hardware_name

    device = torch.device(args.device)
    hardware = cpu_name() + (f", {hardware_name(device)}" if device.type == "cuda" else ", no GPU used")
    load = round(os.getloadavg()[0], 2)
    table = "| layout | decoder | img/s per core |\n| --- | --- | ---: |\n" + "".join(
        f"| {row['layout']} | {row['decoder']} | {row['images_per_s']:.0f} |\n" for row in rows
    )
    result = {"size": args.size, "hardware": hardware, "load_average": load, "torch": torch.__version__, "rows": rows}
    if args.out is not None:
        about = f"{rows[0]['images']} generated ImageNet-like JPEGs, {args.size} px crops; {hardware}, load {load}"
        write_result(args.out, argv, result, f"\n{about}\n\n{table}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG, (ValueError,))


if __name__ == "__main__":
    sys.exit(cli())
