"""What only a GPU can show: no host sync inside a training epoch, the sweep on CUDA devices, AdamW's fused
kernel after a CPU checkpoint, and torch.compile with Inductor. Marked `cuda`; skipped without a GPU.
python -m benchmarks.gpu_check runs them (pytest -m cuda) with the rest of the GPU check."""

import contextlib
import inspect
import io
import subprocess
import sys
import warnings

import pytest
import torch

from ablations.config import RunConfig
from ablations.data.loaders import build_data
from ablations.engine import modes, train
from ablations.engine.train import Trainer, train_run
from ablations.run import cli
from benchmarks import gpu_check, measure

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CUDA = torch.device("cuda")
TINY = dict(dim=16, depth=2, patch_size=4, train_subset=600, test_subset=200, batch_size=64, epochs=2)


def quiet(line: str) -> None:
    pass


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_a_training_epoch_never_syncs_with_the_host(precision):
    """Every augmentation (RandAugment with equalize, erasing, mixup/cutmix), the index copy, forward, backward,
    clipping, GradScaler and fused AdamW: any host sync raises under set_sync_debug_mode('error')."""
    cfg = RunConfig(**TINY, randaug_n=2, randaug_m=12, jitter=0.1, reprob=0.5, mixup=0.8, cutmix=1.0,
                    clip_norm=1.0, precision=precision)  # fmt: skip
    data = build_data(cfg, CUDA)
    trainer = Trainer(cfg, cfg.model_config(data.num_classes).build(), CUDA, modes.run_dtype(precision, CUDA))
    for images, targets in data.train.epoch(0):  # warm-up: lazy state, cuDNN plans, the scaler's first step
        trainer.train_step(images, targets, 1e-3)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for images, targets in data.train.epoch(1):
            trainer.train_step(images, targets, 1e-3)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


def test_an_epoch_and_its_evaluation_sync_only_to_time_and_read_their_sums_back():
    """Unproven until run on a GPU: the whole train_epoch and evaluate, bookkeeping included, under the "warn" debug
    mode; the only syncs allowed are the timing synchronize and epoch_totals' one read-back."""
    cfg = RunConfig(**TINY, randaug_n=2, randaug_m=12)
    data = build_data(cfg, CUDA)
    trainer = Trainer(cfg, cfg.model_config(data.num_classes).build(), CUDA, torch.bfloat16)
    trainer.train_epoch(data.train, 0, progress=False)
    trainer.evaluate(data.test)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train_epoch(data.train, 1, progress=False)
            trainer.evaluate(data.test)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    read_back = inspect.getsourcelines(train.epoch_totals)
    allowed_lines = range(read_back[1], read_back[1] + len(read_back[0]))
    sites = gpu_check.sync_sites(caught)
    unexpected = {site: n for site, n in sites.items() if not (site.startswith("convmixer/runtime.py") or (
        site.startswith("ablations/engine/train.py:") and int(site.rsplit(":", 1)[1]) in allowed_lines))}  # fmt: skip
    assert unexpected == {} and sites, sites


def test_the_bare_step_under_cuda_graphs_trains_like_the_eager_one():
    """Unproven until run on a GPU: torch.compile's reduce-overhead mode (CUDA graphs), as the benchmark runs it."""
    cfg = RunConfig(**{**TINY, "precision": "fp32", "tf32": False})
    losses = {}
    for mode in ("eager", "cudagraphs"):
        torch.manual_seed(0)
        trainer = measure.bare_trainer(cfg, 10, CUDA, mode)
        images, targets = measure.random_batch(cfg, 32, 10, CUDA)
        losses[mode] = torch.stack([trainer.train_step(images, targets, 1e-3)[0] for _ in range(5)]).cpu()
    torch.testing.assert_close(losses["cudagraphs"], losses["eager"], rtol=1e-3, atol=1e-3)


def test_batches_replay_exactly_on_the_gpu():
    cfg = RunConfig(**TINY, randaug_n=2, randaug_m=12, mixup=0.8, cutmix=1.0)
    data = build_data(cfg, CUDA)
    first, again = list(data.train.epoch(3)), list(data.train.epoch(3))
    for (a, ta), (b, tb) in zip(first, again, strict=True):
        assert torch.equal(a, b) and torch.equal(ta, tb)


def test_a_cpu_checkpoint_resumes_on_the_gpu_with_fused_adamw(tmp_path):
    cfg = RunConfig(**{**TINY, "epochs": 2})

    def stop(record: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path, device="cpu", log=quiet, on_epoch=stop)
    trainer = Trainer(cfg, cfg.model_config(10).build(), CUDA, torch.bfloat16)
    trainer.load(torch.load(tmp_path / "checkpoint.pt", weights_only=True))
    assert [group["fused"] for group in trainer.optimizer.param_groups] == [True]
    steps = [state["step"] for state in trainer.optimizer.state.values()]
    assert steps and all(step.device.type == "cuda" for step in steps)
    metrics = train_run(cfg, tmp_path, device="cuda", log=quiet)
    assert metrics["status"] == "done" and metrics["epochs_completed"] == 2


def test_a_sweep_runs_on_the_gpus_one_run_per_gpu_first(tmp_path):
    gpus = torch.cuda.device_count()
    keys = ",".join(f"{k}={v}" for k, v in TINY.items())
    grid = "kernel_size=" + ",".join(str(3 + 2 * i) for i in range(max(2, gpus)))
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli(
            ["--set", keys, "--grid", grid, "--devices", "cuda", "--jobs-per-device", "2", "--out", str(tmp_path)]
        )
    assert code == 0
    starts = [
        line for log in tmp_path.glob("runs/*/log.txt") for line in log.read_text().splitlines() if "start on" in line
    ]
    devices = {line.split("start on ")[1].split()[0] for line in starts}
    assert devices == {f"cuda:{i}" for i in range(gpus)}  # with 2+ GPUs: one run per GPU before any doubles up


def test_compiled_runs_compile_their_graphs_with_inductor():
    for kernel_size in (3, 5):
        cfg = RunConfig(**{**TINY, "kernel_size": kernel_size, "compile": True})
        metrics = train_run(cfg, None, device="cuda", log=quiet)
        assert metrics["status"] == "done" and metrics["compiled_graphs"] == 2, metrics


def test_the_cuda_flags_are_restored_and_tf32_recorded():
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32)
    metrics = train_run(RunConfig(**{**TINY, "epochs": 1, "precision": "fp32"}), None, device="cuda", log=quiet)
    assert (metrics["precision_used"], metrics["tf32_used"]) == ("fp32", True)
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32) == before
    strict = train_run(
        RunConfig(**{**TINY, "epochs": 1, "precision": "fp32", "tf32": False}), None, device="cuda", log=quiet
    )
    assert strict["tf32_used"] is False


def test_the_sweep_process_leaves_cuda_to_its_workers(repo_root):
    """Spawned workers start CUDA cleanly only if the sweep process has not: listing the devices and checking
    the precision per device must not create a CUDA context."""
    code = ("import torch; from convmixer.runtime import parse_devices; from ablations.engine.modes import run_dtype; "
            "devices = parse_devices('auto'); [run_dtype('auto', torch.device(d)) for d in devices]; "
            "print(devices[0], torch.cuda.is_initialized())")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["cuda:0", "False"]
