"""The profile of a real training step on the CPU mapped onto the step model's ops (benchmarks/step_profile.py),
and `python -m benchmarks.step_floor` end to end on a tiny model: every op measured, ratios as measured / floor,
rows written, bad input refused in one line. Behaviour, not speed: no test reads a time as a result."""

import json
from collections import Counter

import pytest
import torch

from ablations.config import RunConfig
from benchmarks import step_floor
from benchmarks.measure import bare_trainer, random_batch
from benchmarks.step_model import StepShape, step_costs
from benchmarks.step_profile import OTHER, StepMap, profile_steps

CPU = torch.device("cpu")


def profiled(**keys) -> tuple[StepMap, RunConfig]:
    """One profiled training step of a tiny model (after one unprofiled), the engine's own train_step."""
    cfg = RunConfig(dim=8, depth=2, kernel_size=3, patch_size=4, batch_size=4, **keys)
    torch.manual_seed(0)
    trainer = bare_trainer(cfg, 10, CPU, "eager")
    images, targets = random_batch(cfg, 16, 10, CPU)

    def step() -> None:
        trainer.train_step(images, targets, cfg.lr)

    step()
    return StepMap(profile_steps(step, trainer.model, CPU, 1)), cfg


def labels_of(mapped: StepMap, name: str) -> Counter:
    return Counter(mapped.labels[id(e)] for e in mapped.events if e.name == name and id(e) in mapped.labels)


def test_each_aten_op_of_a_cpu_step_lands_on_the_op_of_the_module_that_ran_it():
    mapped, cfg = profiled()
    convs = labels_of(mapped, "aten::convolution")
    assert convs == {("patch_embed", "forward"): 1, ("depthwise", "forward"): 2, ("pointwise", "forward"): 2}
    backward = labels_of(mapped, "aten::convolution_backward")
    assert backward == {("patch_embed", "backward"): 1, ("depthwise", "backward"): 2, ("pointwise", "backward"): 2}
    assert labels_of(mapped, "aten::gelu") == {("activation", "forward"): 5}
    assert labels_of(mapped, "aten::gelu_backward") == {("activation", "backward"): 5}
    assert labels_of(mapped, "aten::native_batch_norm") == {("norm", "forward"): 5}
    assert labels_of(mapped, "aten::native_batch_norm_backward") == {("norm", "backward"): 5}
    assert labels_of(mapped, "aten::addmm") == {("head", "forward"): 1}
    assert labels_of(mapped, "aten::_log_softmax") == {("loss", "forward"): 1}
    assert labels_of(mapped, "aten::_log_softmax_backward_data") == {("loss", "backward"): 1}
    assert labels_of(mapped, "aten::mean") == {("pool", "forward"): 1}
    assert labels_of(mapped, "aten::argmax") == {("loss", "forward"): 1}  # the accuracy, after the backward
    # the residual: its add forward, and backward the sum of the two gradients that meet at the layer's input
    assert labels_of(mapped, "aten::add")[("residual", "forward")] == 2
    assert labels_of(mapped, "aten::add_")[("residual", "backward")] == 2
    assert set(labels_of(mapped, "Optimizer.step#AdamW.step")) == {("optimizer", "update")}


def test_every_op_of_the_model_is_measured_and_nothing_else_but_bookkeeping():
    mapped, cfg = profiled(clip_norm=1.0)
    seconds = mapped.seconds(CPU)
    shape = StepShape(8, 2, 3, 4, 16, 4, dtype="fp32", clip_norm=True)
    modelled = {(c.op, c.direction) for c in step_costs(shape)}
    assert modelled <= {key for key, s in seconds.items() if s > 0}
    assert {op for op, _ in set(seconds) - modelled} <= {OTHER}
    # the gradient clipping runs after the backward, outside the optimizer's range: it is the optimizer's too
    assert labels_of(mapped, "aten::_foreach_norm") == {("optimizer", "update"): 1}


def test_layernorm_runs_are_mapped_as_well():
    mapped, _ = profiled(norm="layer")
    assert labels_of(mapped, "aten::native_layer_norm") == {("norm", "forward"): 5}
    assert labels_of(mapped, "aten::native_layer_norm_backward") == {("norm", "backward"): 5}


def test_the_rows_give_each_op_its_floor_the_measured_time_and_their_ratio():
    shape = StepShape(8, 2, 3, 4, 16, 4, dtype="fp32")
    measured = {(c.op, c.direction): 0.001 * (i + 1) for i, c in enumerate(step_costs(shape))}
    measured[(OTHER, "backward")] = 0.5
    rates = step_floor.Rates(copy=1e9, vector=1e9, matrix=1e10)
    rows = step_floor.floor_rows(shape, rates, measured, step_s=2.0)
    ops = rows[:-3]
    assert [(r["op"], r["direction"]) for r in ops] == list(measured)[:-1]
    assert all(r["ratio"] == pytest.approx(r["measured_s"] / r["floor_s"]) for r in ops)
    other, total, step = rows[-3:]
    assert other == {"op": OTHER, "direction": "", "measured_s": 0.5}
    floor = sum(r["floor_s"] for r in ops)
    assert total["floor_s"] == step["floor_s"] == pytest.approx(floor)
    assert total["measured_s"] == pytest.approx(sum(measured.values()))
    assert step["ratio"] == pytest.approx(2.0 / floor)


def test_the_command_measures_profiles_and_writes_a_row_per_op_for_each_kernel_size(tmp_path, capsys):
    out = tmp_path / "floor.json"
    argv = [
        "--device",
        "cpu",
        "--set",
        "dim=8,depth=1,batch_size=4",
        "--image-size",
        "8",
        "--kernels",
        "3,5",
        "--steps",
        "1",
        "--copy-mb",
        "1",
        "--matmul-size",
        "64",
        "--out",
        str(out),
    ]
    assert step_floor.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["complete"] and result["command"].startswith("python -m ")
    assert result["config"]["data_root"] == "data"  # as results record it, never this machine's path
    assert [k["kernel_size"] for k in result["kernels"]] == [3, 5]
    assert set(result["rates"]) == {"copy", "vector", "matrix"} and all(v > 0 for v in result["rates"].values())
    for kernel in result["kernels"]:
        ops = [row for row in kernel["rows"] if "bytes" in row]
        assert len(ops) == 19 and all(row["measured_s"] > 0 and row["floor_s"] > 0 for row in ops)
        assert kernel["rows"][-1]["op"] == "step (timed)"
    printed = capsys.readouterr().out
    assert "| depthwise | backward |" in printed and "predicted floor" in printed
    assert "measured / floor" in (tmp_path / "floor.md").read_text()


def test_predict_gives_the_floors_of_the_given_rates_and_measures_nothing(tmp_path, capsys):
    out = tmp_path / "predicted.json"
    argv = ["--set", "precision=bf16", "--kernels", "5,9", "--predict", "1000,10,100", "--out", str(out)]
    assert step_floor.main(argv) == 0
    kernels = json.loads(out.read_text())["kernels"]
    shape = StepShape(256, 8, 9, 2, 32, 512, dtype="bf16")
    rows = kernels[1]["rows"]
    assert [k["kernel_size"] for k in kernels] == [5, 9] and kernels[1]["shape"]["dtype"] == "bf16"
    assert [(r["op"], r["direction"]) for r in rows[:-1]] == [(c.op, c.direction) for c in step_costs(shape)]
    assert rows[-1]["floor_s"] == pytest.approx(sum(r["floor_s"] for r in rows[:-1]))
    assert not any("measured_s" in row for row in rows)
    assert "given (--predict): nothing measured" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kernels", "0"], "--kernels '0' is not accepted"),
        (["--steps", "0"], "--steps 0 is not accepted"),
        (["--set", "dim=0"], "dim"),
        (["--image-size", "1"], "patch_size"),
        (["--device", "tpu"], "device='tpu' is not accepted"),
        (["--predict", "4186,67"], "--predict '4186,67' is not accepted"),
        (["--predict", "4186,0,788"], "expected three positive numbers"),
    ],
)
def test_bad_options_are_one_line_errors(argv, message, capsys):
    assert step_floor.cli(["--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{step_floor.PROG}: error: ") and message in err and err.count("\n") == 1


def test_the_kernel_table_lists_each_ops_longest_kernels_in_the_models_order():
    kernels = {
        ("pointwise", "forward"): {"gemm": 0.002, "cast": 0.001},
        ("depthwise", "backward"): {f"dgrad{i}": 0.001 * i for i in range(1, 6)},
        (OTHER, "backward"): {"memset": 0.0001},
    }
    lines = step_floor.kernels_table(kernels).splitlines()[2:]
    names = [line.split(" | ")[2].strip("`") for line in lines]
    assert names == ["dgrad5", "dgrad4", "dgrad3", "gemm", "cast", "memset"]
    assert lines[0] == "| depthwise | backward | `dgrad5` | 5.000 |"
