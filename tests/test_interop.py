"""State-dict converters: round trips, key completeness, errors on foreign keys, and equivalence with a
module laid out like timm's ConvMixer (rebuilt here from timm/models/convmixer.py; timm is not a dependency)."""

import pytest
import torch
from torch import nn

from convmixer.interop import (
    convert,
    infer_config,
    load_checkpoint,
    modular_to_timm,
    modular_to_tweet,
    timm_to_modular,
    tweet_to_modular,
)
from convmixer.model import ConvMixer, ConvMixerConfig
from convmixer.tweet import ConvMixer as TweetConvMixer


class TimmResidual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class TimmLayoutConvMixer(nn.Module):
    """timm's ConvMixer module tree and forward, without its registry, pooling class or checkpointing."""

    def __init__(self, dim: int, depth: int, kernel_size: int, patch_size: int, num_classes: int, act_layer) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, patch_size, stride=patch_size), act_layer(), nn.BatchNorm2d(dim))
        block = lambda: nn.Sequential(  # noqa: E731
            TimmResidual(
                nn.Sequential(
                    nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"), act_layer(), nn.BatchNorm2d(dim)
                )
            ),
            nn.Conv2d(dim, dim, kernel_size=1),
            act_layer(),
            nn.BatchNorm2d(dim),
        )
        self.blocks = nn.Sequential(*[block() for _ in range(depth)])
        self.pooling = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head_drop = nn.Dropout(0.0)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.pooling(self.blocks(self.stem(x)))))


def randomized(model: nn.Module) -> nn.Module:
    """Every tensor distinct, including BatchNorm statistics and counters, so a swapped key cannot go unnoticed."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            else:
                tensor.fill_(int(torch.randint(1, 1000, ())))
    return model


def assert_same_state(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected)
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_round_trips_are_identity(depth: int) -> None:
    modular = randomized(ConvMixer(6, depth, 3, 2, 4)).state_dict()
    assert_same_state(tweet_to_modular(modular_to_tweet(modular)), modular)
    assert_same_state(timm_to_modular(modular_to_timm(modular)), modular)
    tweet = randomized(TweetConvMixer(6, depth, 3, 2, 4)).state_dict()
    assert_same_state(modular_to_tweet(tweet_to_modular(tweet)), tweet)
    assert_same_state(convert(convert(tweet, "tweet", "timm"), "timm", "tweet"), tweet)


@pytest.mark.parametrize("depth", [0, 2])
def test_converted_keys_are_exactly_the_targets_keys(depth: int) -> None:
    tweet, modular = TweetConvMixer(5, depth, 3, 2, 4), ConvMixer(5, depth, 3, 2, 4)
    timm = TimmLayoutConvMixer(5, depth, 3, 2, 4, nn.GELU)
    assert set(tweet_to_modular(tweet.state_dict())) == set(modular.state_dict())
    assert set(modular_to_tweet(modular.state_dict())) == set(tweet.state_dict())
    assert set(modular_to_timm(modular.state_dict())) == set(timm.state_dict())
    assert any(key.endswith("num_batches_tracked") for key in modular_to_timm(modular.state_dict()))


def test_tweet_weights_give_the_tweets_outputs() -> None:
    torch.manual_seed(0)
    tweet = randomized(TweetConvMixer(6, 2, 5, 2, 4)).eval()
    modular = ConvMixer(6, 2, 5, 2, 4).eval()
    modular.load_state_dict(tweet_to_modular(tweet.state_dict()))
    images = torch.randn(2, 3, 9, 9)
    assert torch.equal(modular(images), tweet(images))
    assert torch.equal(
        modular.state_dict()["blocks.1.pointwise.norm.num_batches_tracked"], tweet[2][1][2].num_batches_tracked
    )


@pytest.mark.parametrize(
    "kernel_size,activation,act_layer", [(5, "gelu", nn.GELU), (3, "relu", nn.ReLU), (4, "gelu", nn.GELU)]
)
def test_timm_checkpoint_gives_timms_outputs(kernel_size: int, activation: str, act_layer: type) -> None:
    # timm pads "same" like the modular model, so even kernels match too (unlike the tweet).
    torch.manual_seed(0)
    timm = randomized(TimmLayoutConvMixer(6, 2, kernel_size, 3, 5, act_layer)).eval()
    modular = load_checkpoint(timm.state_dict(), activation).eval()
    assert modular.config == ConvMixerConfig(6, 2, kernel_size, 3, 5, activation=activation)
    images = torch.randn(2, 3, 10, 10)
    assert torch.equal(modular(images), timm(images))
    timm_again = TimmLayoutConvMixer(6, 2, kernel_size, 3, 5, act_layer).eval()
    timm_again.load_state_dict(modular_to_timm(modular.state_dict()))
    assert torch.equal(timm_again(images), timm(images))


def test_timm_checkpoint_file_wrapped_like_timm_train_py(tmp_path) -> None:
    timm = randomized(TimmLayoutConvMixer(4, 1, 3, 2, 3, nn.GELU))
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 3, "state_dict": timm.state_dict()}, path)
    model = load_checkpoint(path, "gelu")
    assert_same_state(modular_to_timm(model.state_dict()), timm.state_dict())


def test_infer_config_reads_shapes_and_keeps_default_kernel_at_depth_zero() -> None:
    config = ConvMixerConfig(7, 0, 5, 4, 11, in_chans=1, activation="relu")
    inferred = infer_config(config.build().state_dict(), "relu")
    assert inferred == ConvMixerConfig(7, 0, ConvMixerConfig.kernel_size, 4, 11, in_chans=1, activation="relu")
    assert infer_config(ConvMixer(7, 3, 5, 4, 11).state_dict(), "gelu") == ConvMixerConfig(7, 3, 5, 4, 11)


def test_missing_and_unexpected_keys_are_named() -> None:
    state = dict(ConvMixer(4, 2, 3, 2, 3).state_dict())
    del state["blocks.1.depthwise.norm.num_batches_tracked"]
    with pytest.raises(ValueError, match=r"missing \['blocks.1.depthwise.norm.num_batches_tracked'\]"):
        modular_to_tweet(state)
    state = {**ConvMixer(4, 2, 3, 2, 3).state_dict(), "blocks.0.extra.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected \['blocks.0.extra.weight'\]"):
        modular_to_timm(state)
    state = {key: value for key, value in ConvMixer(4, 3, 3, 2, 3).state_dict().items() if "blocks.1." not in key}
    with pytest.raises(ValueError, match="depth-3 ConvMixer: missing .*blocks.1.depthwise.conv.weight"):
        modular_to_timm(state)


def test_wrong_layout_is_rejected() -> None:
    tweet_state = TweetConvMixer(4, 1, 3, 2, 3).state_dict()
    modular_state = ConvMixer(4, 1, 3, 2, 3).state_dict()
    with pytest.raises(ValueError, match="modular state dict does not match"):
        modular_to_timm(tweet_state)
    with pytest.raises(ValueError, match="not a tweet ConvMixer state dict"):
        tweet_to_modular(modular_state)
    with pytest.raises(ValueError, match="timm state dict does not match"):
        timm_to_modular(modular_to_tweet(modular_state))
    with pytest.raises(ValueError, match="target='keras' is not accepted; choose one of 'modular', 'tweet', 'timm'"):
        convert(modular_state, "modular", "keras")


def test_ablations_without_a_counterpart_are_rejected() -> None:
    with pytest.raises(ValueError, match="norms without running statistics.*norm='layer'"):
        modular_to_timm(ConvMixer(4, 1, norm="layer").state_dict())
    with pytest.raises(ValueError, match="tweet hard-codes 3 input channels; .* in_chans=1"):
        modular_to_tweet(ConvMixer(4, 1, in_chans=1).state_dict())


def locuslab_convmixer(dim: int, depth: int, kernel_size: int, patch_size: int, num_classes: int) -> nn.Sequential:
    """The authors' ConvMixer (locuslab/convmixer convmixer.py: one nn.Sequential), the layout of their release."""
    return nn.Sequential(
        nn.Conv2d(3, dim, patch_size, stride=patch_size),
        nn.GELU(),
        nn.BatchNorm2d(dim),
        *[
            nn.Sequential(
                TimmResidual(
                    nn.Sequential(
                        nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"), nn.GELU(), nn.BatchNorm2d(dim)
                    )
                ),
                nn.Conv2d(dim, dim, kernel_size=1),
                nn.GELU(),
                nn.BatchNorm2d(dim),
            )
            for _ in range(depth)
        ],
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(dim, num_classes),
    )


@pytest.mark.parametrize("depth", [0, 2])
def test_a_checkpoint_in_the_authors_layout_gives_their_outputs(tmp_path, depth: int) -> None:
    import argparse

    torch.manual_seed(0)
    theirs = randomized(locuslab_convmixer(6, depth, 5, 3, 4)).eval()
    path = tmp_path / "convmixer.pth.tar"
    # As timm's train.py saves: the arguments (an argparse.Namespace) beside the weights, names without "module.".
    torch.save({"epoch": 1, "args": argparse.Namespace(lr=0.01), "state_dict": theirs.state_dict()}, path)
    ours = load_checkpoint(path, "gelu").eval()
    assert ours.config == ConvMixerConfig(6, depth, 5 if depth else ConvMixerConfig.kernel_size, 3, 4)
    images = torch.randn(2, 3, 12, 12)
    assert torch.equal(ours(images), theirs(images))
    assert_same_state(convert(ours.state_dict(), "modular", "locuslab"), theirs.state_dict())


def test_a_ddp_prefixed_checkpoint_loads_and_a_foreign_one_is_named(tmp_path) -> None:
    timm = randomized(TimmLayoutConvMixer(4, 1, 3, 2, 3, nn.GELU))
    path = tmp_path / "ddp.pth"
    torch.save({f"module.{key}": value for key, value in timm.state_dict().items()}, path)
    assert_same_state(modular_to_timm(load_checkpoint(path, "gelu").state_dict()), timm.state_dict())
    with pytest.raises(ValueError, match="not a ConvMixer checkpoint in timm's, locuslab's or the toolkit's layout"):
        load_checkpoint({"fc.weight": torch.zeros(2, 2)}, "gelu")
