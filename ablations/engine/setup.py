"""How a run lays out its tensors and runs its depthwise convs: the engine's choice among what the model offers.

`fastest_setup` decides, per run, the memory layout (channels_last or NCHW) and the depthwise implementation
(convmixer.depthwise.IMPLS) when a run leaves them at "auto": on CUDA it keeps the candidate with the fewest seconds
for one mixer layer's forward and backward at the run's shape. Those seconds come from a table on disk
(`depthwise-auto.json` in the toolkit's cache folder), keyed by the device, the library versions and the shape:
a candidate is timed only where the table has no row for it, once per machine and shape, and every later run (any
process) reads it. On CPU "auto" is what it always was (channels_last, torch). Run ids do not depend on the choice.
"""

import hashlib
import itertools
import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ablations import atomic
from ablations.data import cache_dir
from convmixer.arguments import require
from convmixer.depthwise import IMPLS, DepthwiseConv2d, use_impl
from convmixer.runtime import hardware_name, step_seconds

TABLE = "depthwise-auto.json"  # the measured seconds, in the cache folder ($CONVMIXER_CACHE)
TABLE_FORMAT = 1
DEPTHWISE_SOURCES = Path(__file__).resolve().parents[2] / "convmixer"  # depthwise*.py: the Triton route's code


@dataclass(frozen=True)
class Setup:
    """How a run lays out its tensors and runs its depthwise convs."""

    channels_last: bool
    impl: str  # one of IMPLS


@dataclass(frozen=True)
class Workload:
    """The shape one mixer layer of a run sees: what a measurement times, and part of its row's key."""

    device: torch.device
    dtype: torch.dtype | None  # the autocast dtype, None for fp32
    dim: int
    kernel_size: int
    size: int  # height and width of the feature map: image size // patch size
    batch: int


def mixer_layer(setup: Setup, work: Workload) -> tuple[nn.Module, torch.Tensor]:
    """One mixer layer (depthwise conv, GELU, BatchNorm, 1x1 conv) and a batch for it, laid out as `setup` says."""
    layer = nn.Sequential(DepthwiseConv2d(work.dim, work.kernel_size), nn.GELU(), nn.BatchNorm2d(work.dim),
                          nn.Conv2d(work.dim, work.dim, 1))  # fmt: skip
    use_impl(layer, setup.impl)
    memory_format = torch.channels_last if setup.channels_last else torch.contiguous_format
    layer.to(work.device, memory_format=memory_format)
    x = torch.randn(work.batch, work.dim, work.size, work.size, device=work.device)
    return layer, x.contiguous(memory_format=memory_format).requires_grad_()


def time_setup(setup: Setup, work: Workload) -> float:
    """Seconds of one forward and backward of a mixer layer of `work` run as `setup` says (the median of 5, after 3
    untimed). Its random weights and batch come from a forked generator, so measuring never shifts the random
    numbers of the run that asked."""
    with torch.random.fork_rng(devices=[work.device] if work.device.type == "cuda" else []):
        layer, x = mixer_layer(setup, work)

        def step() -> None:
            with torch.autocast(work.device.type, dtype=work.dtype, enabled=work.dtype is not None):
                out = layer(x)
            out.float().square().mean().backward()

        return statistics.median(step_seconds(step, work.device, warmup=3, repeats=5))


def candidates(channels_last: bool | str, impl: str, device: torch.device) -> tuple[Setup, ...]:
    """The setups "auto" leaves open. On CPU only the one it always was: channels_last unless told False, torch."""
    if impl != "auto" and impl not in IMPLS:
        raise ValueError(f"depthwise_impl={impl!r} is not accepted; choose auto, {', '.join(IMPLS)}")
    if device.type != "cuda":
        return (Setup(channels_last is not False, "torch"),)
    layouts = (True, False) if channels_last == "auto" else (bool(channels_last),)
    impls = IMPLS if impl == "auto" else (impl,)
    if "triton" in impls:
        require("triton", "triton")
    return tuple(Setup(layout, name) for layout, name in itertools.product(layouts, impls))


# --- the table of measured seconds ---


def device_facts(device: torch.device) -> dict[str, str]:
    """What a timing depends on besides the shape: the device and the library versions."""
    facts = {"device": hardware_name(device), "torch": torch.__version__}
    if device.type == "cuda":
        facts["cudnn"] = str(torch.backends.cudnn.version())
    return facts


def impl_version(impl: str) -> str:
    """The version of the code an implementation runs: the Triton route's sources and triton's, else torch's own."""
    if impl != "triton":
        return "torch"
    triton = require("triton", "triton")
    sources = hashlib.sha256()
    for path in sorted(DEPTHWISE_SOURCES.glob("depthwise*.py")):
        sources.update(path.read_bytes())
    return f"triton {triton.__version__}, kernels {sources.hexdigest()[:12]}"


def table_row(setup: Setup, work: Workload, facts: dict[str, str]) -> dict:
    """The key of one timing, as the table's row holds it (without its seconds)."""
    dtype = str(work.dtype).removeprefix("torch.") if work.dtype is not None else "float32"
    # a float32 run's convs run on TF32 or not as the run asked (cuda_math_flags, set around the timing)
    tf32 = torch.backends.cudnn.allow_tf32 if work.dtype is None else None
    shape = {key: value for key, value in asdict(work).items() if key not in ("device", "dtype")}
    return {
        **facts,
        "dtype": dtype,
        "tf32": tf32,
        **shape,
        "channels_last": setup.channels_last,
        "impl": setup.impl,
        "impl_version": impl_version(setup.impl),
    }


def row_key(row: dict) -> str:
    return json.dumps({key: value for key, value in row.items() if key != "seconds"}, sort_keys=True)


def read_rows(path: Path) -> list[dict]:
    """The table's rows; a missing, unreadable or damaged file, or a damaged row, reads as no rows (measured again
    and the file rewritten), never an error: the table holds timings, which can always be made again."""
    try:
        table = json.loads(path.read_text())
        rows = table["rows"] if table["format"] == TABLE_FORMAT else []
        return [row for row in rows if isinstance(row, dict) and positive_number(row.get("seconds"))]
    except (OSError, ValueError, TypeError, KeyError):
        return []


def positive_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def write_rows(path: Path, rows: list[dict]) -> None:
    """Add `rows` to the table, atomically (a reader sees the old table or the new one), merged with what another
    process may have written since this one read it. A table that cannot be written costs a timing in a later run."""
    merged = {row_key(row): row for row in [*read_rows(path), *rows]}
    try:
        atomic.write_json(path, {"format": TABLE_FORMAT, "rows": list(merged.values())})
    except OSError:
        pass


def measured_seconds(
    options: tuple[Setup, ...], work: Workload, seconds: Callable[[Setup, Workload], float], table: Path
) -> dict[Setup, float]:
    """Each option's seconds on `work`: from the table where it has the row, else timed now and added to it."""
    facts = device_facts(work.device)
    rows = {setup: table_row(setup, work, facts) for setup in options}
    known = {row_key(row): row["seconds"] for row in read_rows(table)}
    missing = [setup for setup in options if row_key(rows[setup]) not in known]
    new_rows = [{**rows[setup], "seconds": seconds(setup, work)} for setup in missing]
    if new_rows:
        write_rows(table, new_rows)
    known |= {row_key(row): row["seconds"] for row in new_rows}
    return {setup: known[row_key(rows[setup])] for setup in options}


def fastest_setup(
    channels_last: bool | str,
    impl: str,
    work: Workload,
    seconds: Callable[[Setup, Workload], float] = time_setup,
    table: Path | None = None,
) -> Setup:
    """The setup a run uses: what it asked for, with each "auto" settled by the fewest seconds on `work` (from
    `table`, default the cache folder's, timing only what it lacks). A tie keeps the earlier candidate."""
    options = candidates(channels_last, impl, work.device)
    if len(options) == 1:
        return options[0]
    times = measured_seconds(options, work, seconds, table or cache_dir() / TABLE)
    return min(options, key=times.__getitem__)
