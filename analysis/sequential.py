"""The sequential seed design: seeds are added stage by stage, and only to the comparisons the report cannot yet
settle, with a family-wise error rate that holds whatever the stage a comparison stopped at.

Stages: the seeds per variant double from 3 (`FIRST_SEEDS`) up to `max_seeds` (3, 6, 10 for 10; 3, 6 for 6): K
planned looks. Look k spends the share w_k = n_k / (n_1 + ... + n_K) of alpha (a weighted Bonferroni split, the
shares sum to 1; the last look, where small differences are found, keeps the most). At look k, each open
comparison (its variant and its baseline both at n_k seeds) gets Welch's two-sided p_k from the first n_k seeds of
each side; its sequential p-value is min(1, min over the looks it was tested at of p_k / w_k). That is a valid
p-value whatever the looks it skipped: under no difference, P(min_k p_k / w_k <= u) <= sum_k w_k u = u over all K
planned looks, and a minimum over fewer looks is larger. Holm's step-down over the report's comparisons then
adjusts these p-values; Holm is valid under any dependence between them (the shared baseline, the stopping), so the
family-wise error rate is at most alpha. A comparison is

- decided: its Holm-adjusted sequential p is below alpha (it only falls stage by stage, so it stays decided);
- bounded: its Welch interval at look k's level 1 - w_k alpha (together over the K looks: 1 - alpha) lies
  inside (-resolve, +resolve);
- open otherwise: its variant and baseline get the next stage's seeds, until the last stage.

Stopping a comparison early (bounded) only takes away chances to reject, so it costs no error rate. Torch-free:
the simulation that proves the error rate and the power runs vectorised in numpy (`python -m analysis.sequential
--simulate`, docs/analysis.md's table).
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

FIRST_SEEDS = 3
MAX_SEEDS = 10
RESOLVE = 1.0  # points: the smallest difference worth resolving
ALPHA = 0.05  # the report's rule: Holm-adjusted Welch p below 0.05 (analysis.variants.compare)


def check_stages(max_seeds: int, resolve: float = RESOLVE) -> None:
    """ValueError, in words, for a --max-seeds below the first stage or a --resolve that is no positive number."""
    if max_seeds < FIRST_SEEDS:
        raise ValueError(f"--max-seeds {max_seeds} is not accepted: expected an integer >= {FIRST_SEEDS}")
    if not 0 < resolve < math.inf:
        raise ValueError(f"--resolve {resolve:g} is not accepted: expected a number of points > 0")


def looks(max_seeds: int = MAX_SEEDS, first: int = FIRST_SEEDS) -> list[int]:
    """The seeds per variant at each stage: doubling from `first`, the last one `max_seeds`."""
    check_stages(max_seeds)
    counts = [first]
    while counts[-1] < max_seeds:
        counts.append(min(2 * counts[-1], max_seeds))
    return counts


def spending(counts: list[int]) -> list[float]:
    """The share of alpha each look spends: in proportion to its seeds, so that the last look, where the small
    differences are found, keeps the most (a weighted Bonferroni split: the shares sum to 1)."""
    return [n / sum(counts) for n in counts]


def welch_arrays(a: np.ndarray, b: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch's two-sided p and the interval [low, high] of mean(a) - mean(b) along the last axis, vectorised over
    the others (analysis.stats.welch's numbers); an exact difference where both sides have no spread."""
    from scipy import stats  # here: the runner imports this module, and --help answers without scipy

    n_a, n_b = a.shape[-1], b.shape[-1]
    diff = a.mean(-1) - b.mean(-1)
    va, vb = a.var(-1, ddof=1) / n_a, b.var(-1, ddof=1) / n_b
    se = np.sqrt(va + vb)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
        p = 2 * stats.t.sf(np.abs(diff) / se, df)
        half = stats.t.ppf(0.5 + level / 2, df) * se
    exact = se == 0
    p = np.where(exact, (diff == 0).astype(float), p)
    half = np.where(exact, 0.0, half)
    return p, diff - half, diff + half


def holm_rows(p: np.ndarray) -> np.ndarray:
    """Holm's adjusted p-values along the last axis (each row one family), as analysis.stats.holm."""
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, -1) * (m - np.arange(m))
    adjusted = np.minimum(np.maximum.accumulate(ranked, axis=-1), 1.0)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, -1)
    return out


@dataclass
class Walk:
    """Where each comparison of each study stands (arrays over studies x comparisons; stages count from 1)."""

    looks: list[int]
    decided_at: np.ndarray  # the stage it was decided at, 0 if not
    bounded_at: np.ndarray  # the stage its interval excluded `resolve`, 0 if not
    tested: np.ndarray  # the last stage it was tested at (its variant's seeds are looks[tested - 1])
    p_holm: np.ndarray  # Holm-adjusted sequential p
    stage: int  # the stage whose seeds are missing (len(looks) + 1 when the design has run to its end)

    @property
    def open(self) -> np.ndarray:
        return (self.decided_at == 0) & (self.bounded_at == 0)

    def runs(self) -> np.ndarray:
        """Runs per study: each variant's seeds, plus one baseline with the seeds of its last tested comparison."""
        seeds = np.where(self.tested > 0, np.asarray(self.looks)[np.maximum(self.tested, 1) - 1], 0)
        return seeds.sum(-1) + seeds.max(-1)


def walk(
    variant: np.ndarray, baseline: np.ndarray, max_seeds: int = MAX_SEEDS, resolve: float = RESOLVE, alpha=ALPHA
) -> Walk:
    """Run the design over seeds in hand: arrays (studies, comparisons, seeds) in seed order, NaN where a seed has
    not run. It stops at the first stage whose seeds an open comparison lacks: the stage the sweep is in."""
    counts = looks(max_seeds)
    shares = spending(counts)
    shape = variant.shape[:-1]
    best = np.ones(shape)
    decided_at, bounded_at, tested = (np.zeros(shape, int) for _ in range(3))
    p_holm = np.ones(shape)
    for stage, n in enumerate(counts, 1):
        open_ = (decided_at == 0) & (bounded_at == 0)
        a, b = variant[..., :n], baseline[..., :n]
        have = (a.shape[-1] == n) & ~np.isnan(a).any(-1) & ~np.isnan(b).any(-1)
        if not open_.any() or (open_ & ~have).any():
            return Walk(counts, decided_at, bounded_at, tested, p_holm, stage if open_.any() else len(counts) + 1)
        p, low, high = welch_arrays(np.nan_to_num(a), np.nan_to_num(b), 1 - alpha * shares[stage - 1])
        best = np.where(open_, np.minimum(best, p / shares[stage - 1]), best)
        tested = np.where(open_, stage, tested)
        p_holm = holm_rows(np.minimum(1.0, best))
        decided = open_ & (p_holm < alpha)
        decided_at = np.where(decided, stage, decided_at)
        bounded_at = np.where(open_ & ~decided & (low > -resolve) & (high < resolve), stage, bounded_at)
    return Walk(counts, decided_at, bounded_at, tested, p_holm, len(counts) + 1)


def fixed_decisions(variant: np.ndarray, baseline: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """The fixed design's decisions with every seed: Welch p, Holm over the comparisons, below alpha."""
    p, _, _ = welch_arrays(variant, baseline, 0.95)
    return holm_rows(p) < alpha


# The committed CPU study (results/cifar10-cpu/report/variants.csv, 3 seeds): its 10 comparisons' differences in
# points, rounded, the residual placements taken as no effect; and its pooled seed-to-seed sd.
STUDY_EFFECTS = (-6.1, -4.3, -1.95, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
STUDY_SD = 0.87


def simulate(
    effects, sd: float, max_seeds: int, studies: int, resolve: float = RESOLVE, alpha=ALPHA, seed: int = 0
) -> dict:
    """Simulated studies with the given true differences: the sequential design against the fixed design at
    max_seeds. Family-wise error: any decision on a zero difference; power: the share of non-zero differences
    decided; runs: the mean runs per study (one baseline and each variant)."""
    rng = np.random.default_rng(seed)
    effects = np.asarray(effects, dtype=float)
    variant = rng.normal(effects[None, :, None], sd, (studies, len(effects), max_seeds))
    baseline = np.broadcast_to(rng.normal(0, sd, (studies, 1, max_seeds)), variant.shape)
    sequential = walk(variant, baseline, max_seeds, resolve, alpha)
    fixed = fixed_decisions(variant, baseline, alpha)
    designs = {"sequential": (sequential.decided_at > 0, sequential.runs().mean()), "fixed": (fixed, 0)}
    null, real = effects == 0, effects != 0
    table = {}
    for name, (decided, runs) in designs.items():
        table[name] = {
            "fwer": float(decided[:, null].any(-1).mean()) if null.any() else math.nan,
            "power": float(decided[:, real].mean()) if real.any() else math.nan,
            "runs": float(runs) if name == "sequential" else float((len(effects) + 1) * max_seeds),
        }
    return table


@dataclass(frozen=True)
class Comparisons:
    """A sweep's comparisons as the design reads them: labels, and test accuracy in points by seed (NaN: not run)."""

    labels: list[str]  # the variant of each comparison
    variants: list[dict]  # its key values
    baselines: list[dict]  # its baseline's key values
    variant: np.ndarray  # (1, comparisons, max_seeds)
    baseline: np.ndarray


def by_seed(runs, values: dict, max_seeds: int) -> np.ndarray:
    """Test accuracy (points) of the done runs with these key values, at the index of their seed."""
    import pandas as pd

    row = np.full(max_seeds, np.nan)
    match = (runs[list(values)] == pd.Series(values)).all(axis=1) if values else np.ones(len(runs), bool)
    for seed, accuracy in zip(runs.loc[match, "seed"], runs.loc[match, "test_acc"], strict=True):
        if 0 <= seed < max_seeds:
            row[int(seed)] = 100 * accuracy
    return row


def comparisons(scope, max_seeds: int) -> Comparisons:
    """Each non-baseline variant of a report's scope against its baseline (analysis.variants.compare's pairs)."""
    from analysis.design import variant_label

    finished = scope.done
    labels, variants, baselines, rows = [], [], [], []
    for values in finished[scope.keys].drop_duplicates().sort_values(scope.keys).to_dict("records"):
        reference = values | scope.baseline
        if reference == values:
            continue
        labels.append(variant_label({k: v for k, v in values.items() if v != reference[k]}))
        variants.append(values)
        baselines.append(reference)
        rows.append((by_seed(finished, values, max_seeds), by_seed(finished, reference, max_seeds)))
    variant, baseline = (np.array([[row[i] for row in rows]]) for i in (0, 1))
    return Comparisons(labels, variants, baselines, variant, baseline)


def state_lines(found: Comparisons, state: Walk, resolve: float) -> list[str]:
    """Where each comparison stands, in words: decided or bounded at which stage, or why it is still open."""
    lines = []
    last = len(state.looks)
    for i, label in enumerate(found.labels):
        seeds = state.looks[state.tested[0, i] - 1] if state.tested[0, i] else 0
        if state.decided_at[0, i]:
            why = f"decided at stage {state.decided_at[0, i]} ({seeds} seeds, p_Holm {state.p_holm[0, i]:.2g})"
        elif state.bounded_at[0, i]:
            why = f"bounded at stage {state.bounded_at[0, i]} ({seeds} seeds: the interval is inside ±{resolve:g})"
        elif state.stage > last:
            why = f"open: stopped at the last stage ({seeds} seeds, --max-seeds), p_Holm {state.p_holm[0, i]:.2g}"
        else:
            why = f"open: gets seeds up to {state.looks[state.stage - 1]} at stage {state.stage}"
        lines.append(f"- {label}: {why}")
    return lines


def next_runs(found: Comparisons, state: Walk) -> list[tuple[dict, int]]:
    """The (variant values, seed) runs the next stage needs: each open comparison's variant and baseline, every
    seed below the stage's count that has not run; [] once the design has run to its end."""
    if state.stage > len(state.looks):
        return []
    n = state.looks[state.stage - 1]
    needed = {}
    for i in np.flatnonzero(state.open[0]):
        for values, row in ((found.variants[i], found.variant[0, i]), (found.baselines[i], found.baseline[0, i])):
            for seed in np.flatnonzero(np.isnan(row[:n])):
                needed[(tuple(sorted(values.items())), int(seed))] = values
    return [(values, seed) for (_, seed), values in needed.items()]


def design_line(max_seeds: int, resolve: float, alpha: float = ALPHA) -> str:
    counts = looks(max_seeds)
    shares = " + ".join(f"{alpha * share:.3g}" for share in spending(counts))
    return (
        f"Sequential seeds: stages of {', '.join(map(str, counts))} seeds per variant; α = {alpha:g} split over the "
        f"looks in proportion to their seeds ({shares}), Holm over the comparisons: family-wise error ≤ {alpha:g}. "
        f"A comparison stops when decided, or bounded: its interval at its look's level lies inside ±{resolve:g} "
        "points. Only the variants of open comparisons (and their baseline) get the next stage's seeds."
    )


SIMULATED = 4000  # studies per row of the table: the error rate's simulation error is about ±0.35 points


def simulation_table(max_seeds_list=(6, 10), studies: int = SIMULATED) -> list[str]:
    """docs/analysis.md's table: error rate, power and runs of both designs, under no effect and the study's."""
    lines = [
        "| Effects | --max-seeds | Design | Family-wise error | Power | Runs per study |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for name, effects in (("none", (0.0,) * len(STUDY_EFFECTS)), ("the CPU study's", STUDY_EFFECTS)):
        for max_seeds in max_seeds_list:
            for design, row in simulate(effects, STUDY_SD, max_seeds, studies).items():
                power = "" if math.isnan(row["power"]) else f"{row['power']:.1%}"
                lines.append(f"| {name} | {max_seeds} | {design} | {row['fwer']:.1%} | {power} | {row['runs']:.1f} |")
    return lines


PROG = "python -m analysis.sequential"


def main(argv: list[str] | None = None) -> int:
    from convmixer.arguments import OneLineParser, folder_path

    parser = OneLineParser(prog=PROG, description="Where a sweep stands in the sequential seed design.")
    parser.add_argument("sweeps", nargs="*", type=folder_path, help="sweep folders, e.g. results/cifar10-cpu")
    parser.add_argument("--max-seeds", type=int, default=MAX_SEEDS, help=f"the last stage (default {MAX_SEEDS})")
    parser.add_argument("--resolve", type=float, default=RESOLVE, help="points worth resolving (default 1)")
    parser.add_argument("--simulate", action="store_true", help="print the simulation table of docs/analysis.md")
    args = parser.parse_args(argv)
    if args.simulate:
        print("\n".join(simulation_table()))
        return 0
    if not args.sweeps:
        parser.error("give a sweep folder, or --simulate")
    try:
        check_stages(args.max_seeds, args.resolve)
    except ValueError as error:
        parser.error(str(error))
    from pathlib import Path

    from analysis.design import scope

    found = comparisons(scope(list(map(Path, args.sweeps)), []), args.max_seeds)
    state = walk(found.variant, found.baseline, args.max_seeds, args.resolve)
    runs = next_runs(found, state)
    print(design_line(args.max_seeds, args.resolve))
    print("\n".join(state_lines(found, state, args.resolve)))
    print(f"Next: stage {state.stage}, {len(runs)} runs" if runs else "Next: nothing, the design has run to its end")
    for values, seed in runs:
        print(f"- {', '.join(f'{k}={v}' for k, v in values.items())}, seed={seed}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    from ablations.config import ConfigError
    from analysis.errors import AnalysisError
    from convmixer.arguments import run_cli

    return run_cli(main, argv, PROG, (AnalysisError, ConfigError, OSError))


if __name__ == "__main__":
    import sys

    sys.exit(cli())


def next_stage(sweep, max_seeds: int, resolve: float) -> tuple[list[str], list[tuple[dict, int]]]:
    """For the runner: where a sweep folder stands (lines) and the runs its stage needs beyond the first stage's
    seeds of every variant, which it always needs; nothing read yet (no finished run): the first stage."""
    from analysis.design import scope
    from analysis.errors import AnalysisError

    try:
        found = comparisons(scope([sweep], []), max_seeds)
    except AnalysisError:
        return [design_line(max_seeds, resolve), f"stage 1: {FIRST_SEEDS} seeds of every variant"], []
    state = walk(found.variant, found.baseline, max_seeds, resolve)
    runs = next_runs(found, state)
    where = f"stage {state.stage}: {len(runs)} runs for the open comparisons" if runs else "no comparison is open"
    return [design_line(max_seeds, resolve), *state_lines(found, state, resolve), where], runs


class Standing(NamedTuple):
    """Where a seeds-auto study stands: its comparisons, the design's walk over them, and the design's settings."""

    found: Comparisons
    state: Walk
    max_seeds: int
    resolve: float


def standing(scope) -> Standing | None:
    """A seeds-auto scope's standing under its latest auto design (its stages and resolve); None for a design of
    fixed seeds. The report computes it once for its table and its account of the design."""
    from ablations.design import AUTO

    auto = [design for design in scope.designs.values() if design is not None and design.seeds == AUTO]
    if not auto:
        return None
    max_seeds, resolve = auto[-1].max_seeds, auto[-1].resolve
    found = comparisons(scope, max_seeds)
    return Standing(found, walk(found.variant, found.baseline, max_seeds, resolve), max_seeds, resolve)


def with_design_p(variants, scope, auto: Standing | None):
    """The report's variants frame with p_holm the design's: for seeds auto (`auto`, the scope's standing), each
    comparison's Holm-adjusted sequential p (the rule its decisions follow; Welch's p at the last look alone would
    not hold its error rate under stopping), marked in `attrs["p_holm"]`; the frame unchanged for fixed seeds."""
    if auto is None:
        return variants
    by_values = {
        tuple(values[key] for key in scope.keys): auto.state.p_holm[0, i] if auto.state.tested[0, i] else math.nan
        for i, values in enumerate(auto.found.variants)
    }
    design_p = [by_values.get(tuple(row[key] for key in scope.keys), math.nan) for row in variants.to_dict("records")]
    variants = variants.assign(p_holm=design_p)
    variants.attrs["p_holm"] = "sequential"
    return variants


def report_lines(scope, auto: Standing | None) -> list[str]:
    """report.md's account of a seeds-auto design (`auto`, the scope's standing): the design, each comparison's
    stage and why the undecided ones stopped, and the runs it took against the fixed design at its maximum; [] for
    a design of fixed seeds."""
    if auto is None:
        return []
    fixed = (len(auto.found.labels) + 1) * auto.max_seeds
    return [
        "",
        design_line(auto.max_seeds, auto.resolve) + " The decisions below, and the table's p_Holm, are this design's.",
        *state_lines(auto.found, auto.state, auto.resolve),
        f"Runs: {len(scope.done)} done, where a fixed design of {auto.max_seeds} seeds per variant trains {fixed}.",
    ]
