"""The fused training step: the compiled step trains what the eager step trains, Inductor fuses each norm with its
activation and the residual add, and CUDA graphs are refused where there are none."""

import dataclasses

import pytest
import torch
from torch._inductor.utils import run_and_get_code

from ablations import config
from ablations.config import ConfigError, RunConfig
from ablations.engine import train
from ablations.run import cli as run_cli
from ablations.train import cli as train_cli
from benchmarks import fused_step
from benchmarks.measure import random_batch

CPU = torch.device("cpu")
TINY = dict(dataset="synthetic", dim=8, depth=2, kernel_size=5, patch_size=2, batch_size=4, train_subset=8)


def stepped(cfg: RunConfig) -> tuple[dict, torch.Tensor, list[str]]:
    """One train_step of a fresh model of cfg on random 16 px images: the state after it, the summed loss and the
    output code Inductor generated for it (none eager)."""
    torch.manual_seed(cfg.seed)
    trainer = train.Trainer(cfg, cfg.model_config(10).build(), CPU, None)
    images, targets = random_batch(cfg, 16, 10, CPU)
    (loss, _), codes = run_and_get_code(trainer.train_step, images, targets, cfg.lr)
    return trainer.model.state_dict(), loss, codes


@pytest.mark.slow  # Inductor's C++ compile of the forward and backward
@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_the_compiled_step_trains_the_eager_steps_weights_with_each_norm_fused_into_its_gelu(norm):
    cfg = RunConfig(**TINY, norm=norm, compile=True)
    eager_state, eager_loss, no_code = stepped(dataclasses.replace(cfg, compile=False))
    state, loss, codes = stepped(cfg)
    assert no_code == [] and len(codes) == 2  # the forward's module and the backward's
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    for name, value in eager_state.items():  # weights and BatchNorm's running statistics and batch count
        torch.testing.assert_close(state[name], value, rtol=1e-4, atol=1e-6, msg=name)
    fused = [name for code in codes for name in fused_step.FUSED_KERNEL.findall(code)]
    normed = [name for name in fused if f"_{norm}_norm" in name]
    units = 1 + 2 * cfg.depth  # the patch embedding's and each mixer layer's two conv -> GELU -> norm
    # forward: one kernel per unit, the GELU, the norm's statistics and its affine map together (and the residual
    # add after the depthwise unit); backward: as many, each norm's gradient with GELU's
    assert len(normed) == 2 * units and all("gelu" in name for name in normed), fused
    assert sum("add" in name for name in normed) >= cfg.depth, fused
    assert len(fused) <= 2 * units + 2, fused  # else: BatchNorm's batch count, the head's bias gradient


def test_cuda_graphs_are_refused_on_a_cpu_and_without_compile_in_one_line():
    with pytest.raises(ConfigError, match=r"^cuda_graphs=True is not accepted on cpu: [^\n]*$"):
        train.train_run(RunConfig(**TINY, compile=True, cuda_graphs=True), None, device="cpu", log=print)
    with pytest.raises(ConfigError, match=r"^cuda_graphs=True is not accepted with compile=False: [^\n]*$"):
        RunConfig(**TINY, cuda_graphs=True).validate()


@pytest.mark.parametrize("command", [run_cli, train_cli])
def test_both_commands_refuse_cuda_graphs_on_a_cpu_in_one_line_before_writing(command, tmp_path, capsys):
    keys = "dataset=synthetic,compile=true,cuda_graphs=true"
    device = ["--devices" if command is run_cli else "--device", "cpu"]
    assert command(["--preset", "smoke", "--set", keys, *device, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "cuda_graphs=True is not accepted on cpu" in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_the_cuda_graphs_key_leaves_every_earlier_run_id_as_it_was(monkeypatch):
    configs = [RunConfig(**TINY), RunConfig(**TINY, compile=True), RunConfig()]
    ids = [cfg.run_id() for cfg in configs]
    graphs_id = dataclasses.replace(configs[1], cuda_graphs=True).run_id()
    # as RunConfig was before the key: no cuda_graphs field at all
    monkeypatch.delitem(config.LATER_KEYS, "cuda_graphs")
    monkeypatch.setattr(RunConfig, "to_dict", lambda self: without(dataclasses.asdict(self), "cuda_graphs"))
    assert [cfg.run_id() for cfg in configs] == ids
    assert graphs_id not in ids


def without(values: dict, key: str) -> dict:
    return {name: value for name, value in values.items() if name != key}


def test_the_kernel_counts_read_inductors_output_code_for_cpu_and_gpu():
    code = "cpp_fused_gelu_0 = async_compile.cpp_pybinding(...)\ntriton_per_fused_add_1 = async_compile.triton(...)\n"
    code += "def call(args):\n    buf0 = extern_kernels.convolution(x, w)\n    cpp_fused_gelu_0(buf0, x)\n"
    code += "    triton_per_fused_add_1.run(buf0, stream=stream0)\n    cpp_fused_gelu_0(buf0, x)\n"
    code += "    buf1 = torch.ops.aten.convolution_backward.default(g, x)\n"
    assert fused_step.kernel_counts([code, code]) == {"fused_launches": 6, "library_calls": 4}


def test_the_eager_op_count_counts_the_forward_and_backward_kernels():
    cfg = RunConfig(**TINY)
    trainer = train.Trainer(cfg, cfg.model_config(10).build(), CPU, None)
    images, targets = random_batch(cfg, 16, 10, CPU)
    ops = fused_step.eager_ops(trainer, images, targets)
    # each conv -> GELU -> norm unit: at least a conv, a GELU and a norm forward and their three backwards
    assert ops >= 6 * (1 + 2 * cfg.depth) and all(p.grad is None for p in trainer.model.parameters())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_run_with_cuda_graphs_trains_and_evaluates_as_the_compiled_run():
    """Unproven until run on a GPU: training and evaluation (inference mode, the padded eval batch) replayed as
    CUDA graphs, against the same run compiled without them."""
    sizes = dict(train_subset=256, test_subset=100, batch_size=64, epochs=2, precision="fp32", tf32=False)
    cfg = RunConfig(**{**TINY, **sizes, "compile": True})
    runs = []
    for graphs in (False, True):
        runs.append(train.train_run(dataclasses.replace(cfg, cuda_graphs=graphs), None, device="cuda", log=print))
    assert [run["epochs_completed"] for run in runs] == [2, 2] and runs[1]["compiled_graphs"] == 2
    for key in ("train_loss", "test_loss", "test_acc"):
        assert runs[1][key] == pytest.approx(runs[0][key], rel=1e-3, abs=1e-3), key
