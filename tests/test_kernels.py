"""The depthwise conv on Triton equals nn.Conv2d (on CPU through Triton's interpreter, on a GPU compiled), the
engine's choice of layout and implementation times every candidate on a GPU (tests/test_setup.py holds the rest of
it), the new config values leave every existing run id alone, and the per-kernel-size benchmark runs on a CPU."""

import json

import pytest
import torch
import torch._dynamo  # noqa: F401  (a custom op's first call imports it: here, at collection, not in a fast test)
from torch import nn

from ablations.config import ConfigError, RunConfig, parse_value
from ablations.engine.setup import Workload, candidates, fastest_setup, time_setup
from ablations.engine.train import train_run
from benchmarks import kernels
from convmixer import depthwise
from convmixer.depthwise import DepthwiseConv2d, use_impl
from convmixer.model import ConvMixer

try:  # imported at collection too, not in the first fast test; the interpreter tests are skipped without it
    import triton
except ModuleNotFoundError:
    triton = None

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# Low precisions keep 8 (bf16) or 11 (fp16) significant bits: outputs of order 1 may differ in their last bit by
# summation order (both sides accumulate in fp32 and round once).
TOLERANCE = {
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.bfloat16: dict(rtol=1.6e-2, atol=2e-2),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
}
CL, NCHW = torch.channels_last, torch.contiguous_format


@pytest.fixture
def interpreter(monkeypatch):
    """Triton's interpreter, which runs the kernels on CPU tensors with numpy exactly as written."""
    if triton is None:
        pytest.skip("needs triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def twins(dim: int, k: int, device: torch.device, bias: bool = True) -> tuple[nn.Conv2d, DepthwiseConv2d]:
    """nn.Conv2d as the model had it, and a Triton DepthwiseConv2d loaded from its state_dict."""
    reference = nn.Conv2d(dim, dim, k, groups=dim, padding="same", bias=bias).to(device)
    ours = DepthwiseConv2d(dim, k).to(device)
    if not bias:
        ours.register_parameter("bias", None)
    ours.load_state_dict(reference.state_dict())  # strict: the same keys and shapes
    use_impl(ours, "triton")
    return reference, ours


def assert_same_conv(k: int, shape: tuple, layout: torch.memory_format, dtype: torch.dtype,
                     device: torch.device, bias: bool = True) -> None:  # fmt: skip
    """Output, input gradient, weight and bias gradients of the two convs agree within `dtype`'s tolerance."""
    torch.manual_seed(k)
    reference, ours = twins(shape[1], k, device, bias)
    x = torch.randn(shape, device=device).contiguous(memory_format=layout)
    inputs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    outputs = []
    for conv, inp in zip((reference, ours), inputs, strict=True):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = conv(inp)
        out.float().mul(torch.linspace(-1, 1, out.numel(), device=device).view_as(out)).sum().backward()
        outputs.append(out)
    assert outputs[1].dtype == outputs[0].dtype == dtype
    assert outputs[1].is_contiguous(memory_format=layout)
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(outputs[1].float(), outputs[0].float(), **tol)
    torch.testing.assert_close(inputs[1].grad.float(), inputs[0].grad.float(), **tol)
    for name in ("weight", "bias") if bias else ("weight",):
        got, expected = getattr(ours, name).grad, getattr(reference, name).grad
        scale = expected.abs().max()  # a sum over every pixel of the batch: compare against its magnitude
        torch.testing.assert_close(got / scale, expected / scale, **tol)


# On the interpreter (fast, each about 0.5 s of CPU): tiles of INTERPRETED_TILES' 4x4 pixels and 4 channels, so
# 7 or 6 pixels span two tiles with a halo across their border and a masked remainder; 3 channels leave part of a
# channel block masked, 5 start a second; 2 images give the weight gradient 2 slots to sum.
@pytest.mark.parametrize(
    "k, shape, layout, dtype",
    [
        (3, (2, 3, 4, 7), CL, torch.float32),  # odd kernel, channels_last
        (2, (2, 3, 6, 4), NCHW, torch.float32),  # even: the extra pixel of "same" padding on the bottom/right
        (3, (2, 3, 3, 6), NCHW, torch.bfloat16),
        (1, (2, 5, 5, 6), CL, torch.float16),
    ],
)
def test_interpreted_triton_conv_equals_nn_conv2d(interpreter, k, shape, layout, dtype):
    assert_same_conv(k, shape, layout, dtype, CPU)


def test_interpreted_triton_conv_without_bias(interpreter):
    assert_same_conv(2, (2, 3, 5, 3), CL, torch.float32, CPU, bias=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    "k, shape, layout, dtype",
    [
        (4, (3, 5, 6, 4), CL, torch.float32),  # even, feature map smaller than the kernel in one side
        (5, (3, 5, 9, 7), NCHW, torch.float32),
        (7, (2, 6, 7, 7), CL, torch.bfloat16),
        (8, (2, 3, 11, 6), NCHW, torch.float16),
        (9, (2, 5, 6, 9), CL, torch.float32),  # more than one tile and channel block of every kind
        (15, (1, 3, 5, 9), NCHW, torch.bfloat16),
        (31, (1, 2, 4, 7), CL, torch.float32),  # the largest kernel: every tap but a few falls outside
    ],
)
def test_interpreted_triton_conv_equals_nn_conv2d_over_more_shapes(interpreter, k, shape, layout, dtype):
    assert_same_conv(k, shape, layout, dtype, CPU)


@pytest.mark.slow
@pytest.mark.parametrize("tiles", [{"TILE_H": 2, "TILE_W": 8, "BLOCK_C": 2}, {"TILE_H": 8, "TILE_W": 2, "BLOCK_C": 8}])
def test_interpreted_triton_conv_is_exact_for_other_tile_shapes(interpreter, monkeypatch, tiles):
    monkeypatch.setattr(depthwise, "INTERPRETED_TILES", tiles)
    depthwise.triton_kernels.cache_clear()
    try:
        assert_same_conv(5, (3, 5, 7, 9), CL, torch.float32, CPU)
        assert_same_conv(4, (2, 3, 9, 5), NCHW, torch.float32, CPU)
    finally:
        depthwise.triton_kernels.cache_clear()


@pytest.mark.slow
def test_interpreted_under_torch_compile(interpreter):
    """torch.compile traces the custom ops through their fake and autograd registrations (aot_eager: no C++ build)."""
    _, conv = twins(4, 3, CPU)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    eager = conv(x)
    (eager_grad,) = torch.autograd.grad(eager.sum(), x)
    compiled = torch.compile(conv, backend="aot_eager", fullgraph=True)(x)
    (compiled_grad,) = torch.autograd.grad(compiled.sum(), x)
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(compiled_grad, eager_grad)


def tile_config(tile_h: int, tile_w: int, block_c: int, warps: int = 4):
    if triton is None:
        pytest.skip("needs triton")
    return triton.Config({"TILE_H": tile_h, "TILE_W": tile_w, "BLOCK_C": block_c}, num_warps=warps)


def test_the_autotuner_times_only_tiles_the_shape_can_use():
    """Tiles taller or wider than the image needs are not timed; the smallest runs where none fits."""
    configs = [tile_config(*tile) for tile in depthwise.CONV_TILES + depthwise.GRAD_TILES]
    assert depthwise.fitting(configs, {"H": 16, "W": 16, "K": 5}) == configs  # the model's maps: every tile
    small = depthwise.fitting(configs, {"H": 5, "W": 6, "K": 3})
    assert small and all(c.kwargs["TILE_H"] <= 8 and c.kwargs["TILE_W"] <= 8 for c in small)
    tall = [tile_config(16, 16, 8), tile_config(8, 16, 16)]
    assert depthwise.fitting(tall, {"H": 3, "W": 2, "K": 31}) == tall[1:]
    # the conv reads its weights unmasked, padded to whole channel blocks of every tile
    assert all(depthwise.MAX_BLOCK_C % tile[2] == 0 for tile in depthwise.CONV_TILES)
    assert depthwise.tap_major(torch.ones(5, 1, 3, 3)).shape == (9, depthwise.MAX_BLOCK_C)


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
    assert len(rows) == 2 * 2 * 2 * 3  # kernel sizes x precisions x layouts x (model, depthwise, forward); CPU: torch
    assert all(row["seconds"] > 0 and not row["error"] for row in rows)
    assert all(row["per_flop_vs_k5"] == 1.0 for row in rows if row["kernel"] == 5)
    conv3 = next(row for row in rows if row["what"] == "depthwise" and row["kernel"] == 3)
    assert conv3["flops"] == 3 * 2 * 3 * 3 * 16 * 8 * 8 * 4  # three directions of 2*k*k*C*H*W*N
    forward3 = next(
        row for row in rows if row["what"] == "forward" and row["kernel"] == 3 and row["precision"] == "bf16"
    )
    assert (forward3["flops"], forward3["bytes_floor"]) == (2 * 3 * 3 * 16 * 8 * 8 * 4, 2 * 16 * 8 * 8 * 4 * 2)
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


@pytest.mark.slow
def test_the_kernels_machine_code_is_counted_without_a_gpu(capsys):
    """--sass compiles every tile for sm_90 and reads its innermost loop: no spills, a cost per tap and pixel."""
    if triton is None:
        pytest.skip("needs triton")
    assert kernels.cli(["--sass", "--kernels", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split(" | ") for line in lines if line.startswith(("| conv |", "| weight_grad |"))]
    tiles = len(depthwise.CONV_TILES) + len(depthwise.GRAD_TILES)
    assert len(rows) == 2 * tiles * 2 * 2  # tiles x dtypes x layouts, printed as they go and in the table
    assert all(row[6] == "0" and 1 < float(row[7]) < 40 for row in rows)  # no spill bytes; instructions per FMA


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--kernels", "3,x"], "--kernels '3,x' is not accepted"),
        (["--kernels", "5,5"], "--kernels '5,5' is not accepted"),
        (["--repeats", "0"], "--repeats 0 is not accepted"),
        (["--what", "model,backward"], "--what 'model,backward' is not accepted"),
        (["--impls", "cudnn,cudnn"], "--impls 'cudnn,cudnn' is not accepted"),
        (["--device", "tpu"], "device='tpu' is not accepted"),
    ],
)
def test_bad_benchmark_options_are_one_line_errors(argv, message, capsys):
    assert kernels.cli(["--tiny", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# --- on a GPU ---
# Each tile shape the autotuner may pick must be exact, so the tests pin one pair of tiles at a time (autotuning every
# shape would compile every candidate: minutes of a GPU sitting); one test autotunes, to see the choice land on disk.


@pytest.fixture
def pinned_tiles(monkeypatch):
    """Run the compiled kernels on one conv tile and one weight-gradient tile: `pin(conv_tile, grad_tile)`."""

    def pin(conv_tile: tuple, grad_tile: tuple) -> None:
        monkeypatch.setattr(depthwise, "CONV_TILES", (conv_tile,))
        monkeypatch.setattr(depthwise, "GRAD_TILES", (grad_tile,))
        depthwise.triton_kernels.cache_clear()

    yield pin
    depthwise.triton_kernels.cache_clear()


@pytest.fixture
def ieee_fp32():
    torch.backends.cudnn.allow_tf32 = False  # compare against IEEE fp32, not TF32
    yield
    torch.backends.cudnn.allow_tf32 = True


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("k", [3, 4, 15, 31])
@pytest.mark.parametrize("layout", [CL, NCHW])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_compiled_triton_depthwise_conv_equals_cudnn_at_the_cifar_shape(k, layout, dtype, pinned_tiles, ieee_fp32):
    pinned_tiles(depthwise.CONV_TILES[-1], depthwise.GRAD_TILES[-1])  # the 16x16 tiles: the model's whole map
    assert_same_conv(k, (64, 256, 16, 16), layout, dtype, CUDA)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("tiles", list(zip(depthwise.CONV_TILES, depthwise.GRAD_TILES, strict=True)))
def test_every_tile_shape_is_exact_on_the_gpu(tiles, pinned_tiles, ieee_fp32):
    """Odd shapes, so that every tile has a border inside the image and channels past C."""
    pinned_tiles(*tiles)
    assert_same_conv(5, (3, 37, 21, 19), CL, torch.float16, CUDA)
    assert_same_conv(4, (2, 20, 13, 35), NCHW, torch.float32, CUDA, bias=False)


@pytest.mark.cuda
@needs_cuda
def test_the_autotuned_tile_choice_is_exact_and_cached_on_disk_by_triton(tmp_path, monkeypatch, ieee_fp32):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    assert_same_conv(7, (4, 24, 9, 11), CL, torch.bfloat16, CUDA)  # a shape no other test tunes
    names = {path.name for path in tmp_path.rglob("*.autotune.json")}
    assert names == {"conv.autotune.json", "weight_grad.autotune.json"}


@pytest.mark.cuda
@needs_cuda
def test_auto_on_a_gpu_times_every_candidate_and_picks_one():
    work = Workload(CUDA, torch.bfloat16, dim=64, kernel_size=9, size=16, batch=64)
    assert all(time_setup(setup, work) > 0 for setup in candidates("auto", "auto", CUDA))
    assert fastest_setup("auto", "auto", work) in candidates("auto", "auto", CUDA)
