"""Exact state-dict converters between the modular ConvMixer, the tweet's nn.Sequential, timm's ConvMixer and the
authors' own (locuslab/convmixer convmixer.py).

The four hold the same tensors under different names; the released ImageNet checkpoints come in timm's layout
(timm's hub) or the authors' (their GitHub release, saved by their timm fork). Each layout is a table from
modular module names to its own, so one renaming routine serves every direction and rejects any state dict with a
missing or unexpected key. Only the tweet's architecture (depthwise residual, BatchNorm, 3 input channels for the
tweet) has a counterpart in the other layouts.
"""

import argparse
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from convmixer.arguments import check_choice
from convmixer.model import ConvMixer, ConvMixerConfig

StateDict = Mapping[str, torch.Tensor]

CONV = ("weight", "bias")
LINEAR = ("weight", "bias")
BATCH_NORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _modular_modules(depth: int) -> dict[str, tuple[str, ...]]:
    """Every module of a depth-`depth` modular ConvMixer that owns tensors, with the names of those tensors."""
    modules = {"stem.conv": CONV, "stem.norm": BATCH_NORM}
    for i in range(depth):
        for branch in ("depthwise", "pointwise"):
            modules[f"blocks.{i}.{branch}.conv"] = CONV
            modules[f"blocks.{i}.{branch}.norm"] = BATCH_NORM
    modules["head.fc"] = LINEAR
    return modules


def _layout_names(fixed: dict[str, str], per_block: dict[str, str], depth: int) -> dict[str, str]:
    """{modular module name: layout's name}; `per_block` names use {i} (block index), {n} (i + 1) and {i3} (i + 3)."""
    names = dict(fixed)
    for i in range(depth):
        names |= {f"blocks.{i}.{module}": name.format(i=i, n=i + 1, i3=i + 3) for module, name in per_block.items()}
    return names


def _modular_names(depth: int) -> dict[str, str]:
    return {name: name for name in _modular_modules(depth)}


def _tweet_names(depth: int) -> dict[str, str]:
    # The tweet is S(A(stem), *[S(R(A(depthwise)), A(pointwise))], pool, flatten, linear) with A = S(conv, act, BN).
    return _layout_names(
        {"stem.conv": "0.0", "stem.norm": "0.2", "head.fc": str(depth + 3)},
        {
            "depthwise.conv": "{n}.0.0.0",
            "depthwise.norm": "{n}.0.0.2",
            "pointwise.conv": "{n}.1.0",
            "pointwise.norm": "{n}.1.2",
        },
        depth,
    )


# timm's mixer layer, S(Residual(fn=S(conv, act, BN)), conv, act, BN), named inside the layer; the authors' own
# model (locuslab/convmixer convmixer.py, which their timm fork registers) builds the same layer.
_TIMM_LAYER = {"depthwise.conv": "0.fn.0", "depthwise.norm": "0.fn.2", "pointwise.conv": "1", "pointwise.norm": "3"}


def _timm_names(depth: int) -> dict[str, str]:
    # timm/models/convmixer.py: stem = S(conv, act, BN), blocks = S(*layers); its `pooling` (SelectAdaptivePool2d)
    # and `head_drop` hold no tensors.
    per_layer = {module: f"blocks.{{i}}.{name}" for module, name in _TIMM_LAYER.items()}
    return _layout_names({"stem.conv": "stem.0", "stem.norm": "stem.2", "head.fc": "head"}, per_layer, depth)


def _locuslab_names(depth: int) -> dict[str, str]:
    # locuslab/convmixer convmixer.py: one nn.Sequential of conv, act, BN, then layer i at index 3 + i, then pool,
    # flatten and the classifier at index depth + 5.
    per_layer = {module: f"{{i3}}.{name}" for module, name in _TIMM_LAYER.items()}
    return _layout_names({"stem.conv": "0", "stem.norm": "2", "head.fc": str(depth + 5)}, per_layer, depth)


def _depth_from_blocks(keys: Iterable[str]) -> int:
    indices = [int(match.group(1)) for key in keys if (match := re.match(r"blocks\.(\d+)\.", key))]
    return max(indices) + 1 if indices else 0


def _depth_from_sequential(keys: Iterable[str], layout: str, first_key: str, modules_around: int) -> int:
    """The depth of a ConvMixer built as one nn.Sequential, whose classifier is its last module, at index
    depth + modules_around."""
    indices = [int(match.group(1)) for key in keys if (match := re.match(r"(\d+)\.", key))]
    if not indices or max(indices) < modules_around:
        raise ValueError(
            f"not a {layout} ConvMixer state dict: "
            f"expected keys like '{first_key}' ... '<depth+{modules_around}>.weight'"
        )
    return max(indices) - modules_around


@dataclass(frozen=True)
class Layout:
    """How one implementation names the tensors of a ConvMixer, for any depth."""

    name: str
    module_names: Callable[[int], dict[str, str]]  # depth -> {modular module name: this layout's name}
    infer_depth: Callable[[Iterable[str]], int]

    def key_map(self, depth: int) -> dict[str, str]:
        """{modular key: this layout's key} for every tensor of a depth-`depth` model."""
        names = self.module_names(depth)
        return {
            f"{module}.{tensor}": f"{names[module]}.{tensor}"
            for module, tensors in _modular_modules(depth).items()
            for tensor in tensors
        }


MODULAR = Layout("modular", _modular_names, _depth_from_blocks)
# Around the layers, the tweet has stem, pool, flatten, classifier; the authors' stem conv, act, BN, pool, flatten,
# classifier.
TWEET = Layout("tweet", _tweet_names, lambda keys: _depth_from_sequential(keys, "tweet", "0.0.weight", 3))
TIMM = Layout("timm", _timm_names, _depth_from_blocks)
LOCUSLAB = Layout("locuslab", _locuslab_names, lambda keys: _depth_from_sequential(keys, "locuslab", "0.weight", 5))
LAYOUTS = {layout.name: layout for layout in (MODULAR, TWEET, TIMM, LOCUSLAB)}
# The layouts a checkpoint comes in, in the order `load_checkpoint` tries them: the released ones, then the
# toolkit's own (a run's checkpoint.pt holds the modular state dict).
CHECKPOINT_LAYOUTS = ("timm", "locuslab", "modular")
# The keys by which a toolkit run's checkpoint.pt is known (some of ablations.store.schema's CHECKPOINT_KEYS, read
# by name: convmixer does not import ablations); its model's state dict is under "model".
RUN_CHECKPOINT = ("run_id", "epoch", "model")


def _mismatch_message(
    source: Layout, depth: int, expected: list[str], missing: list[str], unexpected: list[str]
) -> str:
    running_stats = [key for key in expected if key.rsplit(".", 1)[-1] in RUNNING_STATS]
    if missing == running_stats and not unexpected:
        return (
            f"{source.name} state dict has norms without running statistics (a norm='layer' model?); "
            "only BatchNorm ConvMixers have a tweet/timm counterpart"
        )
    return (
        f"{source.name} state dict does not match the {source.name} layout of a depth-{depth} ConvMixer: "
        f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''}, "
        f"unexpected {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}"
    )


def convert(state_dict: StateDict, source: str, target: str) -> dict[str, torch.Tensor]:
    """Rename every tensor of `state_dict` from the `source` layout to the `target` one (same tensor objects)."""
    check_choice("source", source, LAYOUTS)
    check_choice("target", target, LAYOUTS)
    source_layout, target_layout = LAYOUTS[source], LAYOUTS[target]
    depth = source_layout.infer_depth(state_dict)
    source_keys = source_layout.key_map(depth)
    expected = list(source_keys.values())
    missing = [key for key in expected if key not in state_dict]
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ValueError(_mismatch_message(source_layout, depth, expected, missing, unexpected))
    in_chans = state_dict[source_keys["stem.conv.weight"]].shape[1]
    if target == "tweet" and in_chans != 3:
        raise ValueError(f"the tweet hard-codes 3 input channels; this state dict has in_chans={in_chans}")
    target_keys = target_layout.key_map(depth)
    return {target_keys[modular_key]: state_dict[key] for modular_key, key in source_keys.items()}


def tweet_to_modular(state_dict: StateDict) -> dict[str, torch.Tensor]:
    return convert(state_dict, "tweet", "modular")


def modular_to_tweet(state_dict: StateDict) -> dict[str, torch.Tensor]:
    return convert(state_dict, "modular", "tweet")


def timm_to_modular(state_dict: StateDict) -> dict[str, torch.Tensor]:
    return convert(state_dict, "timm", "modular")


def modular_to_timm(state_dict: StateDict) -> dict[str, torch.Tensor]:
    return convert(state_dict, "modular", "timm")


def infer_config(state_dict: StateDict, activation: str, residual: str = "depthwise") -> ConvMixerConfig:
    """The config of the model a modular state dict belongs to, read off its tensor shapes (the norm too: only
    BatchNorm keeps running statistics).

    The activation and the residual leave no trace in the weights, so they are given (timm's convmixer_768_32 uses
    "relu", the other released models "gelu"). A depth-0 model has no depthwise kernel; it gets the default kernel
    size.
    """
    depth = MODULAR.infer_depth(state_dict)
    dim, in_chans, patch_size, _ = state_dict["stem.conv.weight"].shape
    num_classes = state_dict["head.fc.weight"].shape[0]
    kernel_size = state_dict["blocks.0.depthwise.conv.weight"].shape[-1] if depth else ConvMixerConfig.kernel_size
    return ConvMixerConfig(
        dim=dim,
        depth=depth,
        kernel_size=kernel_size,
        patch_size=patch_size,
        num_classes=num_classes,
        in_chans=in_chans,
        residual=residual,
        norm="batch" if "stem.norm.running_mean" in state_dict else "layer",
        activation=activation,
    )


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint file: bare, wrapped by timm's train.py in {"state_dict": ...} beside its
    arguments (an argparse.Namespace, allowed here) and epoch, or a toolkit run's checkpoint.pt (its "model").
    Loaded with weights_only=True: nothing else runs."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    elif isinstance(checkpoint, Mapping) and set(RUN_CHECKPOINT) <= set(checkpoint):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
    # A model saved inside DistributedDataParallel names every tensor "module.<name>".
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def checkpoint_layout(state_dict: StateDict) -> str:
    """Which of CHECKPOINT_LAYOUTS names the tensors of `state_dict`; ValueError (one line) when none does."""
    for name in CHECKPOINT_LAYOUTS:
        layout = LAYOUTS[name]
        if name == "modular" and "stem.conv.weight" in state_dict:  # its keys depend on the norm: load_state_dict
            return name  # checks them against the model they build
        try:
            if set(layout.key_map(layout.infer_depth(state_dict)).values()) == set(state_dict):
                return name
        except ValueError:  # not even this layout's key pattern
            continue
    first = sorted(state_dict)[:4]
    raise ValueError(f"not a ConvMixer checkpoint in timm's, locuslab's or the toolkit's layout (first keys: {first})")


def load_checkpoint(checkpoint: str | Path | StateDict, activation: str, residual: str = "depthwise") -> ConvMixer:
    """A modular ConvMixer holding the weights of a checkpoint in timm's, the authors' or the toolkit's layout (a
    file, see `read_checkpoint`, or a state dict; a file from a trusted source holding other objects can be loaded
    by hand and passed as a dict)."""
    if isinstance(checkpoint, str | Path):
        checkpoint = read_checkpoint(checkpoint)
    elif "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    layout = checkpoint_layout(checkpoint)
    modular_state_dict = dict(checkpoint) if layout == "modular" else convert(checkpoint, layout, "modular")
    model = infer_config(modular_state_dict, activation, residual).build()
    model.load_state_dict(modular_state_dict)
    return model
