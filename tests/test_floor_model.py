"""The byte and FLOP model of a training step (benchmarks/step_model.py) against hand counts, against
convmixer.counting's closed form where they overlap (the forward FLOPs), and the floor it gives with a device's rates;
torch-free."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.step_model import OPS, Cost, Rates, StepShape, bound, floor_seconds, step_costs
from convmixer.counting import closed_form

# ConvMixer-4/1 k3 p2 on 4x4 images, batch 2, 3 classes, bf16 (2-byte activations, 4-byte parameters):
# a feature map of the batch is 2 x 4 x 2 x 2 = 32 elements; the images 2 x 3 x 4 x 4 = 96 fp32 pixels;
# weights: patch 4x3x2x2 = 48, depthwise 4x3x3 = 36, pointwise 4x4 = 16, head 4x3 = 12; logits 2 x 3 = 6;
# parameters (with biases and norms) 48+4+8 + 36+4+8+16+4+8 + 12+3 = 151.
REPO = Path(__file__).resolve().parents[1]
TINY = StepShape(dim=4, depth=1, kernel_size=3, patch_size=2, image_size=4, batch=2, num_classes=3)
HAND = {  # (op, direction): (bytes, FLOPs)
    ("patch_embed", "forward"): (96 * 4 + 48 * 4 + 32 * 2, 2 * 32 * 3 * 2 * 2),
    ("patch_embed", "backward"): (32 * 2 + 96 * 4 + 48 * 4, 2 * 32 * 3 * 2 * 2),  # the weight gradient only
    ("depthwise", "forward"): (2 * 32 * 2 + 36 * 4, 2 * 32 * 9),
    ("depthwise", "backward"): (3 * 32 * 2 + 2 * 36 * 4, 4 * 32 * 9),
    ("activation", "forward"): (3 * 2 * 32 * 2, 3 * 2 * 32),  # 3 of them: after each conv
    ("activation", "backward"): (3 * 3 * 32 * 2, 3 * 4 * 32),
    ("norm", "forward"): (3 * (2 * 32 * 2 + 2 * 4 * 4), 3 * 4 * 32),
    ("norm", "backward"): (3 * (3 * 32 * 2 + 4 * 4 * 4), 3 * 8 * 32),
    ("residual", "forward"): (3 * 32 * 2, 2 * 32),
    ("residual", "backward"): (3 * 32 * 2, 2 * 32),
    ("pointwise", "forward"): (2 * 32 * 2 + 16 * 4, 2 * 32 * 4),
    ("pointwise", "backward"): (3 * 32 * 2 + 2 * 16 * 4, 4 * 32 * 4),
    ("pool", "forward"): (32 * 2 + 8 * 2, 2 * 32),
    ("pool", "backward"): (8 * 2 + 32 * 2, 32),
    ("head", "forward"): (8 * 2 + 12 * 4 + 6 * 4, 2 * 8 * 3),
    ("head", "backward"): (6 * 4 + 2 * 8 * 2 + 2 * 12 * 4, 4 * 8 * 3),
    ("loss", "forward"): (6 * 4 + 2 * 8, 5 * 6),
    ("loss", "backward"): (2 * 6 * 4 + 2 * 8, 4 * 6),
    ("optimizer", "update"): (151 * 28, 151 * 15),
}


def test_every_op_in_each_direction_matches_the_hand_count():
    costs = step_costs(TINY)
    assert [(c.op, c.direction) for c in costs] == list(HAND)
    assert {(c.op, c.direction): (c.bytes, c.flops) for c in costs} == HAND
    assert [op for op in dict.fromkeys(c.op for c in costs)] == list(OPS)
    units = {c.op: c.unit for c in costs}
    assert {op for op, unit in units.items() if unit == "matrix"} == {"patch_embed", "pointwise", "head"}


def test_the_parameters_it_prices_are_the_closed_forms():
    assert closed_form(TINY.model(), TINY.image_size).params == 151


def test_fp32_doubles_the_activation_bytes_and_clipping_adds_three_passes_over_the_gradients():
    bf16, fp32 = (
        {(c.op, c.direction): c for c in step_costs(replace(TINY, dtype=dtype))} for dtype in ("bf16", "fp32")
    )
    assert fp32["depthwise", "forward"].bytes == 4 * 32 * 2 + 36 * 4 and fp32["depthwise", "forward"].flops == 576
    assert fp32["patch_embed", "forward"].bytes - bf16["patch_embed", "forward"].bytes == 32 * 2  # the output only
    clipped = step_costs(replace(TINY, clip_norm=True))[-1]
    assert (clipped.bytes, clipped.flops) == (151 * (28 + 12), 151 * (15 + 3))


@pytest.mark.parametrize(
    "shape",
    [
        StepShape(256, 8, 5, 2, 32, 512),
        StepShape(256, 8, 9, 2, 32, 512, norm="layer", residual="both", activation="relu"),
        StepShape(768, 32, 7, 7, 224, 64, num_classes=1000, residual="block"),
        StepShape(16, 0, 3, 4, 18, 4, in_chans=1, residual="none"),  # no mixer layer; 18 px drops 2 per side
    ],
)
def test_the_forward_flops_are_the_closed_form_flops_per_category(shape):
    by_op = {c.op: c.flops for c in step_costs(shape) if c.direction == "forward"}
    categories = closed_form(shape.model(), shape.image_size).by_category
    expected = {name: 2 * shape.batch * macs for name, macs in categories.items()}
    got = {
        "conv": by_op["patch_embed"] + by_op.get("depthwise", 0) + by_op.get("pointwise", 0),
        "linear": by_op["head"],
        "norm": by_op["norm"],
        "activation": by_op["activation"],
        "residual": by_op.get("residual", 0),
        "pool": by_op["pool"],
    }
    assert got == expected


def test_a_model_without_mixer_layers_or_residuals_has_no_rows_for_them():
    ops = {c.op for c in step_costs(StepShape(16, 0, 3, 4, 16, 4))}
    assert ops == set(OPS) - {"depthwise", "residual", "pointwise"}
    ops = {c.op for c in step_costs(StepShape(16, 2, 3, 4, 16, 4, residual="none"))}
    assert ops == set(OPS) - {"residual"}


def test_the_floor_is_the_slower_of_bytes_at_the_copy_rate_and_flops_at_the_units_rate():
    rates = Rates(copy=1e3, vector=1e4, matrix=1e6)
    by_bytes = Cost("activation", "forward", 1, bytes=500, flops=1000, unit="vector")
    by_flops = Cost("depthwise", "forward", 1, bytes=100, flops=20_000, unit="vector")
    on_matrix = Cost("pointwise", "forward", 1, bytes=100, flops=20_000, unit="matrix")
    assert floor_seconds(by_bytes, rates) == 0.5 and bound(by_bytes, rates) == "bytes"
    assert floor_seconds(by_flops, rates) == 2.0 and bound(by_flops, rates) == "flops"
    assert floor_seconds(on_matrix, rates) == 0.1 and bound(on_matrix, rates) == "bytes"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dtype": "int8"}, "dtype='int8'"),
        ({"norm": "group"}, "norm='group'"),
        ({"residual": "all"}, "residual='all'"),
        ({"dim": 0}, "dim"),
        ({"patch_size": 8}, "patch_size"),  # larger than the 4 px image
    ],
)
def test_a_value_the_model_cannot_price_is_a_one_line_error(change, message):
    with pytest.raises(ValueError, match=message) as error:
        step_costs(replace(TINY, **change))
    assert "\n" not in str(error.value)


def test_the_model_imports_no_torch():
    code = "import sys, benchmarks.step_model; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
