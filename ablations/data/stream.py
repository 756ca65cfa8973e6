"""The per-image work of a streamed split, done in DataLoader workers: read an image file, check it, crop and size it.

A training image gets timm's random-resized crop (area fraction uniform in [scale, 1], aspect ratio log-uniform
in [3/4, 4/3], torchvision's draw) cut from the full-resolution image and resized (bilinear, or bilinear or bicubic
at random: train_interpolation), then a flip; a test image timm's evaluation
transform with the ConvMixers' settings (convmixer.transforms.EvalTransform, convmixer.registry.CONVMIXER_EVAL:
the shorter side resized to size / crop_pct, a centre crop). The
draws of image i in epoch e come from (seed, e, i) alone, so an epoch replays exactly whichever worker, process or
order reads it, and a resumed run sees the crops an uninterrupted one would have. What stays batched on the device
(RandAugment, mixup, cutmix, erasing, normalisation) is ablations.data.augment's.

`decode` says who decodes a JPEG: "cpu", Pillow in the worker (measured 5-11 % faster than
torchvision.io.decode_jpeg in the worker here, crop and resize included: docs/benchmarks.md); "gpu", nvJPEG
through torchvision.io.decode_jpeg on the run's device, the worker reading only the file and its header (the crop
is drawn from the header's size, cut and resized on the device). A file torchvision does not take (not a JPEG,
CMYK, over DRAFT_PIXELS) is Pillow's, in the worker, either way. Every file's header is read by Pillow first, for
the size limits and the crop's draw.

A bad file (unreadable, not an image, truncated, out of ablations.data.decode's size limits) is not raised in the
worker, where DataLoader would wrap it in a traceback: the sample carries its one-line problem, and the loader
raises it or, with bad_images=skip, drops the image and counts it (ablations.data.loaders).
"""

import io
import time
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import RandomResizedCrop

from ablations.data.decode import DRAFT_PIXELS, IMAGE_ERRORS, image_problem, open_image
from ablations.data.sources import FileSplit
from convmixer.registry import CONVMIXER_EVAL
from convmixer.transforms import EvalTransform

TRAIN_RATIO = (3 / 4, 4 / 3)  # timm's and torchvision's default aspect ratios of the random-resized crop
JPEG_MODES = ("L", "RGB")  # JPEG colour modes torchvision (and nvJPEG) decode to RGB; CMYK and others go to Pillow


class Crop(NamedTuple):
    top: int
    left: int
    height: int
    width: int
    flip: bool
    bicubic: bool = False  # resized bicubically (train_interpolation "random"), else bilinearly


def draw_crop(height: int, width: int, scale: float, flip: bool, seed: int, random_interpolation: bool = False) -> Crop:
    """The random-resized crop and flip of one training image of height x width, drawn by torchvision's
    RandomResizedCrop.get_params from a generator seeded with `seed` (the global one, forked: nothing else moves),
    and with `random_interpolation` its resize's (bilinear or bicubic, as timm's train_interpolation "random")."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # the CPU's only: torch.manual_seed would reseed CUDA's too
        box = RandomResizedCrop.get_params(torch.empty(1, height, width, device="meta"), [scale, 1.0], TRAIN_RATIO)
        flipped = flip and bool(torch.rand(1) < 0.5)
        bicubic = random_interpolation and bool(torch.rand(1) < 0.5)
    return Crop(*box, flipped, bicubic)


def crop_seed(epoch_seed: int, index: int) -> int:
    """Image `index`'s seed in the epoch whose seed is `epoch_seed` (63 bits, ablations.data.loaders.derived_seed)."""
    return (epoch_seed + index * 0x9E3779B97F4A7C15) % (1 << 63)  # the golden-ratio step spreads neighbours apart


class Sample(NamedTuple):
    """A worker's answer for one image: `image`, 3 x size x size uint8, or, for the device to decode, the file's
    bytes (`encoded`) with its `crop` (a test image: all zeros); `problem`, one line, when the file is bad."""

    image: torch.Tensor
    label: int
    encoded: bool
    crop: Crop
    problem: str
    seconds: float


class Batch(NamedTuple):
    """Samples collated: the images the workers finished stacked in one tensor (one pin, one copy to the device),
    the encoded files for the device's decoder as a list (they differ in length); `encoded` says, in batch order,
    which of the two each image is in."""

    finished: torch.Tensor  # uint8, the finished images in batch order: N_finished x 3 x size x size
    files: list[torch.Tensor]  # the encoded images' bytes, in batch order
    labels: torch.Tensor
    encoded: list[bool]
    crops: list[Crop]
    problems: list[str]
    seconds: float


def collate(samples: list[Sample]) -> Batch:
    images, labels, encoded, crops, problems, seconds = zip(*samples, strict=True)
    finished = [image for image, is_file in zip(images, encoded, strict=True) if not is_file]
    files = [image for image, is_file in zip(images, encoded, strict=True) if is_file]
    stacked = torch.stack(finished) if finished else torch.empty(0, dtype=torch.uint8)
    return Batch(stacked, files, torch.tensor(labels), list(encoded), list(crops), list(problems), sum(seconds))


NO_CROP = Crop(0, 0, 0, 0, False)


class ImageFiles(Dataset):
    """The image files of one split (ablations.data.sources.FileSplit), streamed: item (epoch_seed, i) is image i
    as a `Sample`. `scale`, `flip` and `random_interpolation` are the training crop's (scale None: a test split,
    timm's eval transform). `decode`
    "cpu" decodes a JPEG with `cpu_decoder` in the worker, "gpu" leaves it to `finish_on_device`; other files are
    Pillow's either way."""

    cpu_decoder = "pillow"  # "torchvision": decode_jpeg in the worker, measured slower (benchmarks/loader.py)

    def __init__(
        self,
        files: FileSplit,
        *,
        scale: float | None = None,
        flip: bool = False,
        random_interpolation: bool = False,
        decode: str = "cpu",
    ) -> None:
        self.reader, self.paths, self.labels, self.size = files.reader, files.paths, files.labels, files.size
        self.scale, self.flip, self.random_interpolation, self.decode = scale, flip, random_interpolation, decode
        self.eval_geometry = EvalTransform(self.size, CONVMIXER_EVAL).geometry()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int]) -> Sample:
        epoch_seed, i = item
        start = time.perf_counter()
        image, encoded, crop, problem = torch.zeros(3, self.size, self.size, dtype=torch.uint8), False, NO_CROP, ""
        try:
            data = self.reader.read(self.paths[i])
        except OSError as error:
            problem = f"cannot read {self.reader.where(self.paths[i])} ({error.strerror or error})"
        else:
            try:
                image, encoded, crop = self.prepare(data, crop_seed(epoch_seed, i))
            except IMAGE_ERRORS as error:
                verb, detail = image_problem(error)
                problem = f"cannot {verb} {self.reader.where(self.paths[i])}: {detail}"
            except RuntimeError as error:  # torchvision's decoder: "decode_jpeg, <its source file>, <why>"
                problem = f"cannot decode {self.reader.where(self.paths[i])}: {str(error).rsplit(', ', 1)[-1]}"
        return Sample(image, int(self.labels[i]), encoded, crop, problem, time.perf_counter() - start)

    def prepare(self, data: bytes, seed: int) -> tuple[torch.Tensor, bool, Crop]:
        """(the finished image, False, its crop) or, for the device, (the file's bytes, True, its crop)."""
        with open_image(data) as image:
            crop, full = NO_CROP, image.size
            if self.scale is not None:
                crop = draw_crop(image.height, image.width, self.scale, self.flip, seed, self.random_interpolation)
            pixels = image.width * image.height
            torchvision_takes = image.format == "JPEG" and image.mode in JPEG_MODES and pixels <= DRAFT_PIXELS
            if torchvision_takes and (self.decode == "gpu" or self.cpu_decoder == "torchvision"):
                encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                if self.decode == "gpu":
                    return encoded, True, crop
                return self.cut(decode_jpeg_rgb([encoded], torch.device("cpu"))[0], crop), False, crop
            if pixels > DRAFT_PIXELS:  # libjpeg scales by 1/2..1/8: still >= size a side
                image.draft("RGB", (self.size, self.size))
                crop = rescaled(crop, image.size, full)
            image = image.convert("RGB")
            image = self.eval_geometry(image) if self.scale is None else self.train_crop(image, crop)
            return torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy()), False, crop

    def cut(self, image: torch.Tensor, crop: Crop) -> torch.Tensor:
        """A decoded uint8 image cut as this split's images are: the training crop, or the eval transform."""
        return eval_cut(image, self.size) if self.scale is None else train_cut(image, crop, self.size)

    def train_crop(self, image: Image.Image, crop: Crop) -> Image.Image:
        box = (crop.left, crop.top, crop.left + crop.width, crop.top + crop.height)
        resample = Image.Resampling.BICUBIC if crop.bicubic else Image.Resampling.BILINEAR
        image = image.resize((self.size, self.size), resample, box=box)
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if crop.flip else image


def rescaled(crop: Crop, size: tuple[int, int], full: tuple[int, int]) -> Crop:
    """A crop drawn on the full-size image, in the pixels of its draft (a 1/2..1/8 scale decode)."""
    sx, sy = size[0] / full[0], size[1] / full[1]
    top, left = round(crop.top * sy), round(crop.left * sx)
    height, width = max(1, round(crop.height * sy)), max(1, round(crop.width * sx))
    return crop._replace(top=top, left=left, height=min(height, size[1] - top), width=min(width, size[0] - left))


def finish_on_device(batch: Batch, size: int, device: torch.device, train: bool) -> torch.Tensor:
    """The batch's images as one N x 3 x size x size uint8 tensor on `device`: the ones the workers finished as
    they are, the encoded ones decoded there by torchvision.io.decode_jpeg (nvJPEG on CUDA) and cut like the
    workers' (train: the crop, resized, then the flip; test: the eval transform)."""
    finished = batch.finished.to(device, non_blocking=True)
    if not batch.files:  # every image finished in the workers (decode=cpu): the batch as it came
        return finished
    out = torch.empty(len(batch.encoded), 3, size, size, dtype=torch.uint8, device=device)
    todo = [i for i, encoded in enumerate(batch.encoded) if encoded]
    for i, image in zip(todo, decode_jpeg_rgb(batch.files, device), strict=True):
        out[i] = train_cut(image, batch.crops[i], size) if train else eval_cut(image, size)
    for image, i in zip(finished, (i for i, encoded in enumerate(batch.encoded) if not encoded), strict=True):
        out[i] = image  # a file nvJPEG does not take (not a JPEG, CMYK), among the encoded
    return out


def decode_jpeg_rgb(files: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """JPEG files (uint8 tensors of their bytes) decoded to RGB uint8 on `device` by torchvision (nvJPEG on CUDA)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders for TorchCodec's (docs/data.md)
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(files, mode=ImageReadMode.RGB, device=device)


def train_cut(image: torch.Tensor, crop: Crop, size: int) -> torch.Tensor:
    region = image[:, crop.top : crop.top + crop.height, crop.left : crop.left + crop.width]
    resized = resize_image(region, (size, size), "bicubic" if crop.bicubic else "bilinear")
    return resized.flip(-1) if crop.flip else resized


def eval_cut(image: torch.Tensor, size: int) -> torch.Tensor:
    """EvalTransform on a uint8 tensor with torchvision's tensor kernels, so sized and placed by the rule timm's
    transform applies to a PIL image (the shorter side to size / crop_pct, the longer one truncated; torchvision's
    centre offsets). Its pixels differ from Pillow's by the resize arithmetic alone (docs/data.md)."""
    from torchvision.transforms.v2 import functional

    transform = EvalTransform(size, CONVMIXER_EVAL)
    mode = functional.InterpolationMode(CONVMIXER_EVAL.interpolation)
    return functional.center_crop(functional.resize(image, [transform.resize_size], mode, antialias=True), [size])


def resize_image(image: torch.Tensor, shape: tuple[int, int], mode: str) -> torch.Tensor:
    """A uint8 C x H x W image resized (`mode`, antialiased, as Pillow) to `shape`, uint8."""
    resized = F.interpolate(image[None].float(), size=shape, mode=mode, antialias=True, align_corners=False)
    return resized[0].round().clamp(0, 255).to(torch.uint8)


def gpu_decode_available() -> bool:
    """Whether decode=auto decodes on the GPU: CUDA is there and torchvision's decode_jpeg runs on it."""
    if not torch.cuda.is_available():
        return False
    probe = io.BytesIO()
    Image.new("RGB", (8, 8)).save(probe, "JPEG")
    try:
        decode_jpeg_rgb([torch.frombuffer(bytearray(probe.getvalue()), dtype=torch.uint8)], torch.device("cuda"))
    except (RuntimeError, NotImplementedError):  # a torchvision built without nvJPEG
        return False
    return True


def resolve_decode(decode: str, device: torch.device, available: Callable[[], bool] = gpu_decode_available) -> str:
    """ "cpu" or "gpu": what decode=`decode` means for a run on `device` (auto: gpu where it can run)."""
    if decode == "auto":
        return "gpu" if device.type == "cuda" and available() else "cpu"
    return decode
