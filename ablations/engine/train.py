"""The training engine: one run of one RunConfig, resumable after any epoch and bit-exact on CPU.

Data and augmentation already live on the device (ablations.data.loaders), so the hot loop is forward, loss, backward,
clip, AdamW step, with losses and accuracies summed on the device and read back once per epoch. That single read is
also where the run is stopped as "diverged", by one rule (ablations.engine.metrics): a loss that is not finite, or
from epoch 2 on a train loss above 3 x ln(number of classes), three times the loss of a uniform guess. Each epoch
ends with an atomic checkpoint holding only tensors and plain Python values (read back by ablations.engine.checkpoint).
Every random draw comes from (seed, epoch), so a resumed run replays exactly what an uninterrupted one would have done.
"""

import copy
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch._inductor.runtime.cache_dir_utils import default_cache_dir
from torch.utils.checkpoint import checkpoint
from tqdm import tqdm

from ablations import atomic
from ablations.config import ConfigError, RunConfig
from ablations.data.loaders import NAMED_SKIPS, Data, TestLoader, TrainLoader, build_data, skipped_note
from ablations.data.sources import cache_dir
from ablations.engine import distributed
from ablations.engine.checkpoint import read_checkpoint_on_every_rank
from ablations.engine.distributed import SINGLE, Ranks
from ablations.engine.metrics import divergence, final_metrics
from ablations.engine.schedule import learning_rate
from ablations.engine.setup import Setup, Workload, candidates, fastest_setup
from ablations.store import CHECKPOINT, write_history, write_metrics
from convmixer.arguments import patch_grid
from convmixer.counting import closed_form
from convmixer.depthwise import use_impl
from convmixer.runtime import (
    AUTOCAST_DTYPES,
    autocast_dtype,
    cuda_math_flags,
    device_name,
    resolve_device,
    synchronize,
)

COMPILE_BACKEND = "inductor"  # torch.compile's; the tests use "eager" to check graph capture without a C++ build
COMPILE_CACHE = "inductor"  # Inductor's cache folder, under the toolkit's cache folder ($CONVMIXER_CACHE)
PRECISION_NAMES = {dtype: name for name, dtype in AUTOCAST_DTYPES.items()}  # metrics.json's precision_used


def run_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype a run of `precision` uses on `device` (None: plain fp32); ConfigError if it cannot run."""
    try:
        return autocast_dtype(precision, device)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def compiled_graphs() -> int:
    """Graphs torch.compile has captured in this process so far (dynamo's counter survives dynamo.reset)."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def persistent_compile_caches() -> Path:
    """Keep Inductor's on-disk caches (the FX graph and AOTAutograd caches, on by default, and the kernels) under
    the toolkit's cache folder, so that every later run compiling the same shapes, in this process, in another
    worker of the sweep or in a later sweep, loads compiled code instead of compiling it again. Set before the
    first compile of each process (torch reads the folder when it compiles); an explicit TORCHINDUCTOR_CACHE_DIR
    (a benchmark's fresh folder, say) is kept. Unlike torch's default (/tmp/torchinductor_<user>), the folder
    lives with the decoded data, so it can be carried to a fresh GPU machine with them. Returns the folder."""
    # Importing torch's compiler already writes its default folder into the environment: replace only that.
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, os.path.abspath(default_cache_dir())):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / COMPILE_CACHE)
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def check_cuda_graphs(cfg: RunConfig, device: torch.device) -> None:
    """ConfigError if the run asks for CUDA graphs on a device that has none."""
    if cfg.cuda_graphs and device.type != "cuda":
        raise ConfigError(f"cuda_graphs=True is not accepted on {device.type}: CUDA graphs need a CUDA device")


def fused_adamw(device: torch.device) -> bool:
    """Whether AdamW runs fused on `device`: on CUDA, one kernel for all parameters and no host sync (the
    for-each kernel reads its step counters back to the host). The CPU keeps the for-each kernel, whose
    numbers the committed CPU results were made with."""
    return device.type == "cuda"


def epoch_totals(*sums: torch.Tensor) -> list[float]:
    """An epoch's on-device sums, summed over the ranks in one all-reduce, read back to the host in one copy: the
    epoch's one host sync."""
    return distributed.all_sum(torch.stack([total.float() for total in sums])).tolist()


@contextmanager
def buffers_kept(module: nn.Module) -> Iterator[None]:
    """Leave `module`'s buffers as they were on entry: a recomputed forward pass in training mode would update
    BatchNorm's running statistics (and its batch count) a second time. Restored in `finally`: the checkpoint
    ends a recomputation early by raising once it has the tensors the backward pass needs."""
    kept = [(buffer, buffer.clone()) for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in kept:
                buffer.copy_(value)


def checkpoint_blocks(model: nn.Module) -> None:
    """Recompute each mixer block's activations in the backward pass instead of keeping them (checkpoint_activations):
    the forward's memory becomes one block's. The modules stay where they are, so the state dict is unchanged, and
    the recomputation leaves the buffers alone, so the run trains the same function as without."""
    for block in model.blocks:

        def forward(x: torch.Tensor, block_forward: Callable = block.forward, block: nn.Module = block) -> torch.Tensor:
            contexts = lambda: (nullcontext(), buffers_kept(block))  # noqa: E731 (forward pass, recomputation)
            return checkpoint(block_forward, x, use_reentrant=False, context_fn=contexts)

        block.forward = forward


# Where a run warms up before epoch 1 (Trainer.warm_up): CUDA autotunes per shape; a CPU has nothing to tune.
WARM_UP_DEVICES = ("cuda",)


def seed_epoch(seed: int, epoch: int) -> None:
    # The data loader draws from its own (seed, epoch) generators; reseeding the global RNG as well makes any
    # other draw during the epoch (a module's, a library's) replay identically after a resume.
    torch.manual_seed(seed * 1_000_003 + epoch)


class Trainer:
    """The model, optimiser and scaler of one run, with one method per phase of an epoch."""

    def __init__(self, cfg: RunConfig, model: nn.Module, device: torch.device, dtype: torch.dtype | None,
                 setup: Setup | None = None, ranks: Ranks = SINGLE) -> None:  # fmt: skip
        self.cfg, self.model, self.device, self.dtype, self.ranks = cfg, model, device, dtype, ranks
        # The layout and depthwise conv train_run timed, else the first candidate (what "auto" was before timing).
        self.setup = setup or candidates(cfg.channels_last, cfg.depthwise_impl, device)[0]
        use_impl(model, self.setup.impl)
        self.memory_format = torch.channels_last if self.setup.channels_last else torch.contiguous_format
        model.to(device=device, memory_format=self.memory_format)
        if ranks.world_size > 1 and cfg.sync_bn:
            distributed.sync_batch_norm(model, device)
        if cfg.checkpoint_activations:
            checkpoint_blocks(model)
        # Several processes: training goes through DDP, evaluation (sharded, no collective) through the model.
        self.wrapped = distributed.data_parallel(model, device) if ranks.world_size > 1 else model
        # Static shapes: a shape torch.compile has not seen is a visible recompile, never a silent dynamic graph.
        self.forward = self.compiled(self.wrapped)
        self.eval_forward = self.forward if self.wrapped is model else self.compiled(model)
        self.fused = fused_adamw(device)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps, fused=self.fused
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)

    def compiled(self, module: nn.Module) -> nn.Module:
        """`module` under torch.compile if the run compiles; with cuda_graphs, in reduce-overhead mode: the compiled
        forward and backward recorded once per batch shape as CUDA graphs and replayed, one launch each."""
        if not self.cfg.compile:
            return module
        mode = "reduce-overhead" if self.cfg.cuda_graphs else None
        return torch.compile(module, dynamic=False, backend=COMPILE_BACKEND, mode=mode)

    def logits(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        forward = self.forward if train else self.eval_forward
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            return forward(images.contiguous(memory_format=self.memory_format)).float()

    def micro_batches(self, images: torch.Tensor, targets: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The batch in cfg.accum_steps parts (fewer when the batch is shorter): one forward/backward each."""
        parts = zip(images.tensor_split(self.cfg.accum_steps), targets.tensor_split(self.cfg.accum_steps), strict=True)
        return [(x, y) for x, y in parts if len(y)]

    def train_step(self, images: torch.Tensor, targets: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step; returns the batch's summed loss and number correct, still on the device. With
        accum_steps, each part's mean loss is weighed by its share of the batch, so the gradient is the batch's
        mean, and DDP averages the gradients over the ranks only in the last part's backward pass."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        parts = self.micro_batches(images, targets)
        sums = []  # each part's (summed loss, number correct), on the device
        for i, (x, y) in enumerate(parts):
            last = i == len(parts) - 1
            with self.wrapped.no_sync() if self.wrapped is not self.model and not last else nullcontext():
                logits = self.logits(x)
                # Soft targets (mixup/cutmix) are class probabilities, which cross_entropy accepts as they are.
                loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
                self.scaler.scale(loss * (len(y) / len(targets))).backward()
            labels = y if y.ndim == 1 else y.argmax(1)
            sums.append((loss.detach() * len(y), (logits.detach().argmax(1) == labels).sum()))
        if self.cfg.clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        loss_sum, correct = sums[0]  # one part (accum_steps=1) adds nothing to the step's kernels
        for part_loss, part_correct in sums[1:]:
            loss_sum, correct = loss_sum + part_loss, correct + part_correct
        return loss_sum, correct

    def train_epoch(self, loader: TrainLoader, epoch: int, progress: bool) -> dict:
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen, lr = torch.zeros((), device=self.device, dtype=torch.long), 0.0  # counted on the device, as the sums
        synchronize(self.device)
        start = time.perf_counter()
        batches = tqdm(
            loader.epoch(epoch), total=len(loader), leave=False, disable=not progress, desc=f"epoch {epoch + 1}"
        )
        for step, (images, targets) in enumerate(batches):
            lr = learning_rate(self.cfg, epoch, step, len(loader))
            batch_loss, batch_correct = self.train_step(images, targets, lr)
            loss_sum += batch_loss
            correct += batch_correct
            seen += len(targets)
        if not self.cfg.sync_bn:  # each rank's BatchNorm statistics: one mean, before evaluating and checkpointing
            distributed.average_buffers(self.model)
        loss_total, correct_total, seen = epoch_totals(loss_sum, correct, seen)
        train_time = time.perf_counter() - start
        return {
            "train_loss": loss_total / seen,
            "train_acc": correct_total / seen,
            "lr": lr,
            "train_time_s": train_time,
            "train_images_per_s": seen / train_time,
        }

    def full_batch(self, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Compiled: a short eval batch padded with zero images to its loader's `batch_size`, so evaluation has one
        static shape (eval-mode outputs are per image, so the padding changes no real image's logits). Eager: as it
        is."""
        missing = batch_size - len(images)
        if not self.cfg.compile or missing <= 0:
            return images
        return torch.cat([images, images.new_zeros(missing, *images.shape[1:])])

    @torch.inference_mode()  # no autograd bookkeeping at all (no_grad still tracks versions and views)
    def evaluate(self, loader: TestLoader) -> dict:
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = torch.zeros((), device=self.device, dtype=torch.long)
        for images, labels in loader:
            logits = self.logits(self.full_batch(images, loader.batch_size), train=False)[: len(labels)]
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
        loss_total, correct_total, seen = epoch_totals(loss_sum, correct, seen)
        return {"test_loss": loss_total / seen, "test_acc": correct_total / seen}

    def warm_up(self, train: TrainLoader, test: TestLoader) -> float:
        """Run each batch shape of an epoch once, before epoch 1, and return the seconds it took: on CUDA the first
        batch of a new shape autotunes cuDNN (benchmark mode) and initialises libraries, seconds that would
        otherwise land in epoch 1 (7.7 s of it on the H200's first run). Forward and backward on a throwaway batch,
        with no optimiser step, the RNG forked and the weights and BatchNorm statistics put back: the run itself
        is unchanged (on the CPU, where this is skipped, tests run it and get bit-identical histories)."""
        start = time.perf_counter()
        saved = {name: value.clone() for name, value in self.model.state_dict().items()}
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            self.model.train()
            for images, targets in train.one_batch_per_shape():
                loss = F.cross_entropy(self.logits(images), targets, label_smoothing=self.cfg.label_smoothing)
                self.scaler.scale(loss).backward()
            self.model.zero_grad(set_to_none=True)
            self.model.eval()
            # Compiled, a short test batch is padded to a full one: the same shape, run once.
            batches = (self.full_batch(images, test.batch_size) for images, _ in test.one_batch_per_shape())
            shapes = {len(batch): batch for batch in batches}
            with torch.inference_mode():
                for batch in shapes.values():
                    self.logits(batch, train=False)
        self.model.load_state_dict(saved)
        synchronize(self.device)
        return time.perf_counter() - start

    def state(self, epochs_done: int, history: list[dict], wall_time_s: float, skipped: list[str]) -> dict:
        return {
            "run_id": self.cfg.run_id(),
            "epoch": epochs_done,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": history,
            "wall_time_s": wall_time_s,
            **({"skipped_images": skipped} if skipped else {}),  # a checkpoint of a run that skipped none is as before
        }

    def load(self, checkpoint: dict) -> None:
        """Load a checkpoint's model, optimizer and scaler, all or nothing: a checkpoint that does not fit (a tensor
        of another shape) raises with this trainer as it was, so the run can start over from its own start."""
        before = copy.deepcopy({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()})
        try:
            self._load(checkpoint)
        except Exception:
            self._load({**before, "scaler": self.scaler.state_dict()})
            raise

    def _load(self, checkpoint: dict) -> None:
        self.model.load_state_dict(checkpoint["model"])
        # The checkpoint may come from another device (CPU -> CUDA): keep this device's AdamW kernel, which also
        # decides where load_state_dict puts the step counters (on the GPU for fused, else wherever they were).
        for group in checkpoint["optimizer"]["param_groups"]:
            group["fused"] = self.fused
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        for param, state in self.optimizer.state.items():  # load_state_dict takes moments of any shape
            if any(value.dim() and value.shape != param.shape for value in state.values()):
                raise ValueError(f"an optimizer state of shape other than its parameter's {tuple(param.shape)}")
        self.scaler.load_state_dict(checkpoint["scaler"])


def skipped_so_far(data: Data, before: list[str]) -> list[str]:
    """The streamed images bad_images=skip has left out of the run so far: those of the epochs before a resume
    (`before`, from the checkpoint) and those every rank met since (one gather), each counted once. A bad file is
    met again in every epoch, by whichever rank reads it then."""
    met = distributed.gathered([*before, *data.skipped()])
    return list(dict.fromkeys(problem for rank in met for problem in rank))


def train_run(
    cfg: RunConfig,
    run_dir: Path | None,
    *,
    device: str | torch.device = "auto",
    log: Callable[[str], None] = print,
    on_epoch: Callable[[dict], None] | None = None,
    ranks: Ranks = SINGLE,
) -> dict:
    """Train one run (resuming from run_dir/checkpoint.pt if there is one) and return its final metrics. As rank
    `ranks.rank` of several processes (DDP), it joins their process group for the run; rank 0 alone logs and
    writes the run's files, every rank resumes from them."""
    started = time.perf_counter()
    cfg.validate()
    batch = distributed.local_batch(cfg.batch_size, ranks.world_size)  # fails before any process waits for another
    device = distributed.rank_device(resolve_device(device), ranks)
    dtype = run_dtype(cfg.precision, device)  # before loading data, so a bad precision fails at once
    check_cuda_graphs(cfg, device)
    distributed.start(ranks, device)
    try:
        return train_process(cfg, run_dir, device, dtype, log if ranks.main else lambda line: None, on_epoch, ranks,
                             batch, started)  # fmt: skip
    finally:
        distributed.stop()


def train_process(
    cfg: RunConfig,
    run_dir: Path | None,
    device: torch.device,
    dtype: torch.dtype | None,
    log: Callable[[str], None],
    on_epoch: Callable[[dict], None] | None,
    ranks: Ranks,
    batch: int,
    started: float,
) -> dict:
    """train_run's work in one process, in its process group if it has one; `batch` is this process's share of
    cfg.batch_size."""
    with cuda_math_flags(benchmark=device.type == "cuda", tf32=cfg.tf32):
        if cfg.compile:
            persistent_compile_caches()
            torch._dynamo.reset()  # this run's graphs only: a sweep's worker never reaches dynamo's recompile limit
        graphs_before = compiled_graphs() if cfg.compile else 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        data = build_data(cfg, device, rank=ranks.rank, world_size=ranks.world_size)
        model_config = cfg.model_config(data.num_classes, data.in_chans)
        counts = closed_form(model_config, data.image_size).to_dict()  # exact for every model of RunConfig
        work = Workload(device, dtype, cfg.dim, cfg.kernel_size, data.image_size // cfg.patch_size, batch)
        setup = fastest_setup(cfg.channels_last, cfg.depthwise_impl, work)  # times "auto" on CUDA, once per shape
        torch.manual_seed(cfg.seed)
        trainer = Trainer(cfg, model_config.build(), device, dtype, setup, ranks)
        processes = f" x {ranks.world_size} processes" if ranks.world_size > 1 else ""
        log(
            f"{cfg.run_id()}: {model_config.name} k{cfg.kernel_size} p{cfg.patch_size}, "
            f"{counts['params'] / 1e6:.3f} M params, {counts['macs'] / 1e6:.1f} M MACs/image, "
            f"{data.train.num_samples} train images, {device_name(device)}{processes}"
        )
        if data.image_size % cfg.patch_size:  # said in the run's log too: the patch drops pixels of every image
            log(f"patch_size={cfg.patch_size}: {patch_grid(data.image_size, cfg.patch_size, data.in_chans)}")
        warm_up_s = trainer.warm_up(data.train, data.test) if device.type in WARM_UP_DEVICES else 0.0
        if warm_up_s:
            log(f"warm-up (each batch shape once: cuDNN autotuning, lazy initialisation) {warm_up_s:.1f} s")
        history, reason, wall_before, skipped = train_epochs(trainer, data, run_dir, started, log,
                                                             on_epoch if ranks.main else None)  # fmt: skip
    engine = {
        "precision_used": PRECISION_NAMES[dtype],
        "tf32_used": device.type == "cuda" and dtype is None and cfg.tf32,  # fp32 convolutions on TF32 tensor cores
        "compiled_graphs": compiled_graphs() - graphs_before if cfg.compile else None,  # 0: ran eagerly
        "warm_up_s": warm_up_s,  # before epoch 1, in this process (a resumed run warms up again)
        "channels_last_used": trainer.setup.channels_last,
        "depthwise_impl_used": trainer.setup.impl,
        **({"processes": ranks.world_size} if ranks.world_size > 1 else {}),
    }
    metrics = final_metrics(history, reason, device, counts, wall_before + time.perf_counter() - started, engine)
    if cfg.bad_images == "skip" and not data.resident:
        metrics.update(skipped_images=len(skipped), skipped_examples=skipped[:NAMED_SKIPS])
    if run_dir is not None and ranks.main:
        write_metrics(Path(run_dir), metrics)
    return metrics


def train_epochs(
    trainer: Trainer,
    data: Data,
    run_dir: Path | None,
    started: float,
    log: Callable[[str], None],
    on_epoch: Callable[[dict], None] | None,
) -> tuple[list[dict], str, float, list[str]]:
    """Resume from run_dir's checkpoint if there is one, then train the remaining epochs, checkpointing each.
    Returns (history, why the run diverged or "", wall time of the runs before this resume, the images
    bad_images=skip left out)."""
    cfg = trainer.cfg
    history, wall_before, skipped = [], 0.0, []
    checkpoint_path = Path(run_dir) / CHECKPOINT if run_dir is not None else None
    checkpoint = read_checkpoint_on_every_rank(checkpoint_path, cfg, trainer, log)
    if checkpoint is not None:
        history, wall_before = checkpoint["history"], checkpoint["wall_time_s"]
        skipped = checkpoint.get("skipped_images", [])
        log(f"resumed from {checkpoint_path} after epoch {checkpoint['epoch']}")

    progress = log is print and sys.stderr.isatty()
    reason = ""
    for epoch in range(len(history), cfg.epochs):
        seed_epoch(cfg.seed, epoch)
        epoch_start = time.perf_counter()
        record = {"epoch": epoch + 1, **trainer.train_epoch(data.train, epoch, progress), **trainer.evaluate(data.test)}
        record["epoch_time_s"] = time.perf_counter() - epoch_start
        if cfg.bad_images == "skip" and not data.resident:  # every rank: the gather is a collective
            skipped = skipped_so_far(data, skipped)
        reason = divergence(record, data.num_classes)
        if reason:
            log(f"diverged: {reason}")
            break
        history.append(record)
        if run_dir is not None and trainer.ranks.main:
            wall = wall_before + time.perf_counter() - started
            # history.json first: if the run is killed in between, the checkpoint is the older of the two and the
            # resumed run replays that epoch and rewrites both, so history.json never stays short.
            write_history(Path(run_dir), history)
            atomic.torch_save(trainer.state(len(history), history, wall, skipped), checkpoint_path)
        log(
            f"epoch {epoch + 1}/{cfg.epochs} train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f} | "
            f"test loss {record['test_loss']:.4f} acc {record['test_acc']:.4f} | lr {record['lr']:.5f} | "
            f"{record['epoch_time_s']:.1f} s, {record['train_images_per_s']:.0f} img/s"
        )
        if not data.resident:  # streamed: could the loader keep up with the model?
            note = f"; {skipped_note(skipped)}" if skipped else ""
            log(f"epoch {epoch + 1} data: {data.train.images.report()}{note}")
        if on_epoch is not None:
            on_epoch(record)
    return history, reason, wall_before, skipped
