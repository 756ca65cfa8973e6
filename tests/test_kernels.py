"""The depthwise conv on Triton equals nn.Conv2d (on CPU through Triton's interpreter, on a GPU compiled), the
engine's choice of layout and implementation times every candidate on a GPU (tests/test_setup.py holds the rest of
it), the new config values leave every existing run id alone, and the per-kernel-size benchmark runs on a CPU."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

from ablations.config import ConfigError, RunConfig, parse_value
from ablations.engine.setup import Workload, candidates, fastest_setup, time_setup
from ablations.engine.train import train_run
from benchmarks import kernels
from convmixer.depthwise import DepthwiseConv2d, use_impl
from convmixer.model import ConvMixer

CUDA = torch.device("cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# bf16 keeps 8 significant bits: outputs of order 1 may differ in their last bit (~0.4 %) by summation order.
TOLERANCE = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.bfloat16: dict(rtol=1.6e-2, atol=2e-2)}


# Triton's interpreter runs the kernels on CPU tensors, with numpy, exactly as written; it must be chosen before
# triton is first imported (its own library functions are jitted then), so these tests run in a process of their
# own, started by test_the_triton_depthwise_conv_equals_nn_conv2d_on_the_interpreter.
def on_interpreter(test):
    """Skipped but in that process; slow, as the interpreter runs each kernel as Python (over a second of CPU)."""
    only_there = pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") != "1", reason="run in their own process, with TRITON_INTERPRET=1"
    )
    return pytest.mark.slow(only_there(test))


def twins(dim: int, k: int, device: torch.device) -> tuple[nn.Conv2d, DepthwiseConv2d]:
    """nn.Conv2d as the model had it, and a Triton DepthwiseConv2d loaded from its state_dict."""
    reference = nn.Conv2d(dim, dim, k, groups=dim, padding="same").to(device)
    triton = DepthwiseConv2d(dim, k).to(device)
    triton.load_state_dict(reference.state_dict())  # strict: the same keys and shapes
    use_impl(triton, "triton")
    return reference, triton


def assert_same_conv(dim: int, k: int, shape: tuple, layout: torch.memory_format, dtype: torch.dtype,
                     device: torch.device) -> None:  # fmt: skip
    """Output, input gradient, weight and bias gradients of the two convs agree within `dtype`'s tolerance."""
    torch.manual_seed(k)
    reference, triton = twins(dim, k, device)
    x = torch.randn(shape, device=device).contiguous(memory_format=layout)
    inputs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    outputs = []
    for conv, inp in zip((reference, triton), inputs, strict=True):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = conv(inp)
        out.float().mul(torch.linspace(-1, 1, out.numel(), device=device).view_as(out)).sum().backward()
        outputs.append(out)
    assert outputs[1].dtype == outputs[0].dtype == dtype
    assert outputs[1].is_contiguous(memory_format=layout)
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(outputs[1].float(), outputs[0].float(), **tol)
    torch.testing.assert_close(inputs[1].grad.float(), inputs[0].grad.float(), **tol)
    for name in ("weight", "bias"):
        ours, theirs = getattr(triton, name).grad, getattr(reference, name).grad
        scale = theirs.abs().max()  # a sum over every pixel of the batch: compare against its magnitude
        torch.testing.assert_close(ours / scale, theirs / scale, **tol)


@pytest.mark.slow
def test_the_triton_depthwise_conv_equals_nn_conv2d_on_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", __file__, "-k", "interpreted"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    passed = re.search(r"^(\d+) passed", done.stdout, re.M)  # any number: adding a case must not break it
    assert done.returncode == 0 and passed and int(passed[1]) >= 1, done.stdout[-3000:] + done.stderr[-2000:]


@on_interpreter
@pytest.mark.parametrize(
    "k, layout",
    [(3, torch.contiguous_format), (4, torch.channels_last), (5, torch.channels_last), (7, torch.contiguous_format)],
)
def test_interpreted_fp32(k, layout):
    """Odd and even kernels (the even one pads one more pixel on the bottom/right), both layouts, a feature map
    that is not square and smaller than the kernel in one side, channels not a multiple of the block."""
    assert_same_conv(5, k, (3, 5, 6, 4), layout, torch.float32, torch.device("cpu"))


@on_interpreter
def test_interpreted_bf16():
    assert_same_conv(6, 5, (2, 6, 7, 7), torch.channels_last, torch.bfloat16, torch.device("cpu"))


@on_interpreter
def test_interpreted_under_torch_compile():
    """torch.compile traces the custom ops through their fake and autograd registrations (aot_eager: no C++ build)."""
    _, conv = twins(4, 3, torch.device("cpu"))
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    eager = conv(x)
    (eager_grad,) = torch.autograd.grad(eager.sum(), x)
    compiled = torch.compile(conv, backend="aot_eager", fullgraph=True)(x)
    (compiled_grad,) = torch.autograd.grad(compiled.sum(), x)
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(compiled_grad, eager_grad)


def test_the_depthwise_conv_keeps_nn_conv2d_state_dict_keys_so_checkpoints_load_both_ways():
    model = ConvMixer(8, 2, 5, 2, 10)
    conv = model.blocks[0].depthwise.conv
    assert isinstance(conv, DepthwiseConv2d) and "blocks.0.depthwise.conv.weight" in model.state_dict()
    plain = nn.Conv2d(8, 8, 5, groups=8, padding="same")
    plain.load_state_dict(conv.state_dict())
    use_impl(model, "triton")
    conv.load_state_dict(plain.state_dict())
    assert conv.impl == "triton" and set(conv.state_dict()) == {"weight", "bias"}


def test_an_unknown_depthwise_impl_is_refused():
    with pytest.raises(ValueError, match="cudnn.*choose one of torch, triton"):
        use_impl(ConvMixer(8, 1, 3, 2, 10), "cudnn")


def test_the_new_values_change_no_existing_run_id():
    # The ids of these configs before depthwise_impl existed and channels_last accepted "auto" (commit 5f6ded5 had
    # their first 10 hex digits; ids have 16 since).
    assert RunConfig().run_id() == RunConfig(depthwise_impl="torch").run_id() == "640c7794c352d001"
    assert RunConfig(channels_last=False).run_id() == "bcd4dd051c7c73d1"
    assert len({RunConfig(channels_last="auto").run_id(), RunConfig(depthwise_impl="auto").run_id(),
                RunConfig().run_id()}) == 3  # fmt: skip


def test_channels_last_accepts_auto_from_the_command_line_and_refuses_other_words():
    assert parse_value("channels_last", "Auto", "--set") == "auto"
    assert parse_value("channels_last", "no", "--set") is False
    with pytest.raises(ConfigError, match="channels_last='maybe'.*off/auto"):
        parse_value("channels_last", "maybe", "--set")
    with pytest.raises(ConfigError, match="'auto' is not accepted"):
        parse_value("hflip", "auto", "--set")
    RunConfig(channels_last="auto", depthwise_impl="auto").validate()
    with pytest.raises(ConfigError, match="depthwise_impl='cudnn'.*auto, torch, triton"):
        RunConfig(depthwise_impl="cudnn").validate()
    with pytest.raises(ConfigError, match="channels_last='yes' is not accepted: expected true, false or auto"):
        RunConfig(channels_last="yes").validate()


def test_a_cpu_run_left_at_auto_trains_channels_last_on_torch_and_says_so():
    cfg = RunConfig(dataset="synthetic", dim=16, depth=1, kernel_size=5, patch_size=4, train_subset=100,
                    test_subset=50, batch_size=50, epochs=1, channels_last="auto", depthwise_impl="auto")  # fmt: skip
    metrics = train_run(cfg, None, device="cpu", log=lambda line: None)
    assert metrics["status"] == "done"
    assert (metrics["channels_last_used"], metrics["depthwise_impl_used"]) == (True, "torch")


@pytest.mark.slow
def test_the_kernel_benchmark_writes_a_row_per_setting_with_k5_as_the_baseline(tmp_path, capsys):
    out = tmp_path / "kernels.json"
    assert kernels.cli(["--device", "cpu", "--tiny", "--kernels", "3,5", "--repeats", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert len(rows) == 2 * 2 * 2 * 2  # kernel sizes x precisions x layouts x (model, depthwise); torch only on CPU
    assert all(row["seconds"] > 0 and not row["error"] for row in rows)
    assert all(row["per_flop_vs_k5"] == 1.0 for row in rows if row["kernel"] == 5)
    conv3 = next(row for row in rows if row["what"] == "depthwise" and row["kernel"] == 3)
    assert conv3["flops"] == 3 * 2 * 3 * 3 * 16 * 8 * 8 * 4  # three directions of 2*k*k*C*H*W*N
    assert "| precision | k | fastest layout |" in (tmp_path / "kernels.md").read_text()
    assert report["complete"]


@pytest.mark.slow
def test_a_kernel_benchmark_cut_off_keeps_the_kernel_sizes_it_finished(tmp_path, monkeypatch):
    """A GPU is lent for minutes: a table stopped at its time limit still holds every kernel size measured."""
    measured = kernels.measure

    def stop_at_k5(shape, key, *args):
        if key["kernel"] == 5:
            raise KeyboardInterrupt  # what a time limit's signal ends the run with, as far as the file is concerned
        return measured(shape, key, *args)

    monkeypatch.setattr(kernels, "measure", stop_at_k5)
    out = tmp_path / "kernels.json"
    with pytest.raises(KeyboardInterrupt):
        kernels.main(["--device", "cpu", "--tiny", "--kernels", "3,5", "--repeats", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    assert {row["kernel"] for row in report["rows"]} == {3} and not report["complete"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--kernels", "3,x"], "--kernels '3,x' is not accepted"),
        (["--kernels", "5,5"], "--kernels '5,5' is not accepted"),
        (["--repeats", "0"], "--repeats 0 is not accepted"),
        (["--device", "tpu"], "device='tpu' is not accepted"),
    ],
)
def test_bad_benchmark_options_are_one_line_errors(argv, message, capsys):
    assert kernels.cli(["--tiny", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# --- on a GPU ---


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("k", [3, 15])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_compiled_triton_depthwise_conv_equals_cudnn_at_the_cifar_shape(k, layout, dtype):
    torch.backends.cudnn.allow_tf32 = False  # compare against IEEE fp32, not TF32
    try:
        assert_same_conv(256, k, (64, 256, 16, 16), layout, dtype, CUDA)
    finally:
        torch.backends.cudnn.allow_tf32 = True


@pytest.mark.cuda
@needs_cuda
def test_auto_on_a_gpu_times_every_candidate_and_picks_one():
    work = Workload(CUDA, torch.bfloat16, dim=64, kernel_size=9, size=16, batch=64)
    assert all(time_setup(setup, work) > 0 for setup in candidates("auto", "auto", CUDA))
    assert fastest_setup("auto", "auto", work) in candidates("auto", "auto", CUDA)
