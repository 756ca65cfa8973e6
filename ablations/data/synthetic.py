"""A small synthetic image-classification task where spatial context decides the class.

Each 32x32 image holds one "plus" marker, one second marker (a ring or an x) and three distractor
shapes on a noisy, shaded background; every shape has a random bright colour. The class is the
second marker's shape (2 kinds) times its direction from the plus (5 sectors: above ... below).
Direction is measured up to a horizontal mirror, so flips, small rotations, crops and colour
augmentation keep the label. No single pixel or patch tells the direction: a model has to see both
markers at once, 9-14 px apart, so kernel size, depth and patch size matter. The data depend only on
`DATASET_SEED`, never on the run seed, so every run of a sweep sees the same images.
"""

import torch

DATASET_SEED = 20240601
TRAIN_SIZE, TEST_SIZE = 10_000, 2_000
IMAGE_SIZE = 32
DISTANCE = (9.0, 14.0)  # pixels between the two marker centres
SECTOR_JITTER = 10.0  # degrees around each direction sector's centre (sectors are 36 degrees apart)
DIRECTIONS = ("above", "above-side", "beside", "below-side", "below")
MARKERS = ("ring", "x")
CLASSES = [f"{marker}-{direction}" for marker in MARKERS for direction in DIRECTIONS]
N_DISTRACTORS = 3


def _shape(rows: str) -> list[list[bool]]:
    return [[c == "#" for c in row] for row in rows.split()]


# 5x5 stamps: the plus, the two second markers, then the distractors.
SHAPES = torch.tensor(
    [
        _shape("..#.. ..#.. ##### ..#.. ..#.."),  # plus
        _shape("##### #...# #...# #...# #####"),  # ring
        _shape("#...# .#.#. ..#.. .#.#. #...#"),  # x
        _shape("..... .###. .###. .###. ....."),  # filled square
        _shape("##### ..#.. ..#.. ..#.. ....."),  # T
        _shape("#.... #.... #.... #.... #####"),  # L
        _shape("....# ...#. ..#.. .#... #...."),  # diagonal
    ]
)
PLUS, FIRST_MARKER, FIRST_DISTRACTOR = 0, 1, 3
RADIUS = SHAPES.shape[-1] // 2


def make_split(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The train (10k) or test (2k) split as (uint8 images N x 3 x 32 x 32, int64 labels), balanced by class."""
    n = TRAIN_SIZE if train else TEST_SIZE
    gen = torch.Generator().manual_seed(DATASET_SEED + (0 if train else 1))
    labels = torch.arange(n) % len(CLASSES)
    labels = labels[torch.randperm(n, generator=gen)]
    marker, sector = labels // len(DIRECTIONS), labels % len(DIRECTIONS)
    plus_at, marker_at = _marker_positions(sector, gen)
    images = _background(n, gen)
    distractor_at = _distractor_positions(torch.stack([plus_at, marker_at], 1), gen)
    for k in range(N_DISTRACTORS):
        kind = torch.randint(FIRST_DISTRACTOR, len(SHAPES), (n,), generator=gen)
        images = _stamp(images, kind, distractor_at[:, k], gen)
    images = _stamp(images, torch.full((n,), PLUS), plus_at, gen)
    images = _stamp(images, FIRST_MARKER + marker, marker_at, gen)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels


def _uniform(shape: tuple[int, ...], low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen)


def _marker_positions(sector: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, x) centres of the plus and of the second marker, the second in the given direction sector."""
    n = len(sector)
    angle = torch.deg2rad(-72.0 + 36.0 * sector + _uniform((n,), -SECTOR_JITTER, SECTOR_JITTER, gen))
    distance = _uniform((n,), *DISTANCE, gen)
    mirror = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    offset = torch.stack([distance * torch.sin(angle), mirror * distance * torch.cos(angle)], 1).round().long()
    # Place the plus uniformly among the positions that keep both markers whole inside the image.
    low = RADIUS - offset.clamp(max=0)
    high = IMAGE_SIZE - 1 - RADIUS - offset.clamp(min=0)
    plus_at = low + (torch.rand(n, 2, generator=gen) * (high - low + 1)).long()
    return plus_at, plus_at + offset


def _distractor_positions(markers_at: torch.Tensor, gen: torch.Generator, tries: int = 16) -> torch.Tensor:
    """N x N_DISTRACTORS x 2 centres, each the first of `tries` random draws that leaves both markers uncovered."""
    n = len(markers_at)
    candidates = torch.randint(RADIUS, IMAGE_SIZE - RADIUS, (n, N_DISTRACTORS, tries, 2), generator=gen)
    gap = (candidates[:, :, :, None] - markers_at[:, None, None]).abs().amax(-1)  # Chebyshev distance to each marker
    clear = (gap > 2 * RADIUS).all(-1)
    first_clear = clear.int().argmax(-1)  # the first draw if none is clear: a rare, harmless overlap
    return candidates.gather(2, first_clear[..., None, None].expand(-1, -1, 1, 2)).squeeze(2)


def _background(n: int, gen: torch.Generator) -> torch.Tensor:
    """Dark random tint with a random linear shading and pixel noise, so flat colour says nothing."""
    tint = _uniform((n, 3, 1, 1), 0.05, 0.4, gen)
    coords = torch.linspace(-1, 1, IMAGE_SIZE)
    slope = _uniform((n, 2, 1, 1), -0.12, 0.12, gen)
    shading = slope[:, :1] * coords[:, None] + slope[:, 1:] * coords[None, :]
    return tint + shading + 0.07 * torch.randn((n, 3, IMAGE_SIZE, IMAGE_SIZE), generator=gen)


def _stamp(images: torch.Tensor, kind: torch.Tensor, at: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Paint shape `kind[i]` centred at `at[i]` onto image i in a random bright colour, all images at once."""
    n = len(images)
    offsets = torch.arange(-RADIUS, RADIUS + 1)
    rows = at[:, :1] + offsets.repeat_interleave(len(offsets))  # n x 25: every pixel of the 5x5 stamp
    cols = at[:, 1:] + offsets.repeat(len(offsets))
    image_index = torch.arange(n)[:, None].expand_as(rows)
    on = SHAPES[kind].flatten(1)
    colour = _uniform((n, 3), 0.45, 1.0, gen)
    colour = colour + (0.55 - colour.amax(1, keepdim=True)).clamp(min=0)  # at least one bright channel
    images[image_index[on], :, rows[on], cols[on]] = colour[image_index[on]]
    return images
