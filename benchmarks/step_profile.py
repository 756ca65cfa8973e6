"""Where the time of real training steps goes, op by op of benchmarks/step_model.py: torch.profiler over the engine's
`train_step`, each profiled event mapped onto the model's op and direction.

How an event finds its op:
- forward: every module of the model opens a labelled range while it runs (forward hooks), and an op takes the
  label of the innermost range around it (a mixer layer's own range, around its residual adds, is "residual");
  outside the model, what runs before it (the images' layout copy) is the patch embedding's, what runs after it
  and before the backward (the cast of the logits, the loss, the accuracy) is the loss's;
- backward: autograd runs each node under "autograd::engine::evaluate_function: <node>", with the sequence number
  of the forward op that made the node, so the node takes that op's label; an add directly under it, outside the
  node itself, sums two gradients of one tensor (the residual's branch point) and is the residual's;
- the optimizer: torch's "Optimizer.step"/"zero_grad" ranges, and what runs after the backward under no_grad
  (gradient clipping, the GradScaler); what runs there with grad mode on (the step's loss and accuracy sums, which
  autograd numbers) is the loss's;
- what matches none of these (parameter-gradient bookkeeping) is "other".
Each event counts its own time (on CUDA its kernels' device time, on a CPU its own CPU time), never its
children's, so nothing is counted twice. Eager steps only: a compiled model runs no module hooks.
"""

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.autograd import DeviceType
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from convmixer.model import ClassifierHead, ConvActNorm, MixerLayer, PatchEmbed

LABEL = "floor:"  # the prefix of this module's ranges
STEP, MODEL, OTHER = "step", "model", "other"
BACKWARD_NODE = "autograd::engine::evaluate_function: "
OPTIMIZER_RANGE = "Optimizer."
GRADIENT_SUMS = ("aten::add", "aten::add_")


def module_ops(model: nn.Module) -> dict[nn.Module, str]:
    """The op of step_model.OPS that each labelled module of a ConvMixer is."""
    ops: dict[nn.Module, str] = {model: MODEL}
    for module in model.modules():
        if isinstance(module, ConvActNorm):
            ops[module.act], ops[module.norm] = "activation", "norm"
        if isinstance(module, PatchEmbed):
            ops[module.conv] = "patch_embed"
        if isinstance(module, MixerLayer):
            ops[module], ops[module.depthwise.conv], ops[module.pointwise.conv] = "residual", "depthwise", "pointwise"
        if isinstance(module, ClassifierHead):
            ops[module], ops[module.pool], ops[module.fc] = "head", "pool", "head"
    return ops


@contextmanager
def labelled(model: nn.Module) -> Iterator[None]:
    """While inside: each labelled module's forward runs in a profiler range named LABEL + its op."""
    open_ranges: list[record_function] = []

    def enter(op: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            open_ranges.append(record_function(LABEL + op))
            open_ranges[-1].__enter__()

        return hook

    def leave(module: nn.Module, args: tuple, output: object) -> None:
        open_ranges.pop().__exit__(None, None, None)

    handles = []
    for module, op in module_ops(model).items():
        handles += [module.register_forward_pre_hook(enter(op)), module.register_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def profile_steps(step: Callable[[], object], model: nn.Module, device: torch.device, steps: int):
    """torch.profiler's events of `steps` calls of `step` (each in a LABEL + STEP range), the model labelled."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with labelled(model), profile(activities=activities) as profiler:
        for _ in range(steps):
            with record_function(LABEL + STEP):
                step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return profiler.events()


def own_seconds(event, device: torch.device) -> float:
    """The event's own time, without its children's: its kernels' on CUDA, its CPU time elsewhere."""
    micros = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
    return micros / 1e6


def walk(event) -> Iterator:
    yield event
    for child in event.cpu_children:
        yield from walk(child)


def op_of(event) -> str | None:
    """The op of the innermost labelled module range around an event (None outside the model's modules)."""
    parent = event
    while parent is not None:
        if parent.name.startswith(LABEL) and parent.name not in (LABEL + STEP, LABEL + MODEL):
            return parent.name.removeprefix(LABEL)
        parent = parent.cpu_parent
    return None


class StepMap:
    """Each profiled CPU event's (op, direction), in the order: forward (labelled and around the model), backward
    (by sequence number), the optimizer."""

    def __init__(self, events) -> None:
        self.events = [event for event in events if event.device_type == DeviceType.CPU]
        self.labels: dict[int, tuple[str, str]] = {}
        self.by_sequence: dict[int, str] = {}  # the forward runs on one thread, whose sequence numbers are unique
        steps = sorted((e for e in self.events if e.name == LABEL + STEP), key=lambda e: e.time_range.start)
        for step in steps:
            self.label_step(step)

    def label_step(self, step) -> None:
        inside = [e for e in self.events if step.time_range.start <= e.time_range.start <= step.time_range.end]
        nodes = [e for e in inside if e.name.startswith(BACKWARD_NODE)]
        backward_start = min((e.time_range.start for e in nodes), default=step.time_range.end)
        models = [e for e in step.cpu_children if e.name == LABEL + MODEL]
        model_end = models[0].time_range.end if models else step.time_range.start
        for top in step.cpu_children:
            if top.name.startswith(BACKWARD_NODE):
                continue  # on a CPU the backward runs on this thread: labelled below, by sequence number
            phase = self.phase(top, model_end, backward_start, models)
            for event in walk(top):
                self.label(event, phase)
        for node in sorted(nodes, key=lambda e: e.time_range.start):
            self.label_backward(node)

    @staticmethod
    def phase(top, model_end: float, backward_start: float, models: list) -> tuple[str, str]:
        """The op and direction of a step's top-level event outside the model's labelled ranges."""
        if top.name.startswith(OPTIMIZER_RANGE):
            return "optimizer", "update"
        if top.time_range.start >= backward_start:  # clipping runs under no_grad (no sequence number), the
            return ("optimizer", "update") if top.sequence_nr < 0 else ("loss", "forward")  # loss's sums do not
        if models and top is not models[0] and top.time_range.start < models[0].time_range.start:
            return "patch_embed", "forward"  # the images' layout copy, which feeds the patch embedding
        if top.time_range.start >= model_end:
            return "loss", "forward"
        return OTHER, "forward"

    def label(self, event, phase: tuple[str, str]) -> None:
        op, direction = op_of(event) or phase[0], phase[1]
        self.labels[id(event)] = (op, direction)
        if event.sequence_nr >= 0:
            self.by_sequence[event.sequence_nr] = op

    def label_backward(self, node) -> None:
        op = self.by_sequence.get(node.sequence_nr, OTHER)
        self.labels[id(node)] = (op, "backward")
        for child in node.cpu_children:
            # the node itself runs as a child named after it; an add beside it sums two gradients of one tensor
            child_op = "residual" if child.name in GRADIENT_SUMS else op
            for event in walk(child):
                self.labels[id(event)] = (child_op, "backward")

    def seconds(self, device: torch.device) -> dict[tuple[str, str], float]:
        """Summed own time of the labelled events by (op, direction); this module's own ranges excluded."""
        totals: dict[tuple[str, str], float] = defaultdict(float)
        for event in self.events:
            if id(event) in self.labels and not event.name.startswith(LABEL):
                totals[self.labels[id(event)]] += own_seconds(event, device)
        return dict(totals)

    def kernels(self) -> dict[tuple[str, str], dict[str, float]]:
        """On CUDA: each (op, direction)'s kernels by name, with their summed device seconds."""
        found: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for event in self.events:
            for kernel in event.kernels if id(event) in self.labels else ():
                found[self.labels[id(event)]][kernel.name] += kernel.duration / 1e6
        return {key: dict(value) for key, value in found.items()}
