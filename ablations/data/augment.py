"""Training augmentation for a whole batch at once, on the batch's device (airbench style).

The reference recipe (torchvision's RandomResizedCrop, flip, RandAugment, colour jitter and random erasing, plus
timm's mixup/cutmix) is rebuilt from batched tensor ops: every sample gets its own random draw, but there is no
Python loop over images, only over the list of operations. Every draw comes from the generator passed in, so a
batch is a pure function of (images, labels, generator state): seed the generator from (seed, epoch) and an
epoch replays exactly. Images enter as uint8, are worked on as floats in [0, 1], and leave normalised.
"""

import math

import torch
import torch.nn.functional as F

from ablations.config import RunConfig

# RandAugment's operations, in torchvision's order and with its ranges at magnitude 30 (of 0..30).
RANDAUG_OPS = (
    "identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast",
    "sharpness", "posterize", "solarize", "autocontrast", "equalize",
)  # fmt: skip
MAX_SHEAR = 0.3
MAX_TRANSLATE = 150 / 331  # fraction of the image side
MAX_ROTATE_DEGREES = 30.0
MAX_ENHANCE = 0.9  # brightness/color/contrast/sharpness factor 1 +- this
MAX_POSTERIZE_BITS_REMOVED = 4
ERASE_AREA = (0.02, 0.33)  # torchvision RandomErasing defaults
ERASE_LOG_ASPECT = (math.log(0.3), math.log(3.3))
# The steps of the recipe a streamed split's loader workers do on each full-size image before the batch reaches
# the device (ablations.data.stream): the random-resized crop and the flip. The device does the rest.
WORKER_STEPS = frozenset({"crop", "flip"})


def per_sample(values: torch.Tensor) -> torch.Tensor:
    """A (B,) tensor shaped (B, 1, 1, 1) to broadcast over images."""
    return values.view(-1, 1, 1, 1)


def uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, device=gen.device)


def coin(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device) < p


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] (or uint8) to (x - mean) / std per channel; mean and std shaped (C, 1, 1)."""
    if images.dtype == torch.uint8:
        images = images.float() / 255
    return (images - mean) / std


# --- geometry: one batched affine warp; each theta maps output coordinates (in [-1, 1]) to input ones ---


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_resized_crop(images: torch.Tensor, min_area: float, gen: torch.Generator) -> torch.Tensor:
    """A square crop of area fraction uniform in [min_area, 1] at a random place, resized back to full size."""
    n = len(images)
    side = uniform(n, min_area, 1.0, gen).sqrt()
    centre = (torch.rand(n, 2, generator=gen, device=gen.device) * 2 - 1) * (1 - side[:, None])
    zero = torch.zeros_like(side)
    theta = torch.stack([torch.stack([side, zero, centre[:, 0]], 1), torch.stack([zero, side, centre[:, 1]], 1)], 1)
    return warp(images, theta)


def random_hflip(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.where(per_sample(coin(len(images), 0.5, gen)), images.flip(-1), images)


def randaug_affine(op: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Per-sample 2 x 3 matrices: the geometric op's at signed level in [-1, 1], the identity for other ops."""

    def where_op(name: str, value: torch.Tensor) -> torch.Tensor:
        return torch.where(op == RANDAUG_OPS.index(name), value, torch.zeros_like(value))

    angle = where_op("rotate", torch.deg2rad(MAX_ROTATE_DEGREES * level))
    shear_x, shear_y = where_op("shear_x", MAX_SHEAR * level), where_op("shear_y", MAX_SHEAR * level)
    shift_x = where_op("translate_x", 2 * MAX_TRANSLATE * level)  # [-1, 1] spans the image: 2 units per side
    shift_y = where_op("translate_y", 2 * MAX_TRANSLATE * level)
    cos, sin = angle.cos(), angle.sin()
    row_x = torch.stack([cos, shear_x - sin, shift_x], 1)
    row_y = torch.stack([sin + shear_y, cos, shift_y], 1)
    return torch.stack([row_x, row_y], 1)


# --- colour: each takes images in [0, 1] and a per-sample factor or level, and returns images in [0, 1] ---


def grayscale(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def blend(base: torch.Tensor, images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance: factor 0 gives `base`, 1 the images, more than 1 pushes further away from `base`."""
    return (base + per_sample(factor) * (images - base)).clamp(0, 1)


def brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(torch.zeros_like(images), images, factor)


def saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(grayscale(images), images, factor)


def contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(grayscale(images).mean((1, 2, 3), keepdim=True), images, factor)


def sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(smoothed(images), images, factor)


def enhance(images: torch.Tensor, op: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """RandAugment's four ImageEnhance ops (brightness, color, contrast, sharpness) in one blend: each image
    blends with its own op's base, and an image whose op is none of them comes back as it is. Per image the same
    arithmetic as the op alone, with one blend over the batch instead of four."""
    base = torch.zeros_like(images)  # brightness blends with black
    gray = grayscale(images)
    for name, op_base in (("color", gray), ("contrast", gray.mean((1, 2, 3), keepdim=True)),
                          ("sharpness", smoothed(images))):  # fmt: skip
        base = torch.where(per_sample(op == RANDAUG_OPS.index(name)), op_base, base)
    chosen = (op >= RANDAUG_OPS.index("brightness")) & (op <= RANDAUG_OPS.index("sharpness"))
    return torch.where(per_sample(chosen), blend(base, images, factor), images)


def smoothed(images: torch.Tensor) -> torch.Tensor:
    """PIL's 3x3 smoothing filter (1s around a 5, over 13), leaving the one-pixel border as it is (like PIL):
    ImageEnhance.Sharpness's base. A 3x3 box sum from shifted slices, rows then columns, plus 4x the centre: built
    without a kernel tensor (writing the 5 into one from Python was a host sync per call on CUDA), and several
    times faster on a CPU than a grouped conv2d on 3 channels."""
    rows = images[..., :-2, :] + images[..., 1:-1, :] + images[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    smooth = images.clone()
    smooth[..., 1:-1, 1:-1] = (box + 4 * images[..., 1:-1, 1:-1]) / 13
    return smooth


def to_levels(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] as integer grey levels 0..255 (int64), for the ops defined on 8-bit pixels."""
    return (images * 255).round().long()


def posterize(images: torch.Tensor, bits_removed: torch.Tensor) -> torch.Tensor:
    mask = per_sample((255 >> bits_removed) << bits_removed)
    return (to_levels(images) & mask).float() / 255


def solarize(images: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert pixels above the threshold (strictly, so threshold 1 is the identity)."""
    return torch.where(images > per_sample(threshold), 1 - images, images)


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to span [0, 1]; a flat channel is left as it is."""
    low, high = images.amin((2, 3), keepdim=True), images.amax((2, 3), keepdim=True)
    flat = high <= low
    return torch.where(flat, images, (images - low) / torch.where(flat, 1, high - low))


def equalize(images: torch.Tensor) -> torch.Tensor:
    """PIL's histogram equalisation per channel of each image, from 256-bin histograms built in one scatter_add
    (not bincount, which reads its input's min and max back to the host: two syncs per call on CUDA)."""
    n, c, h, w = images.shape
    levels = to_levels(images).view(n * c, h * w)
    histogram = torch.zeros(n * c, 256, dtype=torch.long, device=images.device)
    histogram.scatter_add_(1, levels, torch.ones_like(levels))
    # PIL's step: the pixels outside the brightest occupied bin, spread over 255 levels.
    brightest_count = histogram.gather(1, levels.amax(1, keepdim=True))
    step = (h * w - brightest_count) // 255
    lut = (histogram.cumsum(1) - histogram + step // 2) // step.clamp(min=1)  # cumsum shifted right by one bin
    equalised = lut.clamp(max=255).gather(1, levels).float() / 255
    return torch.where(step > 0, equalised, images.reshape(n * c, h * w)).view(n, c, h, w)


def rand_augment(images: torch.Tensor, magnitude: int, gen: torch.Generator) -> torch.Tensor:
    """One RandAugment round: each image gets one op, drawn uniformly, at `magnitude` (0..30) with a random sign."""
    n = len(images)
    op = torch.randint(len(RANDAUG_OPS), (n,), generator=gen, device=gen.device)
    level = magnitude / 30 * torch.where(coin(n, 0.5, gen), -1.0, 1.0)  # signed, in [-1, 1]
    strength = torch.full((n,), magnitude / 30, device=images.device)  # unsigned, for the unsigned ops
    factor = 1 + MAX_ENHANCE * level
    results = {
        "posterize": lambda x: posterize(x, (MAX_POSTERIZE_BITS_REMOVED * strength).round().long()),
        "solarize": lambda x: solarize(x, 1 - strength),
        "autocontrast": autocontrast,
        "equalize": equalize,
    }
    geometric = (op >= RANDAUG_OPS.index("shear_x")) & (op <= RANDAUG_OPS.index("rotate"))
    images = torch.where(per_sample(geometric), warp(images, randaug_affine(op, level)), images)
    images = enhance(images, op, factor)  # each image has one op: the enhance ops see the images as they came
    for name, apply in results.items():
        images = torch.where(per_sample(op == RANDAUG_OPS.index(name)), apply(images), images)
    return images


def color_jitter(images: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """torchvision ColorJitter(s, s, s): brightness, contrast and saturation factors uniform in 1 +- s."""
    n = len(images)
    for adjust in (brightness, contrast, saturation):
        images = adjust(images, uniform(n, 1 - strength, 1 + strength, gen))
    return images


# --- after normalisation: random erasing (as the reference) and mixing (as timm, which applies it last) ---


def box_masks(
    size: tuple[int, int], top: torch.Tensor, left: torch.Tensor, bottom: torch.Tensor, right: torch.Tensor
) -> torch.Tensor:
    """(B, 1, H, W) masks, true inside each sample's rectangle of rows [top, bottom) and columns [left, right)."""
    rows = torch.arange(size[0], device=top.device).view(1, -1, 1)
    cols = torch.arange(size[1], device=top.device).view(1, 1, -1)
    inside_rows = (rows >= top.view(-1, 1, 1)) & (rows < bottom.view(-1, 1, 1))
    inside_cols = (cols >= left.view(-1, 1, 1)) & (cols < right.view(-1, 1, 1))
    return (inside_rows & inside_cols).unsqueeze(1)


def random_erase(images: torch.Tensor, probability: float, gen: torch.Generator) -> torch.Tensor:
    """torchvision RandomErasing(probability), as the reference: one rectangle per chosen image set to 0 (the mean
    colour, after normalisation). Where torchvision retries a draw that does not fit, the rectangle is clipped."""
    n, _, h, w = images.shape
    area = uniform(n, *ERASE_AREA, gen) * h * w
    aspect = uniform(n, *ERASE_LOG_ASPECT, gen).exp()
    height = (area * aspect).sqrt().round().long().clamp(1, h)
    width = (area / aspect).sqrt().round().long().clamp(1, w)
    top = (torch.rand(n, generator=gen, device=gen.device) * (h - height + 1)).long()
    left = (torch.rand(n, generator=gen, device=gen.device) * (w - width + 1)).long()
    erase = box_masks((h, w), top, left, top + height, left + width) & per_sample(coin(n, probability, gen))
    return images.masked_fill(erase, 0.0)


def beta(alpha: float, n: int, gen: torch.Generator) -> torch.Tensor:
    """n draws of Beta(alpha, alpha) from `gen` (torch.distributions cannot take a generator): G1 / (G1 + G2)."""
    gammas = torch._standard_gamma(torch.full((2, n), alpha, dtype=torch.float64, device=gen.device), generator=gen)
    return (gammas[0] / gammas.sum(0).clamp(min=torch.finfo(torch.float64).tiny)).float()


def mix(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, mixup: float, cutmix: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup and/or cutmix with a per-sample lambda; each image mixes with its mirror in the batch (as timm).

    With both on, each sample picks one of the two with equal odds. Returns soft targets (B, num_classes) that
    weigh the two labels by the share of each image actually used, so each row sums to 1.
    """
    n, _, h, w = images.shape
    partner = images.flip(0)
    use_cutmix = coin(n, 0.5, gen) if mixup and cutmix else torch.full((n,), bool(cutmix), device=images.device)
    # (An alpha of 0 is off: its draws are replaced by 1.0 and never used.)
    lam = torch.where(use_cutmix, beta(cutmix or 1.0, n, gen), beta(mixup or 1.0, n, gen))
    # cutmix: a box covering 1 - lam of the image, centred anywhere and clipped at the borders.
    cut_h, cut_w = ((1 - lam).sqrt() * h).round().long(), ((1 - lam).sqrt() * w).round().long()
    centre_y = torch.randint(h, (n,), generator=gen, device=gen.device)
    centre_x = torch.randint(w, (n,), generator=gen, device=gen.device)
    top, left = (centre_y - cut_h // 2).clamp(0, h), (centre_x - cut_w // 2).clamp(0, w)
    bottom, right = (centre_y + cut_h - cut_h // 2).clamp(0, h), (centre_x + cut_w - cut_w // 2).clamp(0, w)
    box = box_masks((h, w), top, left, bottom, right)
    cut = torch.where(box, partner, images)
    blended = per_sample(lam) * images + per_sample(1 - lam) * partner
    mixed = torch.where(per_sample(use_cutmix), cut, blended)
    kept = torch.where(use_cutmix, 1 - ((bottom - top) * (right - left)).float() / (h * w), lam)
    # (F.one_hot on the CPU checks the labels' range with two reads to the host; the CPU-side sync guard of
    # tests/test_host_sync.py would flag them, so scatter the ones directly, as F.one_hot does on CUDA.)
    one_hot = torch.zeros(n, num_classes, device=labels.device).scatter_(1, labels[:, None], 1.0)
    targets = kept[:, None] * one_hot + (1 - kept[:, None]) * one_hot.flip(0)
    return mixed, targets


class Augment:
    """The training-time pipeline of one RunConfig: uint8 batch in, normalised images and targets out. `done`: the
    steps done before the batch arrives (WORKER_STEPS for streamed data), which this pipeline leaves out."""

    def __init__(
        self,
        cfg: RunConfig,
        num_classes: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        *,
        done: frozenset[str] = frozenset(),
    ) -> None:
        self.cfg, self.num_classes, self.done = cfg, num_classes, done
        self.mean, self.std = mean.view(-1, 1, 1), std.view(-1, 1, 1)

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        x = images.float() / 255
        if cfg.scale < 1 and "crop" not in self.done:
            x = random_resized_crop(x, cfg.scale, gen)
        if cfg.hflip and "flip" not in self.done:
            x = random_hflip(x, gen)
        for _ in range(cfg.randaug_n):
            x = rand_augment(x, cfg.randaug_m, gen)
        if cfg.jitter:
            x = color_jitter(x, cfg.jitter, gen)
        x = normalise(x, self.mean, self.std)
        if cfg.reprob:
            x = random_erase(x, cfg.reprob, gen)
        if cfg.mixup or cfg.cutmix:
            return mix(x, labels, self.num_classes, cfg.mixup, cfg.cutmix, gen)
        return x, labels
