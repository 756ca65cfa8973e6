"""Counting: the fvcore trace, the closed form and torch's FlopCounterMode must agree; the CLI must fail cleanly."""

import itertools
import json
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convmixer import count, counting
from convmixer.count import CountError, build_model, count_model, trace_counts
from convmixer.counting import closed_form
from convmixer.model import ACTIVATIONS, NORMS, RESIDUALS, ConvMixerConfig, count_parameters
from convmixer.registry import get_config
from convmixer.throughput import measure_throughput

# (kernel, patch, image, depth): odd and even kernels, 1x1 kernels, patches that do and do not divide the image.
SHAPES = [(3, 2, 8, 1), (4, 3, 10, 2), (1, 5, 12, 0), (8, 1, 7, 1), (5, 4, 9, 2)]
KNOBS = list(itertools.product(RESIDUALS, NORMS, ACTIVATIONS))


@pytest.mark.parametrize("residual,norm,activation", KNOBS)
def test_trace_equals_closed_form_over_the_ablation_space(residual, norm, activation):
    for kernel, patch, image, depth in SHAPES:
        config = ConvMixerConfig(4, depth, kernel, patch, 3, 3, residual, norm, activation)
        assert trace_counts(config.build(), image) == closed_form(config, image), (config, image)


def test_closed_form_by_hand():
    # dim 2, depth 1, kernel 3, patch 2, 4x4 image -> 2x2 positions, a map has 2*4 = 8 elements.
    counts = closed_form(ConvMixerConfig(2, 1, 3, 2, num_classes=3), 4)
    assert counts.by_category == {
        "conv": 8 * 3 * 2 * 2 + 8 * 3 * 3 + 8 * 2,  # stem, depthwise, pointwise
        "linear": 2 * 3,
        "norm": 3 * 2 * 8,  # three BatchNorms, 2 per element
        "activation": 3 * 8,
        "residual": 8,
        "pool": 8,
    }
    assert counts.params == (2 * 3 * 4 + 2 + 4) + (2 * 9 + 2 + 4 + 2 * 2 + 2 + 4) + (2 * 3 + 3)
    assert counts.flops == 2 * counts.macs == 2 * sum(counts.by_category.values())


def test_the_closed_form_imports_no_torch(repo_root):
    """The engine and the benchmarks take their counts from convmixer.counting: arithmetic, loaded without torch."""
    code = "import sys, convmixer.counting; print(*{name.split('.')[0] for name in sys.modules})"
    done = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    assert "convmixer" in loaded and not loaded & {"torch", "numpy", "fvcore"}


def test_bad_arguments_name_what_is_accepted():
    with pytest.raises(ValueError, match="residual='skip' is not accepted; choose one of 'depthwise', "):
        closed_form(ConvMixerConfig(4, 1, residual="skip"), 8)
    with pytest.raises(ValueError, match="dtype='fp8' is not accepted; choose one of 'fp32', 'bf16', 'fp16'"):
        measure_throughput(ConvMixerConfig(4, 1, 3, 2).build(), 8, 2, dtype="fp8")


def test_in_chans_and_parameters_match_the_module():
    config = ConvMixerConfig(6, 2, 5, 3, num_classes=7, in_chans=1, norm="layer")
    model = config.build()
    assert closed_form(config, 11).params == count_parameters(model)
    assert count_model(config, 11) == closed_form(config, 11)


@pytest.mark.parametrize("kernel,patch,image,depth", [(3, 2, 8, 1), (5, 3, 10, 2), (1, 4, 9, 0)])
def test_tweet_counts_like_the_modular_model(kernel, patch, image, depth):
    config = ConvMixerConfig(4, depth, kernel, patch, num_classes=5)
    tweet = build_model(config, tweet=True)
    assert isinstance(tweet, nn.Sequential)
    assert trace_counts(tweet, image) == closed_form(config, image) == count_model(config, image)


def test_tweet_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="kernel_size=4 cannot run in the tweet"):
        count_model(ConvMixerConfig(4, 1, 4, 2), 8, tweet=True)
    with pytest.raises(ValueError, match="residual='both'"):
        count_model(ConvMixerConfig(4, 1, 3, 2, residual="both"), 8, tweet=True)


@pytest.mark.parametrize("kernel,patch,image,norm", [(3, 2, 8, "batch"), (4, 3, 10, "layer"), (6, 5, 11, "batch")])
def test_conv_and_linear_agree_with_torch_flop_counter(kernel, patch, image, norm):
    config = ConvMixerConfig(4, 2, kernel, patch, num_classes=5, norm=norm)
    model = config.build().eval()
    with FlopCounterMode(display=False) as torch_counter, torch.no_grad():
        model(torch.randn(1, 3, image, image))
    assert torch_counter.get_total_flops() == 2 * count_model(config, image).conv_linear_macs


@pytest.mark.slow  # traces a 50-million-parameter model at 224 px
def test_convmixer_1536_20_at_224():
    counts = count_model(get_config("convmixer_1536_20"), 224)  # raises if the trace and closed form differ
    assert round(counts.params / 1e6, 2) == 51.63  # timm's figure for this model
    # The depthwise convs (padding="same" -> aten::_convolution_mode, unknown to stock fvcore) are counted.
    assert counts.by_category["conv"] == 1536 * 32 * 32 * (3 * 7 * 7 + 20 * (9 * 9 + 1536))


class WithExtraOp(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.body, self.op = ConvMixerConfig(4, 1, 3, 2, num_classes=2).build(), op

    def forward(self, x):
        return self.op(self.body(x))


@pytest.mark.parametrize("op,name", [(torch.sigmoid, "aten::sigmoid"), (lambda x: x.clamp(0, 1), "aten::clamp")])
def test_an_op_without_a_handle_is_an_error(op, name):
    # clamp is one of the ops stock fvcore skips silently; sigmoid is one it warns about.
    with pytest.raises(CountError, match=name):
        trace_counts(WithExtraOp(op), 8)


def test_disagreeing_with_the_closed_form_is_an_error(monkeypatch):
    monkeypatch.setitem(counting.NORM_MACS_PER_ELEMENT, "batch", 3)
    with pytest.raises(CountError, match="closed form"):
        count_model(ConvMixerConfig(4, 1, 3, 2), 8)


def test_trace_restores_training_mode():
    model = ConvMixerConfig(4, 1, 3, 2).build().train()
    trace_counts(model, 8)
    assert model.training


def test_cli_text_and_json(capsys):
    flags = ["--dim", "8", "--depth", "2", "--kernel-size", "4", "--patch-size", "3", "--image-size", "10"]
    flags += ["--num-classes", "5", "--norm", "layer", "--residual", "both"]
    assert count.main(flags) == 0
    text = capsys.readouterr().out
    assert "1 MAC = 2 FLOPs" in text and "conv+linear MACs" in text and "fvcore trace == closed form" in text
    assert "input 3x10x10 -> 3x3 patches (the last 1 px of each side are dropped)" in text  # 10 = 3 * 3 + 1
    assert count.main([*flags, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    config = ConvMixerConfig(8, 2, 4, 3, num_classes=5, norm="layer", residual="both")
    expected = count_model(config, 10).to_dict()
    assert {key: report[key] for key in expected} == expected
    assert report["model"]["tweet"] is False and report["model"]["image_size"] == 10
    old_name = ["--n-classes" if flag == "--num-classes" else flag for flag in flags]  # scripts may still pass it
    assert count.main([*old_name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == report


def test_cli_registry_model_with_override(capsys):
    assert count.main(["--model", "convmixer_256_8_cifar10", "--image-size", "32", "--depth", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["dim"] == 256 and report["model"]["depth"] == 1 and report["model"]["kernel_size"] == 5


@pytest.mark.parametrize(
    "model, image_size",
    [
        ("convmixer_256_8_cifar10", 32),
        ("convmixer_256_8_ks9_p1_cifar10", 32),
        pytest.param("convmixer_768_32", 224, marks=pytest.mark.slow),  # traces a 21-million-parameter model at 224 px
    ],
)
def test_cli_counts_a_registry_model_at_its_own_image_size(model, image_size, capsys):
    """A CIFAR-10 model counted at 224 px overstated its MACs 49-fold; --image-size still overrides."""
    assert count.main(["--model", model, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["image_size"] == image_size
    assert report["macs"] == closed_form(get_config(model), image_size).macs
    assert count.main(["--model", model, "--image-size", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["image_size"] == 64


def test_cli_help_shows_each_models_image_size(capsys):
    with pytest.raises(SystemExit) as exited:
        count.main(["--help"])
    assert exited.value.code == 0
    assert "convmixer_256_8_cifar10 (32 px)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--dim", "8", "--depth", "1", "--residual", "foo"], "invalid choice: 'foo'"),
        (["--dim", "0", "--depth", "1"], "dim=0"),
        (["--depth", "1"], "--dim and --depth are required"),
        (
            ["--dim", "8", "--depth", "1", "--image-size", "5"],
            "patch_size=7 is not accepted: larger than the 5x5 images",
        ),
        (["--dim", "8", "--depth", "1", "--kernel-size", "4", "--tweet"], "kernel_size=4 cannot run in the tweet"),
        (["--dim", "8", "--depth", "1", "--image-size", "7", "--throughput", "--device", "tpu"], "device='tpu'"),
        (["--dim", "8", "--depth", "1", "--image-size", "7", "--throughput", "--batch-size", "0"], "batch_size=0"),
        (["--model", "convmixer_256_8_cifar10", "--patch-size", "0"], "patch_size=0 is not accepted"),
        # too big for any machine: refused before allocating (or, for the depth, before building 1e9 layers)
        (["--dim", "8", "--depth", "1", "--image-size", str(10**8)], "image_size=100000000 are not accepted"),
        (["--dim", str(10**20), "--depth", "1", "--image-size", "32"], "GiB of memory, more than the"),
        (["--dim", "8", "--depth", str(10**9), "--image-size", "32"], "depth=1000000000, image_size=32 are not"),
        (["--dim", "8", "--depth", "1", "--throughput", "--batch-size", str(10**12)], "batch_size=1000000000000"),
    ],
)
def test_cli_bad_values_exit_2(flags, message, capsys):
    assert count.cli(flags) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{count.PROG}: error: ") and message in err and err.count("\n") == 1


@pytest.mark.slow  # the entry point's smoke test: a fresh interpreter imports torch
def test_cli_module_entry_point_has_no_traceback():
    bad = [sys.executable, "-m", "convmixer.count", "--dim", "8", "--depth", "-1"]
    result = subprocess.run(bad, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("depth=-1 is not accepted; it must be an integer >= 0")


def test_throughput_on_cpu(capsys):
    speed = measure_throughput(ConvMixerConfig(8, 1, 3, 2, num_classes=4).build(), 16, 4, "cpu", warmup=1, repeats=3)
    assert speed["images_per_s"] > 0 and speed["median_batch_s"] > 0 and speed["peak_memory_mb"] >= 0
    flags = ["--dim", "8", "--depth", "1", "--image-size", "16", "--patch-size", "2", "--throughput", "--json"]
    assert count.main([*flags, "--batch-size", "2", "--repeats", "2", "--warmup", "0", "--channels-last"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["throughput"]["images_per_s"] > 0 and report["throughput"]["channels_last"] is True
