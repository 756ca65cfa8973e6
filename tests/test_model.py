"""The modular ConvMixer: shapes for every knob, argument errors, what each residual placement computes,
the registry's parameter counts against the paper, and the tweet's own constraints."""

import ast
import itertools

import pytest
import torch

from convmixer import tweet
from convmixer.counting import closed_form
from convmixer.model import (
    ACTIVATIONS,
    NORMS,
    RESIDUALS,
    ChannelLayerNorm,
    ConvMixer,
    ConvMixerConfig,
    MixerLayer,
    count_parameters,
)
from convmixer.registry import create_model, get_config


@pytest.mark.parametrize("residual,norm,activation", list(itertools.product(RESIDUALS, NORMS, ACTIVATIONS)))
def test_shapes_for_every_knob_kernel_and_patch(residual: str, norm: str, activation: str) -> None:
    images = torch.randn(2, 3, 7, 7)
    for kernel_size, patch_size in itertools.product((1, 2, 3, 4), (1, 2, 3)):
        model = ConvMixer(4, 2, kernel_size, patch_size, 5, residual=residual, norm=norm, activation=activation)
        side = 7 // patch_size  # the patch conv drops the pixels that do not fill a whole patch
        assert model.forward_features(images).shape == (2, 4, side, side), (kernel_size, patch_size)
        assert model(images).shape == (2, 5)


@pytest.mark.parametrize("kernel_size", [2, 4, 6, 8])
def test_even_kernels_keep_the_spatial_size(kernel_size: int) -> None:
    layer = MixerLayer(3, kernel_size, RESIDUALS["depthwise"], NORMS["batch"], ACTIVATIONS["gelu"])
    features = torch.randn(1, 3, 5, 6)
    assert layer.depthwise.conv(features).shape == features.shape
    assert layer(features).shape == features.shape


def test_in_chans_sets_the_patch_embedding_input() -> None:
    model = ConvMixer(4, 1, 3, 2, 5, in_chans=1)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 5)


@pytest.mark.parametrize(
    "argument,value,accepted",
    [
        ("residual", "skip", RESIDUALS),
        ("norm", "group", NORMS),
        ("activation", "silu", ACTIVATIONS),
        ("norm", ["batch"], NORMS),  # unhashable: still the one-line ValueError
    ],
)
def test_bad_choice_names_argument_and_accepted_values(argument: str, value: object, accepted: dict) -> None:
    with pytest.raises(ValueError) as error:
        ConvMixer(4, 1, **{argument: value})
    message = str(error.value)
    assert f"{argument}={value!r}" in message
    assert all(repr(choice) in message for choice in accepted)


@pytest.mark.parametrize(
    "argument,value,minimum",
    [
        ("dim", 0, 1),
        ("depth", -1, 0),
        ("kernel_size", 0, 1),
        ("patch_size", 0, 1),
        ("num_classes", 0, 1),
        ("in_chans", 0, 1),
        ("kernel_size", 3.0, 1),
        ("dim", True, 1),
    ],
)
def test_bad_size_names_argument_and_minimum(argument: str, value: object, minimum: int) -> None:
    arguments = {"dim": 4, "depth": 1, "kernel_size": 3, "patch_size": 2, "num_classes": 5, "in_chans": 3}
    with pytest.raises(ValueError, match=f"{argument}={value!r} .* integer >= {minimum}"):
        ConvMixer(**{**arguments, argument: value})


def zeroed_branch_layer(residual: str, zeroed: str) -> MixerLayer:
    """A mixer layer in eval mode whose `zeroed` branch outputs exactly 0 (its BatchNorm scale and shift are 0)."""
    torch.manual_seed(0)
    layer = MixerLayer(3, 3, RESIDUALS[residual], NORMS["batch"], ACTIVATIONS["gelu"]).eval()
    with torch.no_grad():
        getattr(layer, zeroed).norm.weight.zero_()
        getattr(layer, zeroed).norm.bias.zero_()
    return layer


@pytest.mark.parametrize("residual", RESIDUALS)
def test_each_residual_placement_adds_what_it_names(residual: str) -> None:
    x = torch.randn(2, 3, 5, 5)
    # pointwise branch P == 0: out = [P(m) + m if pointwise] + [x if block], with m = D(x) [+ x if depthwise]
    layer = zeroed_branch_layer(residual, "pointwise")
    depthwise_x = layer.depthwise(x)
    expected = {
        "none": torch.zeros_like(x),
        "depthwise": torch.zeros_like(x),
        "pointwise": depthwise_x,
        "both": depthwise_x + x,
        "block": x,
    }
    torch.testing.assert_close(layer(x), expected[residual], rtol=0, atol=0)
    # depthwise branch D == 0
    layer = zeroed_branch_layer(residual, "depthwise")
    pointwise_zero, pointwise_x = layer.pointwise(torch.zeros_like(x)), layer.pointwise(x)
    expected = {
        "none": pointwise_zero,
        "depthwise": pointwise_x,
        "pointwise": pointwise_zero,
        "both": pointwise_x + x,
        "block": pointwise_zero + x,
    }
    torch.testing.assert_close(layer(x), expected[residual], rtol=0, atol=0)


def test_layer_norm_normalises_over_channels_at_each_position() -> None:
    norm = ChannelLayerNorm(6)
    x = torch.randn(3, 6, 4, 5) * 3 + 2
    out = norm(x)
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(3, 4, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(dim=1, unbiased=False), torch.ones(3, 4, 5), atol=1e-3, rtol=0)
    torch.testing.assert_close(norm(x[:1, :, 2:3, 1:2]), out[:1, :, 2:3, 1:2])  # no batch or spatial statistics


@pytest.mark.parametrize(
    "name,paper_millions",
    [
        ("convmixer_1536_20", 51.6),
        ("convmixer_768_32", 21.1),
        ("convmixer_1024_20_ks9_p14", 24.4),
        ("convmixer_256_8_cifar10", 0.59),
    ],
)
def test_registry_matches_paper_parameter_counts(name: str, paper_millions: float) -> None:
    with torch.device("meta"):  # shapes only: no 200 MB of weights to initialise
        model = create_model(name)
    count = count_parameters(model)
    assert count == closed_form(get_config(name), image_size=224).params
    assert abs(count / 1e6 - paper_millions) < 0.05, count


def test_create_model_overrides_config_fields() -> None:
    with torch.device("meta"):
        model = create_model("convmixer_256_8_cifar10", num_classes=100, norm="layer")
    assert model.config == ConvMixerConfig(256, 8, 5, 2, num_classes=100, norm="layer")
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['width'\]; accepted: \['activation', 'depth'"):
        create_model("convmixer_256_8_cifar10", width=128)


def test_registry_timm_names_use_timm_activations() -> None:
    assert get_config("convmixer_768_32").activation == "relu"
    assert get_config("convmixer_1536_20").activation == "gelu"


def test_tweet_fits_a_tweet_and_defines_convmixer_once() -> None:
    assert len(tweet.TWEET) <= 280
    functions = [node.name for node in ast.parse(tweet.TWEET).body if isinstance(node, ast.FunctionDef)]
    assert functions == ["ConvMixer"]
    assert tweet.TWEET.count("def ") == 1
    assert tweet.ConvMixer.__code__.co_filename == "<string>"  # the exec'd tweet, not a second copy


def test_config_rebuilds_the_same_architecture() -> None:
    model = ConvMixer(6, 2, 5, 3, 7, residual="block", norm="layer", activation="relu")
    rebuilt = model.config.build()
    assert str(rebuilt) == str(model)
    assert rebuilt.config == model.config
    assert model.config.name == "ConvMixer-6/2"
