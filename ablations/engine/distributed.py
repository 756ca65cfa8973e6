"""One run on several processes (DistributedDataParallel): who this process is, its process group, and the few
collectives the engine makes.

A process is handed its place as an argument, `Ranks`: rank, world size, local rank and the rendezvous (address and
port). The launcher that starts the processes builds it: the sweep's local workers for each rank they spawn, a SLURM
task from submitit's view of SLURM's environment, and only `python -m ablations.train` from torchrun's variables
(`Ranks.from_env`). The group is gloo on the CPU and NCCL on CUDA, with a timeout, so that a collective whose
peer has died ends in an error instead of hanging. BatchNorm over all ranks is torch's SyncBatchNorm on GPUs, and
on the CPU (where torch's refuses to run) `AllReduceBatchNorm`: one all-reduce of each rank's sums per layer (and
one in the backward pass), which gives the statistics one process would compute over the whole global batch.
"""

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ablations.config import ConfigError

# A collective that waits this long has lost a peer (killed, hung): the run fails instead of hanging forever. Long
# enough for the slowest honest wait: rank 0 writing a checkpoint while the others wait at the next epoch's end.
COLLECTIVE_TIMEOUT_S = float(os.environ.get("CONVMIXER_COLLECTIVE_TIMEOUT_S", 600))
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Ranks:
    """This process's place in its run: rank `rank` of `world_size`, `local_rank` on its node (its GPU), and where
    the run's processes meet (rank 0's address and a port free there)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run's files."""
        return self.rank == 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Ranks":
        """torchrun's variables, as it sets them; one process (rank 0 of 1) where WORLD_SIZE is not set."""
        if "WORLD_SIZE" not in environ:
            return cls()
        try:
            place = int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", 0))
            ranks = cls(*place, environ["MASTER_ADDR"], int(environ["MASTER_PORT"]))
        except (KeyError, ValueError):
            given = {key: environ.get(key) for key in ENV_KEYS}
            message = (
                f"torchrun's environment is incomplete: {given}; expected integers RANK, WORLD_SIZE and MASTER_PORT, "
                "and MASTER_ADDR"
            )
            raise ConfigError(message) from None
        if not 0 <= ranks.rank < ranks.world_size:
            raise ConfigError(f"RANK={ranks.rank} is not accepted: expected 0 <= RANK < WORLD_SIZE={ranks.world_size}")
        return ranks


SINGLE = Ranks()


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """Each rank's own GPU: cuda:LOCAL_RANK for a run on "cuda" (torchrun, SLURM); a GPU named by its index (the
    local launcher's slots) and the CPU as they are."""
    if device.type == "cuda" and device.index is None and ranks.world_size > 1:
        return torch.device("cuda", ranks.local_rank)
    return device


def local_batch(batch_size: int, world_size: int, paired: bool = False) -> int:
    """Each of `world_size` processes' share of the global batch_size; ConfigError when it does not split evenly
    (in pairs when `paired`: mixup or cutmix, whose partners a process holds together, data.loaders.TrainLoader)."""
    if batch_size % world_size:
        raise ConfigError(
            f"batch_size={batch_size} is not accepted on {world_size} processes: the global batch must be a "
            f"multiple of the number of processes"
        )
    if paired and world_size > 1 and batch_size // world_size % 2:
        raise ConfigError(
            f"batch_size={batch_size} is not accepted on {world_size} processes with mixup or cutmix: each process's "
            f"share must be even, as it holds the pairs it mixes"
        )
    return batch_size // world_size


def start(ranks: Ranks, device: torch.device) -> None:
    """Join the run's process group at its rendezvous (tcp://master_addr:master_port); nothing to do for one
    process."""
    if ranks.world_size == 1:
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://{ranks.master_addr}:{ranks.master_port}",
        rank=ranks.rank,
        world_size=ranks.world_size, timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )  # fmt: skip


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over the ranks (in place); itself for one process."""
    if active():
        dist.all_reduce(tensor)
    return tensor


def barrier() -> None:
    if active():
        dist.barrier()


def gathered(value: object) -> list:
    """`value` of every rank, in rank order (a pickled all-gather: for a few values per run, never per step)."""
    if not active():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def average_buffers(model: nn.Module) -> None:
    """Every rank's float buffers (BatchNorm's running statistics) set to their mean over the ranks, as timm's
    --dist-bn reduce: with per-rank BatchNorm (sync_bn=false) the ranks then evaluate and checkpoint one model."""
    if active():
        for buffer in model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer /= dist.get_world_size()


class AllReduceBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch: each rank's per-channel sums of x and
    x^2 and its count, in float64 so that E[x^2] - E[x]^2 does not cancel, all-reduced in one collective (with
    autograd, so the backward pass reduces their gradients in one more). Evaluation uses the running statistics,
    as BatchNorm2d does, with no collective."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        count = torch.full((1,), x.numel() // x.shape[1], dtype=torch.float64, device=x.device)
        sums = torch.cat([x.sum((0, 2, 3), dtype=torch.float64), x.square().sum((0, 2, 3), dtype=torch.float64)])
        total = funcol.all_reduce(torch.cat([sums, count]), "sum", dist.group.WORLD)
        n = total[-1]
        mean64 = total[: self.num_features] / n
        var64 = total[self.num_features : -1] / n - mean64.square()
        mean, var = mean64.to(x.dtype), var64.clamp(min=0).to(x.dtype)
        with torch.no_grad():
            self.num_batches_tracked += 1
            momentum = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean, momentum)
            self.running_var.lerp_((var64 * n / (n - 1).clamp(min=1)).to(x.dtype), momentum)
        scale = self.weight / (var + self.eps).sqrt()
        return (x - mean.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` with every BatchNorm computing statistics over all ranks (torch's SyncBatchNorm on a GPU; on the CPU
    AllReduceBatchNorm, sharing the parameters and buffers, so the state dict is unchanged)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = AllReduceBatchNorm(child.num_features, child.eps, child.momentum, child.affine)
            synced.load_state_dict(child.state_dict())
            synced.weight, synced.bias = child.weight, child.bias
            setattr(model, name, synced.to(child.weight.device))
        else:
            sync_batch_norm(child, device)
    return model


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP over the process group: gradients averaged over the ranks in the backward pass. Buffers are not
    broadcast at each forward (synced BatchNorm keeps them equal; per-rank BatchNorm averages them once per epoch)."""
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)
