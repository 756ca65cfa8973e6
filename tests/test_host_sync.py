"""The CPU-side host-sync guard: a training epoch run on the CPU as if the CPU were a GPU, failing on every op that
would make the host wait for the device on CUDA. It runs in CI without a GPU; tests/test_cuda.py checks the same
on a real GPU with torch.cuda.set_sync_debug_mode("error").

What the guard records (each with the first frame of the toolkit that caused it):
- ops torch itself tags as reading device data back (`data_dependent_output`: .item(), bool(), float(), int())
  or as having a data-dependent output shape (`dynamic_output_shape`: nonzero, masked_select, unique, boolean
  indexing, bincount), the same tags FakeTensorMode refuses to trace through; integer indexing, one_hot with a
  known num_classes and repeat_interleave with output_size are tagged too but do not sync on CUDA, so pass;
- boolean-mask index_put_ (x[mask] = v), which runs nonzero on CUDA;
- `lift_fresh`: a host value becoming a tensor (x[i] = 5, torch.tensor([...]), torch.from_numpy), which on CUDA is
  a copy from pageable host memory, and so a sync, every time the step runs;
- reads to the host that never reach the dispatcher on a CPU tensor: .tolist(), .numpy(), .cpu().
Frames in functions named in `allow` are let through: the engine's one read-back per epoch.
Apart from the syncs, it lists the copies to a device (.to(device), .cuda()), which a CPU tensor makes without
reaching the dispatcher either: from pinned memory they need not sync, but one per batch is the per-step copy the
GPU audit found in the loader, so the epoch test counts them.
"""

import sys
import traceback
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from ablations.config import RunConfig
from ablations.data import loaders
from ablations.data.augment import blend, sharpness
from ablations.data.loaders import build_data
from ablations.engine import modes
from ablations.engine.train import Trainer

REPO = Path(__file__).resolve().parents[1]
TOOLKIT = tuple(str(REPO / folder) for folder in ("ablations", "convmixer", "benchmarks"))
aten = torch.ops.aten
SYNC_TAGS = (torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape)
HOST_VALUE_OPS = (aten.lift_fresh.default, aten.lift_fresh_copy.default)
HOST_READ_METHODS = ("tolist", "numpy", "cpu")
DEVICE_COPY_METHODS = ("to", "cuda")
BOOL_DTYPES = (torch.bool, torch.uint8)
GUARD_FRAMES = ("record", "__torch_dispatch__", "__torch_function__")


def ours(frame: traceback.FrameSummary) -> bool:
    """A frame of the toolkit or of a test, not of torch or of the guard itself."""
    if frame.filename.startswith(TOOLKIT):
        return True
    return Path(frame.filename).name.startswith("test_") and frame.name not in GUARD_FRAMES


def called_by_us() -> bool:
    """Whether the tensor method being handled was called from the toolkit or a test, not from torch itself (whose
    own .to(device) calls, like clip_grad_norm_'s, move tensors already on the device: no copy on CUDA)."""
    caller = sys._getframe(2)  # 0: this function, 1: __torch_function__, 2: the code that called the method
    return ours(traceback.FrameSummary(caller.f_code.co_filename, caller.f_lineno, caller.f_code.co_name))


def copies_to_a_device(name: str, args: tuple, kwargs: dict) -> bool:
    """Whether Tensor.`name`(*args, **kwargs) names a device: .cuda(), .to(device), .to("cuda"), .to(device=...)."""
    if name == "cuda":
        return True
    return kwargs.get("device") is not None or any(isinstance(a, (str, torch.device)) for a in args[1:])


def bool_index(indices) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype in BOOL_DTYPES for i in indices or ())


def syncs_on_cuda(func, args: tuple, kwargs: dict) -> bool:
    """Whether aten op `func` with these arguments makes the host wait on CUDA (refining torch's tags, which
    mark whole ops by their worst overload use)."""
    packet = func.overloadpacket
    if packet in (aten.index_put_, aten.index_put, aten._index_put_impl_):
        return bool_index(args[1])
    if func in HOST_VALUE_OPS:
        return True
    if not any(tag in func.tags for tag in SYNC_TAGS):
        return False
    if packet is aten.index:
        return bool_index(args[1])
    if packet is aten.one_hot:
        return (args[1] if len(args) > 1 else kwargs.get("num_classes", -1)) == -1
    if packet is aten.repeat_interleave:
        return kwargs.get("output_size") is None
    return True


class HostSyncGuard:
    """Records every would-be CUDA host sync in its `with` block as 'op at file:line'; see the module docstring."""

    def __init__(self, allow: tuple[str, ...] = ()) -> None:
        self.allow, self.events, self.copies = allow, [], []
        guard = self

        class Dispatch(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if syncs_on_cuda(func, args, kwargs):
                    guard.record(str(func))
                return func(*args, **kwargs)

        class Function(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                name = getattr(func, "__name__", "") if isinstance(func, type(torch.Tensor.cpu)) else ""
                if name in HOST_READ_METHODS:
                    guard.record(f"Tensor.{name}")
                elif name in DEVICE_COPY_METHODS and copies_to_a_device(name, args, kwargs) and called_by_us():
                    guard.record(f"Tensor.{name}", guard.copies)
                return func(*args, **kwargs)

        self.modes = (Function(), Dispatch())

    def record(self, what: str, into: list | None = None) -> None:
        frames = [frame for frame in traceback.extract_stack() if ours(frame)]
        if any(frame.name in self.allow for frame in frames):
            return
        site = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} ({frames[-1].name})" if frames else "?"
        (self.events if into is None else into).append(f"{what} at {site}")

    def __enter__(self) -> "HostSyncGuard":
        for mode in self.modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self.modes):
            mode.__exit__(*exc)


TINY = dict(dataset="synthetic", dim=8, depth=1, patch_size=4, train_subset=96, test_subset=40, batch_size=32)
EVERY_AUGMENTATION = dict(randaug_n=2, randaug_m=12, jitter=0.1, reprob=0.5, mixup=0.8, cutmix=1.0, clip_norm=1.0)


def guarded_epoch(cfg: RunConfig, monkeypatch: pytest.MonkeyPatch) -> HostSyncGuard:
    """One training epoch and one evaluation of cfg on the CPU (after a warm-up epoch, as on a GPU), guarded,
    with the engine's CUDA choices (fused AdamW)."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(modes, "fused_adamw", lambda device: True)
    data = build_data(cfg, cpu)
    trainer = Trainer(cfg, cfg.model_config(data.num_classes).build(), cpu, modes.run_dtype(cfg.precision, cpu))
    trainer.train_epoch(data.train, 0, progress=False)
    with HostSyncGuard(allow=("epoch_totals",)) as guard:
        trainer.train_epoch(data.train, 1, progress=False)
        trainer.evaluate(data.test)
    return guard


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_training_epoch_and_its_evaluation_would_never_sync_on_a_gpu(precision, monkeypatch):
    """Every augmentation (RandAugment with sharpness and equalize, jitter, erasing, mixup/cutmix), the index copy,
    forward, backward, clipping, AdamW and the bookkeeping: nothing but the one read-back per epoch."""
    cfg = RunConfig(**TINY, **EVERY_AUGMENTATION, precision=precision, epochs=2)
    guard = guarded_epoch(cfg, monkeypatch)
    assert guard.events == []
    # one copy of the shuffled index per training epoch and one of the order per evaluation, not one per batch
    assert [copy.split(" at ")[1].split(" ")[1] for copy in guard.copies] == ["(to_device_async)"] * 2, guard.copies


def old_sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """augment.sharpness before issue 17: a Python 5 written into a device tensor, two syncs per step on a GPU."""
    channels = images.shape[1]
    kernel = torch.ones(3, 3, device=images.device)
    kernel[1, 1] = 5
    kernel = (kernel / kernel.sum()).expand(channels, 1, 3, 3)
    smooth = images.clone()
    smooth[..., 1:-1, 1:-1] = F.conv2d(images, kernel, groups=channels)
    return blend(smooth, images, factor)


def test_the_guard_catches_the_old_sharpness_kernel_and_passes_the_new_one():
    images, factor = torch.rand(4, 3, 8, 8), torch.rand(4)
    with HostSyncGuard() as old:
        before = old_sharpness(images, factor)
    with HostSyncGuard() as new:
        after = sharpness(images, factor)
    assert len(old.events) == 1 and old.events[0].startswith("aten.lift_fresh.default at test_host_sync.py:")
    assert new.events == []
    torch.testing.assert_close(after, before)  # the same filter, without a kernel written from Python


def test_the_guard_catches_every_kind_of_host_sync():
    x = torch.rand(6, 4)
    reads = [
        lambda: x.sum().item(), lambda: bool(x.sum() > 0), lambda: float(x.max()), lambda: x.tolist(),
        lambda: x.numpy(), lambda: x.cpu(), lambda: x.nonzero(), lambda: x[x > 0.5], lambda: x.masked_select(x > 0),
        lambda: x.unique(), lambda: torch.bincount(x.long().flatten()),
        lambda: torch.tensor([1.0, 2.0]), lambda: x.__setitem__(x > 0.5, 0.0), lambda: x.__setitem__((0, 0), 3),
    ]  # fmt: skip
    for read in reads:
        with HostSyncGuard() as guard:
            read()
        assert len(guard.events) >= 1, guard.events
    with HostSyncGuard() as guard:
        x.to("cpu"), x.to(device=torch.device("cpu")), x.to(torch.float64), x.double()
    assert len(guard.copies) == 2 and guard.events == []
    labels = torch.tensor([1, 0, 2])
    with HostSyncGuard() as guard:  # what runs on the device without a sync: integer indexing, scalars as operands
        x[labels], x.index_put_((labels,), torch.zeros(4)), x.masked_fill(x > 0.5, 0.0)
        torch.where(x > 0, 1.0, x), x * 2
    assert guard.events == []


def test_the_guard_lets_through_only_the_functions_it_is_told_to():
    def epoch_totals(t: torch.Tensor) -> float:
        return t.sum().item()

    with HostSyncGuard(allow=("epoch_totals",)) as guard:
        epoch_totals(torch.ones(3))
        torch.ones(3).sum().item()
    assert len(guard.events) == 1 and "test_host_sync.py" in guard.events[0]


def test_the_guard_counts_the_old_loaders_copy_of_every_batch(monkeypatch):
    def per_batch_copies(self, order, batch_size):  # ResidentImages.batches before the GPU audit
        for index in order.split(batch_size):
            index = index.to(self.device)
            yield self.images[index], self.labels[index]

    monkeypatch.setattr(loaders.ResidentImages, "batches", per_batch_copies)
    cfg = RunConfig(**TINY, epochs=2)
    guard = guarded_epoch(cfg, monkeypatch)
    batches = -(-cfg.train_subset // cfg.batch_size) + -(-cfg.test_subset // cfg.batch_size)
    assert len(guard.copies) == batches and guard.events == []
