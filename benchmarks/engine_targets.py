"""The engine's targets (docs/benchmarks.md) and whether one `python -m benchmarks.train_speed` run meets them.

Each target is read from numbers measured in that run: the variants' summaries (train_speed.summarise) and the
bare step and bandwidth beside them. A target whose variant did not run says n/a, never a number from elsewhere.
"""

import statistics
from collections.abc import Callable

from ablations.config import RunConfig
from ablations.sweep.presets import PRESETS

BASELINE = "reference"  # speed ratios are to the reference as published
WORKERS_BASELINE = "reference-workers"  # and to it with --workers workers; accuracy is compared with it
TARGETS_PRESET = "cifar10-jpeg"  # the recipe the targets are set for, and train_speed's default


def full_recipe(cfg: RunConfig, train_images: int) -> bool:
    """Whether cfg is the run the issue's targets are set for: the preset's recipe (25 epochs of ConvMixer-256/8
    k5 p2, batch 512, ...) on all 50,000 training images."""
    recipe = PRESETS[TARGETS_PRESET].values
    return all(getattr(cfg, key) == value for key, value in recipe.items()) and train_images == 50_000


def target(label: str, value: float | None, fmt: str, goal: Callable[[float], bool] | None) -> dict:
    measured = "n/a (not measured in this run)" if value is None else fmt.format(value)
    return {
        "target": label,
        "measured": measured,
        "value": value,
        "met": None if value is None or goal is None else bool(goal(value)),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


# (target, key of its value in `measured`, format, met when); the values are None where a variant did not run
GOALS: tuple[tuple[str, str, str, Callable[[float], bool] | None], ...] = (
    ("engine: process start to exit <= 30 s", "process_s", "{:.1f} s", lambda v: v <= 30),
    (f"speed-up over {BASELINE} (all epochs' time) >= 8x", "speed_up", "{:.2f}x", lambda v: v >= 8),
    (f"speed-up over {WORKERS_BASELINE} >= 2.5x", "speed_up_workers", "{:.2f}x", lambda v: v >= 2.5),
    (f"test acc within 0.5 points of {WORKERS_BASELINE} over >= 2 seeds", "gap", "{:.4f}", lambda v: v <= 0.005),
    ("steady epoch >= 95 % of the bare step, eager", "eager_share", "{:.1%}", lambda v: v >= 0.95),
    ("steady epoch >= 95 % of the bare step, compiled", "compiled_share", "{:.1%}", lambda v: v >= 0.95),
    ("epoch 1 <= 1.5x a steady epoch, eager (warm-up before it is set-up)", "epoch_1", "{:.2f}x", lambda v: v <= 1.5),
    ("compile with a warm cache: warm-up + epoch 1 - steady epoch <= 5 s", "warm_cache", "{:.1f} s", lambda v: v <= 5),
    ("compiled run / eager run, process time (< 1: compile wins)", "compiled_process", "{:.2f}", lambda v: v < 1),
    ("2 runs per device: throughput / 1 per device (> 1: 2 win)", "side_by_side", "{:.2f}", lambda v: v > 1),
    ("achieved memory bandwidth / copy rate (eager bare step)", "bandwidth_share", "{:.1%}", None),
)


def measured(summaries: dict[str, dict], extra: dict) -> dict[str, float | None]:
    """Each goal's value from the variants' summaries and the bare step (`extra`); None where its variant did not
    run."""
    get = lambda name, key: summaries[name][key] if name in summaries else None  # noqa: E731
    engine_total, bare = get("engine", "total_epoch_time_s"), extra.get("bare", {})
    accuracies = [get(name, "final_test_acc") for name in ("engine", WORKERS_BASELINE)]
    gap = None
    if all(accuracies) and min(len(values) for values in accuracies) >= 2:
        gap = abs(statistics.mean(accuracies[0]) - statistics.mean(accuracies[1]))
    # Compilation happens in the warm-up before epoch 1: the overhead of a warm cache is both, less a steady epoch.
    firsts, warm_ups = (
        get("engine-compiled", "first_epoch_time_per_seed_s"),
        get("engine-compiled", "warm_up_time_per_seed_s"),
    )
    compiled_steady = get("engine-compiled", "steady_epoch_time_s")
    warm_overhead = None
    if firsts and len(firsts) >= 2:
        warm_overhead = statistics.mean(f + w for f, w in zip(firsts[1:], warm_ups[1:], strict=True)) - compiled_steady
    side_by_side = None
    if "engine-2-per-device" in summaries and get("engine", "process_time_per_seed_s"):
        side_by_side = sum(get("engine", "process_time_per_seed_s")) / get("engine-2-per-device", "process_time_s")
    return {
        "process_s": get("engine", "process_time_s"),
        "speed_up": ratio(get(BASELINE, "total_epoch_time_s"), engine_total),
        "speed_up_workers": ratio(get(WORKERS_BASELINE, "total_epoch_time_s"), engine_total),
        "gap": gap,
        "eager_share": ratio(bare.get("eager", {}).get("epoch_time_s"), get("engine", "steady_epoch_time_s")),
        "compiled_share": ratio(bare.get("compiled", {}).get("epoch_time_s"), compiled_steady),
        "epoch_1": ratio(get("engine", "first_epoch_time_s"), get("engine", "steady_epoch_time_s")),
        "warm_cache": warm_overhead,
        "compiled_process": ratio(get("engine-compiled", "process_time_s"), get("engine", "process_time_s")),
        "side_by_side": side_by_side,
        "bandwidth_share": ratio(extra.get("achieved_bytes_per_s"), extra.get("copy_bytes_per_s")),
    }


def targets(summaries: dict[str, dict], extra: dict) -> list[dict]:
    """The engine's targets (docs/benchmarks.md), from numbers measured in this run (n/a: its variant did not run)."""
    values = measured(summaries, extra)
    return [target(label, values[key], fmt, goal) for label, key, fmt, goal in GOALS]


def targets_table(rows: list[dict], recipe: bool) -> str:
    note = "" if recipe else " (this run is not the targets' recipe: 25 epochs of ConvMixer-256/8 k5 p2 on 50,000)"
    lines = [f"Targets of the engine{note}", "", "| target | measured | met |", "|---|---|---|"]
    for row in rows:
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]
        lines.append(f"| {row['target']} | {row['measured']} | {met} |")
    return "\n".join(lines)
