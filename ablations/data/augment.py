"""Training augmentation for a whole batch at once, on the batch's device (airbench style).

The reference recipe (torchvision's RandomResizedCrop, flip, RandAugment, colour jitter and random erasing, plus
timm's mixup/cutmix) is rebuilt from batched tensor ops: every sample gets its own random draw, but there is no
Python loop over images, only over the list of operations. Every draw comes from the generator passed in, so a
batch is a pure function of (images, labels, generator state): seed the generator from (seed, epoch) and an
epoch replays exactly. Images enter as uint8, are worked on as floats in [0, 1], and leave normalised.
On several processes each draw is made for the whole global batch, as one process makes it, and each process keeps
its own images' rows (`Draws`): a run's augmentation does not depend on how many processes share its batches.
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
# timm's RandAugment ("rand-...-inc1", rand_augment_transform): its op set, translation and SolarizeAdd at level 10.
TIMM_RANDAUG_OPS = (
    "autocontrast", "equalize", "invert", "rotate", "posterize", "solarize", "solarize_add", "color", "contrast",
    "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y",
)  # fmt: skip
TIMM_MAX_TRANSLATE, TIMM_SOLARIZE_ADD = 0.45, 110
ERASE_AREA = (0.02, 0.33)  # torchvision RandomErasing defaults
ERASE_LOG_ASPECT = (math.log(0.3), math.log(3.3))
# The steps of the recipe a streamed split's loader workers do on each full-size image before the batch reaches
# the device (ablations.data.stream): the random-resized crop and the flip. The device does the rest.
WORKER_STEPS = frozenset({"crop", "flip"})


def per_sample(values: torch.Tensor) -> torch.Tensor:
    """A (B,) tensor shaped (B, 1, 1, 1) to broadcast over images."""
    return values.view(-1, 1, 1, 1)


class Draws:
    """The random draws of one batch: each is made for the global batch of `size` images from `gen`, as one process
    makes it, and `rows` (this process's positions in the global batch, on gen's device; None: all of them) are
    kept, so every process's images get the draws the one-process run gives them."""

    def __init__(self, gen: torch.Generator, size: int, rows: torch.Tensor | None = None) -> None:
        self.gen, self.size, self.rows = gen, size, rows

    def keep(self, values: torch.Tensor) -> torch.Tensor:
        return values if self.rows is None else values[self.rows]

    def rand(self, *trailing: int) -> torch.Tensor:
        """Uniform [0, 1) draws shaped (images, *trailing)."""
        return self.keep(torch.rand(self.size, *trailing, generator=self.gen, device=self.gen.device))

    def normal(self) -> torch.Tensor:
        return self.keep(torch.randn(self.size, generator=self.gen, device=self.gen.device))

    def randint(self, high: int) -> torch.Tensor:
        return self.keep(torch.randint(high, (self.size,), generator=self.gen, device=self.gen.device))

    def beta(self, alpha: float) -> torch.Tensor:
        """Beta(alpha, alpha) per image (torch.distributions cannot take a generator): G1 / (G1 + G2)."""
        shape = torch.full((2, self.size), alpha, dtype=torch.float64, device=self.gen.device)
        gammas = torch._standard_gamma(shape, generator=self.gen)
        return self.keep((gammas[0] / gammas.sum(0).clamp(min=torch.finfo(torch.float64).tiny)).float())


def uniform(low: float, high: float, draws: Draws) -> torch.Tensor:
    return low + (high - low) * draws.rand()


def coin(p: float, draws: Draws) -> torch.Tensor:
    return draws.rand() < p


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] (or uint8) to (x - mean) / std per channel; mean and std shaped (C, 1, 1)."""
    if images.dtype == torch.uint8:
        images = images.float() / 255
    return (images - mean) / std


# --- geometry: one batched affine warp; each theta maps output coordinates (in [-1, 1]) to input ones ---


def warp(
    images: torch.Tensor, theta: torch.Tensor, bicubic: torch.Tensor | None = None, fill: torch.Tensor | None = None
) -> torch.Tensor:
    """The images resampled bilinearly or, where `bicubic` (per-sample booleans) is true, bicubically; a batch with
    bicubic rows is clamped to [0, 1] as Pillow's 8 bits are (bicubic overshoots). Outside the image: zeros, or
    `fill` (C, 1, 1)."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)

    def sample(mode: str) -> torch.Tensor:
        if fill is None:
            return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)
        return F.grid_sample(images - fill, grid, mode=mode, padding_mode="zeros", align_corners=False) + fill

    if bicubic is None:
        return sample("bilinear")
    return torch.where(per_sample(bicubic), sample("bicubic"), sample("bilinear")).clamp(0, 1)


def bicubic_draw(random_interpolation: bool, draws: Draws) -> torch.Tensor | None:
    """Which images a resample does bicubically (timm's train_interpolation "random": bilinear or bicubic with
    equal chance, drawn at each resample); None, no draw at all: every image bilinear, as before the choice existed."""
    return coin(0.5, draws) if random_interpolation else None


def random_resized_crop(
    images: torch.Tensor, min_area: float, draws: Draws, random_interpolation: bool = False
) -> torch.Tensor:
    """A square crop of area fraction uniform in [min_area, 1] at a random place, resized back to full size."""
    side = uniform(min_area, 1.0, draws).sqrt()
    centre = (draws.rand(2) * 2 - 1) * (1 - side[:, None])
    zero = torch.zeros_like(side)
    theta = torch.stack([torch.stack([side, zero, centre[:, 0]], 1), torch.stack([zero, side, centre[:, 1]], 1)], 1)
    return warp(images, theta, bicubic_draw(random_interpolation, draws))


def random_hflip(images: torch.Tensor, draws: Draws) -> torch.Tensor:
    return torch.where(per_sample(coin(0.5, draws)), images.flip(-1), images)


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


def rand_augment(
    images: torch.Tensor, magnitude: int, draws: Draws, random_interpolation: bool = False
) -> torch.Tensor:
    """One RandAugment round: each image gets one op, drawn uniformly, at `magnitude` (0..30) with a random sign."""
    n = len(images)
    op = draws.randint(len(RANDAUG_OPS))
    level = magnitude / 30 * torch.where(coin(0.5, draws), -1.0, 1.0)  # signed, in [-1, 1]
    strength = torch.full((n,), magnitude / 30, device=images.device)  # unsigned, for the unsigned ops
    factor = 1 + MAX_ENHANCE * level
    results = {
        "posterize": lambda x: posterize(x, (MAX_POSTERIZE_BITS_REMOVED * strength).round().long()),
        "solarize": lambda x: solarize(x, 1 - strength),
        "autocontrast": autocontrast,
        "equalize": equalize,
    }
    geometric = (op >= RANDAUG_OPS.index("shear_x")) & (op <= RANDAUG_OPS.index("rotate"))
    warped = warp(images, randaug_affine(op, level), bicubic_draw(random_interpolation, draws))
    images = torch.where(per_sample(geometric), warped, images)
    images = enhance(images, op, factor)  # each image has one op: the enhance ops see the images as they came
    for name, apply in results.items():
        images = torch.where(per_sample(op == RANDAUG_OPS.index(name)), apply(images), images)
    return images


# timm's 8-bit ops at a per-sample level in [0, 1] (its magnitude / 10), on grey levels p = 255 x pixel.


def timm_posterize(images: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """PosterizeIncreasing: ImageOps.posterize keeping 4 - int(4 level) bits."""
    return posterize(images, 4 + (4 * level).long())


def timm_solarize(images: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """SolarizeIncreasing: ImageOps.solarize at threshold 256 - int(256 level), inverting p >= threshold."""
    return solarize(images, (255.5 - (256 * level).floor()) / 255)


def timm_solarize_add(images: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """SolarizeAdd: int(110 level) added to p < 128, capped at 255."""
    add = per_sample((TIMM_SOLARIZE_ADD * level).floor() / 255)
    return torch.where(images < 127.5 / 255, (images + add).clamp(max=1), images)


def timm_rand_augment(
    images: torch.Tensor,
    magnitude: int,
    magnitude_std: float,
    fill: torch.Tensor,
    draws: Draws,
    random_interpolation: bool = False,
) -> torch.Tensor:
    """One round of timm's RandAugment with increasing ops: each image draws one of TIMM_RANDAUG_OPS, applied with
    probability 0.5, at `magnitude` (0..30) plus Gaussian noise of std `magnitude_std` (clipped to 0..30), signed
    ops with a random sign; geometric ops fill with `fill` (C, 1, 1, the mean colour in [0, 1]) as timm's img_mean.
    The ops shared with torchvision's set reuse its arithmetic, at timm's ranges."""
    chosen, applied = draws.randint(len(TIMM_RANDAUG_OPS)), coin(0.5, draws)
    strength = torch.full(applied.shape, float(magnitude), device=applied.device)
    if magnitude_std:
        strength = (strength + magnitude_std * draws.normal()).clamp(0, 30)
    level = strength / 30
    signed = level * torch.where(coin(0.5, draws), -1.0, 1.0)
    op = torch.where(applied, chosen, -1)
    shared = torch.zeros_like(op)  # torchvision's index of an op both sets have; 0, the identity, for the others
    for name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "color", "contrast", "brightness",
                 "sharpness"):  # fmt: skip
        shared = torch.where(op == TIMM_RANDAUG_OPS.index(name), RANDAUG_OPS.index(name), shared)
    translated = (shared == RANDAUG_OPS.index("translate_x")) | (shared == RANDAUG_OPS.index("translate_y"))
    affine_level = signed * torch.where(translated, TIMM_MAX_TRANSLATE / MAX_TRANSLATE, 1.0)
    geometric = (shared >= RANDAUG_OPS.index("shear_x")) & (shared <= RANDAUG_OPS.index("rotate"))
    warped = warp(images, randaug_affine(shared, affine_level), bicubic_draw(random_interpolation, draws), fill)
    images = enhance(torch.where(per_sample(geometric), warped, images), shared, 1 + MAX_ENHANCE * signed)
    results = {
        "autocontrast": autocontrast,
        "equalize": equalize,
        "invert": lambda x: 1 - x,
        "posterize": lambda x: timm_posterize(x, level),
        "solarize": lambda x: timm_solarize(x, level),
        "solarize_add": lambda x: timm_solarize_add(x, level),
    }
    for name, apply in results.items():
        images = torch.where(per_sample(op == TIMM_RANDAUG_OPS.index(name)), apply(images), images)
    return images


def color_jitter(images: torch.Tensor, strength: float, draws: Draws) -> torch.Tensor:
    """torchvision ColorJitter(s, s, s): brightness, contrast and saturation factors uniform in 1 +- s."""
    for adjust in (brightness, contrast, saturation):
        images = adjust(images, uniform(1 - strength, 1 + strength, draws))
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


def random_erase(images: torch.Tensor, probability: float, draws: Draws) -> torch.Tensor:
    """torchvision RandomErasing(probability), as the reference: one rectangle per chosen image set to 0 (the mean
    colour, after normalisation). Where torchvision retries a draw that does not fit, the rectangle is clipped."""
    _, _, h, w = images.shape
    area = uniform(*ERASE_AREA, draws) * h * w
    aspect = uniform(*ERASE_LOG_ASPECT, draws).exp()
    height = (area * aspect).sqrt().round().long().clamp(1, h)
    width = (area / aspect).sqrt().round().long().clamp(1, w)
    top = (draws.rand() * (h - height + 1)).long()
    left = (draws.rand() * (w - width + 1)).long()
    erase = box_masks((h, w), top, left, top + height, left + width) & per_sample(coin(probability, draws))
    return images.masked_fill(erase, 0.0)


def mix(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, mixup: float, cutmix: float, draws: Draws
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup and/or cutmix with a per-sample lambda; each image mixes with its mirror in the batch (as timm). On
    several processes a process's rows of the global batch hold each image's mirror, mirrored in turn (the loader's
    paired slices), so the mirror in its own batch is the one-process partner.

    With both on, each sample picks one of the two with equal odds. Returns soft targets (B, num_classes) that
    weigh the two labels by the share of each image actually used, so each row sums to 1.
    """
    n, _, h, w = images.shape
    partner = images.flip(0)
    use_cutmix = coin(0.5, draws) if mixup and cutmix else torch.full((n,), bool(cutmix), device=images.device)
    # (An alpha of 0 is off: its draws are replaced by 1.0 and never used.)
    lam = torch.where(use_cutmix, draws.beta(cutmix or 1.0), draws.beta(mixup or 1.0))
    # cutmix: a box covering 1 - lam of the image, centred anywhere and clipped at the borders.
    cut_h, cut_w = ((1 - lam).sqrt() * h).round().long(), ((1 - lam).sqrt() * w).round().long()
    centre_y, centre_x = draws.randint(h), draws.randint(w)
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
        self, images: torch.Tensor, labels: torch.Tensor, draws: Draws | torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch augmented with `draws`; a generator alone draws for these images as the whole batch."""
        cfg, draws = self.cfg, draws if isinstance(draws, Draws) else Draws(draws, len(images))
        random_interpolation = cfg.train_interpolation == "random"
        x = images.float() / 255
        if cfg.scale < 1 and "crop" not in self.done:
            x = random_resized_crop(x, cfg.scale, draws, random_interpolation)
        if cfg.hflip and "flip" not in self.done:
            x = random_hflip(x, draws)
        for _ in range(cfg.randaug_n):
            if cfg.randaug_ops == "timm":
                x = timm_rand_augment(x, cfg.randaug_m, cfg.randaug_mstd, self.mean, draws, random_interpolation)
            else:
                x = rand_augment(x, cfg.randaug_m, draws, random_interpolation)
        if cfg.jitter:
            x = color_jitter(x, cfg.jitter, draws)
        x = normalise(x, self.mean, self.std)
        if cfg.reprob:
            x = random_erase(x, cfg.reprob, draws)
        if cfg.mixup or cfg.cutmix:
            return mix(x, labels, self.num_classes, cfg.mixup, cfg.cutmix, draws)
        return x, labels
