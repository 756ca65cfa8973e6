"""Batched augmentation: every op keeps shape, dtype and range, does something, is the identity at strength 0,
matches PIL where PIL defines it, draws independently per sample, and replays from the generator's seed."""

import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps
from torchvision.transforms.functional import pil_to_tensor

from ablations.config import RunConfig
from ablations.data import augment as A

N = 8


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draws(seed: int = 0, n: int = N) -> A.Draws:
    """A whole batch of n images' draws from generator(seed)."""
    return A.Draws(generator(seed), n)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Smooth random images with some structure (so crops, flips and filters visibly change them), in [0, 1]."""
    coarse = torch.rand(N, 3, 8, 8, generator=generator(1))
    return torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)


def levels(images: torch.Tensor) -> torch.Tensor:
    """Images on the 8-bit grid, so the PIL comparisons see exactly the same pixels."""
    return (images * 255).round() / 255


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy())


def from_pil(image: Image.Image) -> torch.Tensor:
    return pil_to_tensor(image).float() / 255


def assert_valid(out: torch.Tensor, images: torch.Tensor) -> None:
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= 0 and out.max() <= 1


def changed(out: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per sample: does the output differ from the input at all?"""
    return (out - images).abs().amax((1, 2, 3)) > 1e-4


ONES = torch.ones(N)
COLOUR_OPS = {
    "brightness": (lambda x, s: A.brightness(x, 1 + 0.5 * s), lambda x, s: A.brightness(x, 1 + 0 * s)),
    "saturation": (lambda x, s: A.saturation(x, 1 + 0.5 * s), lambda x, s: A.saturation(x, 1 + 0 * s)),
    "contrast": (lambda x, s: A.contrast(x, 1 + 0.5 * s), lambda x, s: A.contrast(x, 1 + 0 * s)),
    "sharpness": (lambda x, s: A.sharpness(x, 1 + 0.9 * s), lambda x, s: A.sharpness(x, 1 + 0 * s)),
    "posterize": (lambda x, s: A.posterize(x, 4 * s.long()), lambda x, s: A.posterize(x, 0 * s.long())),
    "solarize": (lambda x, s: A.solarize(x, 1 - 0.5 * s), lambda x, s: A.solarize(x, 1 - 0 * s)),
}


@pytest.mark.parametrize("name", COLOUR_OPS)
def test_colour_op_keeps_range_changes_every_image_and_is_identity_at_zero(images, name):
    strong, zero = COLOUR_OPS[name]
    x = levels(images)
    x[:, :, 0, :2] = torch.tensor([0.0, 1.0])  # the extremes, where off-by-one thresholds show
    out = strong(x, ONES)
    assert_valid(out, x)
    assert changed(out, x).all()
    assert torch.allclose(zero(x, ONES), x, atol=1e-6)


@pytest.mark.parametrize("op", [A.autocontrast, A.equalize])
def test_parameterless_ops_keep_range_and_change_images(images, op):
    x = levels(images)
    out = op(x)
    assert_valid(out, x)
    assert changed(out, x).all()


def test_equalize_and_posterize_match_pil_exactly(images):
    x = levels(images)
    ours_equalized, ours_posterized = A.equalize(x), A.posterize(x, torch.full((N,), 3))
    for i in range(N):
        assert torch.equal(ours_equalized[i], from_pil(ImageOps.equalize(to_pil(x[i]))))
        assert torch.equal(ours_posterized[i], from_pil(ImageOps.posterize(to_pil(x[i]), 5)))


def test_flat_channel_is_left_alone_by_autocontrast_and_equalize():
    flat = torch.full((2, 3, 8, 8), 0.5)
    assert torch.equal(A.autocontrast(flat), flat)
    assert torch.equal(A.equalize(flat), flat)


@pytest.mark.parametrize(
    "ours, pil",
    [
        (lambda x: A.brightness(x, torch.full((N,), 1.4)), lambda im: ImageEnhance.Brightness(im).enhance(1.4)),
        (lambda x: A.saturation(x, torch.full((N,), 0.3)), lambda im: ImageEnhance.Color(im).enhance(0.3)),
        (lambda x: A.contrast(x, torch.full((N,), 1.5)), lambda im: ImageEnhance.Contrast(im).enhance(1.5)),
        (lambda x: A.sharpness(x, torch.full((N,), 1.8)), lambda im: ImageEnhance.Sharpness(im).enhance(1.8)),
        (A.autocontrast, ImageOps.autocontrast),
    ],
    ids=["brightness", "color", "contrast", "sharpness", "autocontrast"],
)
def test_enhance_ops_match_pil_up_to_rounding(images, ours, pil):
    x = levels(images)
    out = ours(x)
    for i in range(N):
        # PIL rounds intermediate values (e.g. the mean grey of contrast) to 8 bits; we keep floats.
        assert (out[i] - from_pil(pil(to_pil(x[i])))).abs().max() <= 3 / 255


def test_randaug_geometric_ops_are_identity_at_level_zero_and_move_pixels_otherwise(images):
    for name in ("shear_x", "shear_y", "translate_x", "translate_y", "rotate"):
        op = torch.full((N,), A.RANDAUG_OPS.index(name))
        assert torch.allclose(A.warp(images, A.randaug_affine(op, torch.zeros(N))), images, atol=1e-5)
        moved = A.warp(images, A.randaug_affine(op, torch.full((N,), 0.5)))
        assert moved.shape == images.shape and changed(moved, images).all(), name
    colour_op = torch.full((N,), A.RANDAUG_OPS.index("brightness"))
    assert torch.allclose(A.warp(images, A.randaug_affine(colour_op, torch.ones(N))), images, atol=1e-5)


def test_translate_shifts_by_the_expected_number_of_pixels():
    image = torch.zeros(1, 1, 32, 32)
    image[..., 10, 10] = 1
    op = torch.tensor([A.RANDAUG_OPS.index("translate_x")])
    shift_pixels = 8
    shifted = A.warp(image, A.randaug_affine(op, torch.tensor([-shift_pixels / 32 / A.MAX_TRANSLATE])))
    assert shifted[0, 0, 10].argmax() == 10 + shift_pixels


def centroid(image: torch.Tensor) -> torch.Tensor:
    """(y, x) of an H x W image's intensity centroid, relative to the image centre."""
    h, w = image.shape
    y, x = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    return torch.stack([(image * y).sum(), (image * x).sum()]) / image.sum()


def test_rotate_turns_about_the_centre_by_the_magnitude():
    image = torch.zeros(1, 1, 32, 32)
    image[..., 14:18, 22:26] = 1  # a blob 8 px right of the centre
    op = torch.tensor([A.RANDAUG_OPS.index("rotate")])
    rotated = A.warp(image, A.randaug_affine(op, torch.tensor([1.0])))[0, 0]
    before, after = centroid(image[0, 0]), centroid(rotated)
    assert after.norm().item() == pytest.approx(before.norm().item(), abs=0.2)
    turned = torch.rad2deg(torch.atan2(after[0], after[1]) - torch.atan2(before[0], before[1])).abs()
    assert turned.item() == pytest.approx(A.MAX_ROTATE_DEGREES, abs=1.5)


def test_crop_and_flip(images):
    assert torch.allclose(A.random_resized_crop(images, 1.0, draws()), images, atol=1e-5)
    cropped = A.random_resized_crop(images, 0.3, draws())
    assert cropped.shape == images.shape and changed(cropped, images).all()
    flipped = A.random_hflip(images, draws())
    each = changed(flipped, images)
    assert 0 < each.sum() < N  # about half the images
    assert torch.equal(flipped[each], images[each].flip(-1))


def test_random_interpolation_resamples_each_image_bilinearly_or_bicubically_within_range(images):
    """train_interpolation=random: the crop's draws as before, then a coin per image: heads bicubic (clamped to
    [0, 1]), tails the bilinear crop the same draws give."""
    gen = generator(5)
    bilinear = A.random_resized_crop(images, 0.3, A.Draws(gen, N))
    heads = torch.rand(N, generator=gen) < 0.5
    mixed = A.random_resized_crop(images, 0.3, draws(5), random_interpolation=True)
    assert 0 < heads.sum() < N and mixed.min() >= 0 and mixed.max() <= 1
    assert torch.allclose(mixed[~heads], bilinear[~heads], atol=1e-6)
    assert changed(mixed[heads], bilinear[heads]).all()


def test_random_erase_fills_one_rectangle_per_chosen_image(images):
    assert torch.equal(A.random_erase(images, 0.0, draws()), images)
    erased = A.random_erase(images, 1.0, draws())
    touched = (erased != images).any(1)  # N x H x W
    area = touched.float().mean((1, 2))
    assert ((area >= 0.015) & (area <= 0.34)).all() and (erased[erased != images] == 0).all()
    rows, cols = touched.any(2), touched.any(1)
    assert torch.equal(touched.sum((1, 2)), rows.sum(1) * cols.sum(1))  # the touched pixels form a rectangle


def test_each_sample_gets_its_own_draw():
    same = torch.rand(1, 3, 32, 32, generator=generator(2)).expand(N, -1, -1, -1).contiguous()
    ops = {
        "crop": lambda x, g: A.random_resized_crop(x, 0.5, g),
        "randaug": lambda x, g: A.rand_augment(A.rand_augment(x, 15, g), 15, g),
        "jitter": lambda x, g: A.color_jitter(x, 0.4, g),
        "erase": lambda x, g: A.random_erase(x, 1.0, g),
    }
    for name, op in ops.items():
        out = op(same, draws())
        distinct = {tuple(out[i].flatten()[::37].tolist()) for i in range(N)}
        assert len(distinct) >= N - 1, name  # two samples may draw the same randaug op


def test_rand_augment_at_magnitude_zero_only_changes_autocontrast_and_equalize_samples(images):
    x = levels(images)
    out = A.rand_augment(x, 0, draws(5))
    op = torch.randint(len(A.RANDAUG_OPS), (N,), generator=generator(5))  # the draw rand_augment made first
    parameterless = (op == A.RANDAUG_OPS.index("autocontrast")) | (op == A.RANDAUG_OPS.index("equalize"))
    assert torch.allclose(out[~parameterless], x[~parameterless], atol=1e-5)


@pytest.mark.parametrize("mixup, cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixing_gives_soft_targets_that_weigh_each_image_by_its_share(mixup, cutmix):
    n, classes = 16, 10
    values = torch.linspace(0, 1, n)  # image i is flat with value values[i]; its mirror partner is n-1-i
    images = values.view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous()
    labels = torch.arange(n) % classes
    mixed, targets = A.mix(images, labels, classes, mixup, cutmix, draws(0, n))
    assert mixed.shape == images.shape and targets.shape == (n, classes)
    assert torch.allclose(targets.sum(1), torch.ones(n))
    own = torch.zeros(n)
    for i in range(n):
        own[i] = targets[i, labels[i]] if labels[i] != labels[n - 1 - i] else 1.0
    # Mean pixel = own share * own value + partner share * partner value, whichever way the share was made.
    partner_value = values.flip(0)
    share = own * values + (1 - own) * partner_value
    differ = labels != labels.flip(0)
    assert torch.allclose(mixed.mean((1, 2, 3))[differ], share[differ], atol=1e-5)
    assert ((own > 0) & (own <= 1)).all() and (own < 1).any()


def test_augment_pipeline_replays_from_the_seed_and_differs_across_seeds():
    cfg = RunConfig(randaug_n=2, randaug_m=9, jitter=0.2, reprob=0.5, mixup=0.8, cutmix=1.0)
    augment = A.Augment(cfg, 10, torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.25, 0.25]))
    raw = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=generator(3))
    labels = torch.arange(N)
    first, again, other = (augment(raw, labels, generator(seed)) for seed in (7, 7, 8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    assert first[0].dtype == torch.float32 and first[1].shape == (N, 10)


def test_augment_with_everything_off_only_normalises():
    cfg = RunConfig(scale=1.0, hflip=False, randaug_n=0, jitter=0.0, reprob=0.0)
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    raw = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=generator(4))
    out, labels = A.Augment(cfg, 10, mean, std)(raw, torch.arange(N), generator())
    assert torch.allclose(out, (raw.float() / 255 - mean.view(3, 1, 1)) / std.view(3, 1, 1))
    assert labels.dtype == torch.int64


def bincount_equalize(images: torch.Tensor) -> torch.Tensor:
    """equalize as it was built before it avoided bincount's host syncs: the reference its output must equal."""
    n, c, h, w = images.shape
    levels = A.to_levels(images).view(n * c, h * w)
    bins = levels + 256 * torch.arange(n * c)[:, None]
    histogram = torch.bincount(bins.flatten(), minlength=n * c * 256).view(n * c, 256)
    brightest_count = histogram.gather(1, levels.amax(1, keepdim=True))
    step = (h * w - brightest_count) // 255
    lut = (histogram.cumsum(1) - histogram + step // 2) // step.clamp(min=1)
    equalised = lut.clamp(max=255).gather(1, levels).float() / 255
    return torch.where(step > 0, equalised, images.reshape(n * c, h * w)).view(n, c, h, w)


def test_sync_free_equalize_equals_the_bincount_one_bit_for_bit(images):
    flat_and_sparse = torch.cat([torch.full((1, 3, 32, 32), 0.5), (images[:1] > 0.5).float()])
    for batch in (images, levels(images), flat_and_sparse, torch.rand(5, 3, 7, 9, generator=generator(3))):
        assert torch.equal(A.equalize(batch), bincount_equalize(batch))


@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize(
    "timm", [{}, {"randaug_ops": "timm", "randaug_mstd": 1.5, "train_interpolation": "random"}], ids=["tv", "timm"]
)
def test_a_process_augments_its_rows_of_the_global_batch_as_one_process_does(world_size, timm):
    """Each rank's slice (paired: its share of the first half and their mirrors, data.loaders.TrainLoader.rows),
    augmented with its rows of the global draws, is the one-process batch's augmentation at those rows, mixing
    partners included."""
    cfg = RunConfig(scale=0.35, randaug_n=2, randaug_m=9, jitter=0.2, reprob=0.5, mixup=0.8, cutmix=1.0, **timm)
    augment = A.Augment(cfg, 10, torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.25, 0.25]))
    n = 16
    raw = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator(3))
    labels = torch.arange(n) % 10
    whole_images, whole_targets = augment(raw, labels, generator(7))
    share = n // world_size
    for rank in range(world_size):
        first = torch.arange(rank * share // 2, (rank + 1) * share // 2)
        rows = torch.cat([first, (n - 1 - first).flip(0)])
        images, targets = augment(raw[rows], labels[rows], A.Draws(generator(7), n, rows))
        assert torch.allclose(images, whole_images[rows], atol=1e-6)
        assert torch.allclose(targets, whole_targets[rows], atol=1e-6)


def test_timms_rand_augment_applies_each_op_with_probability_half_and_fills_with_the_mean_colour():
    """The op drawn first, then the coin (as timm_rand_augment draws them): an image whose coin says no is returned
    as it was; a geometric op on an image of the fill colour leaves it so (the zero padding became the fill)."""
    n, fill = 64, torch.tensor([0.2, 0.5, 0.7]).view(3, 1, 1)
    flat = fill.expand(n, 3, 32, 32).contiguous()
    images = torch.rand(n, 3, 32, 32, generator=generator(6))
    gen = generator(9)
    chosen, applied = torch.randint(len(A.TIMM_RANDAUG_OPS), (n,), generator=gen), torch.rand(n, generator=gen) < 0.5
    out = A.timm_rand_augment(images, 27, 1.5, fill, draws(9, n))
    assert torch.equal(out[~applied], images[~applied]) and 0.3 < applied.float().mean() < 0.7
    assert changed(out[applied], images[applied]).float().mean() > 0.8
    geometric = applied & torch.isin(chosen, torch.tensor([A.TIMM_RANDAUG_OPS.index(name) for name in
                                     ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")]))  # fmt: skip
    assert geometric.any()
    assert torch.allclose(A.timm_rand_augment(flat, 27, 1.5, fill, draws(9, n))[geometric], flat[geometric], atol=1e-5)


@pytest.mark.parametrize("magnitude", range(11))
def test_timms_posterize_and_solarize_ops_match_pil_at_each_magnitude(magnitude):
    """timm's PosterizeIncreasing, SolarizeIncreasing and SolarizeAdd are PIL calls with integer arguments from
    magnitude / 10 (timm/data/auto_augment.py); ours, at this toolkit's magnitude 3 x theirs, give PIL's pixels on
    every grey level."""
    grey = torch.arange(256, dtype=torch.uint8).view(1, 16, 16).expand(3, 16, 16)
    image = Image.fromarray(grey.permute(1, 2, 0).numpy())
    level = torch.full((1,), float(3 * magnitude)) / 30  # as timm_rand_augment turns 0..30 into a level
    timm_level = magnitude / 10
    add = int(timm_level * 110)
    bits = 4 - int(timm_level * 4)  # 0 at magnitude 10: black, what a 0-bit mask gives (this Pillow refuses 0 bits)
    expected = {
        A.timm_posterize: ImageOps.posterize(image, bits) if bits else Image.new("RGB", image.size),
        A.timm_solarize: ImageOps.solarize(image, 256 - int(timm_level * 256)),
        A.timm_solarize_add: image.point([min(255, p + add) if p < 128 else p for p in range(256)] * 3),
    }
    for op, pil in expected.items():
        ours = (op(grey[None].float() / 255, level)[0] * 255).round().to(torch.uint8)
        assert torch.equal(ours, pil_to_tensor(pil)), op.__name__
