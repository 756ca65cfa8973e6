"""The sweep's plan: which runs train (again), on which data, and how the sweep ended, callable without an argv.

`plan` checks what a run would fail on first (each distinct dataset is loaded once, every run folder is checked
against it) and writes nothing; `run_plan` records the design, holds the folder's lock and trains what is left
with a launcher; `outcome` reads every run's state back. `python -m ablations.run` is these three with parsing and
printing around them, and a notebook calls them directly:

    sweep = build_sweep(PRESETS["smoke"].values, [], ["kernel_size=3,7"], seeds=1)
    store = Store(Path("sweeps/k"))
    launcher = InProcessLauncher(store)  # or LocalLauncher(store, ["cpu"], jobs_per_device=2): workers
    ended = run_plan(plan(sweep.configs(), store), launcher, sweep.design("k", "smoke"))  # exit_code 0: all done

Whether a finished run keeps its checkpoint is the plan's policy (`keep_checkpoints`), applied by end_run as each
run ends, whichever launcher trained it.

Runs train with data_root made absolute (a worker or SLURM job may start in another folder) but record it
portably (RunConfig.recorded): the absolute path goes only to the run's log.
"""

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ablations.config import ConfigError, RunConfig
from ablations.data import dataset_label
from ablations.design import Design
from ablations.store import DATA, DONE, FAILED, FINISHED, RunState, Store
from ablations.sweep.execute import EndRun, end_run
from ablations.sweep.progress import SweepProgress, run_label
from convmixer.arguments import patch_grid


class Launcher(Protocol):
    """What run_plan needs of a launcher (LocalLauncher, SlurmLauncher, InProcessLauncher): train the configs,
    calling `end_run` as each run ends, and return {run_id: metrics}. `trains_here`: in this process (else the
    splits the plan checked here are let go before training: the runs load their own)."""

    trains_here: bool

    def run(self, configs: list[RunConfig], progress: SweepProgress, end_run: EndRun) -> dict[str, dict]: ...


@dataclass
class Plan:
    store: Store
    configs: list[RunConfig]  # every run of the sweep, data_root absolute
    todo: list[RunConfig]  # the runs to train (again), as planned: run_plan asks again under the lock
    data: dict[str, dict]  # the data.json record of each run to train, or that recorded one, by run id
    retry_failed: bool = False
    keys: list[str] = field(default_factory=list)  # the keys that name a run in the progress lines
    keep_checkpoints: bool = False  # else a done or diverged run's checkpoint.pt is dropped as the run ends
    damaged: dict[Path, str] = field(default_factory=dict)  # the run files found damaged, and why (Store.find_damaged)

    def resumed(self) -> int:
        """How many of the runs to train go on from a checkpoint (an epoch or more done)."""
        return sum(self.store.state(self.store.run_dir(cfg)).epochs > 0 for cfg in self.todo)

    def patch_notes(self) -> list[str]:
        """A line for each patch size that does not divide its runs' images (their data records say the size):
        which pixels it drops, in the counter's words."""
        sizes = {(cfg.patch_size, self.data[cfg.run_id()].get("image_size") or 0) for cfg in self.configs
                 if cfg.run_id() in self.data}  # fmt: skip
        return [f"note: patch_size={patch}: {patch_grid(size, patch)}" for patch, size in sorted(sizes) if size % patch]


def check_ids(configs: list[RunConfig]) -> None:
    """ConfigError unless every run has its own id (its own folder)."""
    ids: dict[str, RunConfig] = {}
    for cfg in configs:
        first = ids.setdefault(cfg.run_id(), cfg)
        if first is not cfg:
            differ = [key for key, value in first.to_dict().items() if value != getattr(cfg, key)]
            why = (
                f"differ only in {', '.join(differ)}, which is not part of a run's id: sweep each in its own --out"
                if differ
                else "are the same config: drop one"
            )
            raise ConfigError(f"two runs of the sweep have the same id {cfg.run_id()}: they {why}")


def runs_to_train(configs: list[RunConfig], store: Store, retry_failed: bool) -> list[RunConfig]:
    """The unfinished runs, the ones that failed for a transient reason (disk full, a killed worker), and with
    `retry_failed` every failed one (diverged ones would only diverge again)."""
    states = [store.state(store.run_dir(cfg)) for cfg in configs]
    return [
        cfg
        for cfg, state in zip(configs, states, strict=True)
        if state.status not in FINISHED or (state.status == FAILED and (retry_failed or state.transient))
    ]


def data_record(cfg: RunConfig) -> dict:
    """The data.json record of the data `cfg` loads here: where it is, and what it is (the splits' identity)."""
    from ablations.data.sources import load_splits  # torch: imported once a sweep runs, not for its --help

    place = {"data": dataset_label(cfg.dataset, cfg.data_root), "data_root": cfg.recorded().data_root}
    return {**place, **load_splits(cfg).identity()}


def check_data(configs: list[RunConfig], todo: list[RunConfig], store: Store) -> dict[str, dict]:
    """Load each distinct dataset once before the sweep starts, as a run would: a missing dataset fails now, in
    one line, not in every run; a download or a decode into the cache happens once here instead of in every
    worker at once. Every run's patch is then checked against the size its images load at, and every run folder
    against this data (`Store.check_run`). Returns the data record of each run to train or that recorded one."""
    loaded: dict[tuple, dict] = {}
    records = {}
    to_train = {cfg.run_id() for cfg in todo}
    for cfg in configs:
        if cfg.run_id() in to_train or (store.run_dir(cfg) / DATA).exists():  # else finished before data records
            key = (cfg.dataset, cfg.data_root, cfg.image_size, cfg.train_subset, cfg.test_subset)
            if key not in loaded:
                loaded[key] = data_record(cfg)
            cfg.check_image_size(loaded[key]["image_size"], f" in data_root={cfg.data_root!r}")
            records[cfg.run_id()] = loaded[key]
        store.check_run(cfg, records.get(cfg.run_id()))
    return records


def plan(
    configs: list[RunConfig],
    store: Store,
    retry_failed: bool = False,
    keys: Sequence[str] = (),
    keep_checkpoints: bool = False,
) -> Plan:
    """What a sweep of `configs` into `store` would train, its data loaded and checked; nothing is written.
    Damaged run files are read as absent (run_plan sets them aside); `keys` name the runs in progress lines."""
    configs = [cfg.with_absolute_data_root() for cfg in configs]
    check_ids(configs)
    damaged = store.find_damaged()
    todo = runs_to_train(configs, store, retry_failed)
    data = check_data(configs, todo, store)
    return Plan(store, configs, todo, data, retry_failed, list(keys), keep_checkpoints, damaged)


def train_plan(plan: Plan, launcher: Launcher) -> None:
    """Write the plan's new run files, then train the runs left to train, rebuilding summary.csv as runs finish."""
    store = plan.store
    store.prepare([cfg.recorded() for cfg in plan.configs], plan.data)
    # Again, under the lock: another sweep may have ended since the plan was made.
    todo = runs_to_train(plan.configs, store, plan.retry_failed)
    todo_ids = {cfg.run_id() for cfg in todo}
    for cfg in plan.configs:
        if cfg.run_id() in todo_ids:
            store.forget_failure(store.run_dir(cfg))
        elif not plan.keep_checkpoints:
            store.drop_checkpoint(store.run_dir(cfg))  # one left by a sweep killed just after the run finished
    store.write_summary()
    if not todo:
        return
    if not launcher.trains_here:
        from ablations.data.sources import forget_splits  # loaded by data_record's import already

        forget_splits()  # the checked splits would sit in this process's memory for the whole sweep
    progress = SweepProgress(
        {cfg.run_id(): cfg.epochs for cfg in todo},
        {cfg.run_id(): store.state(store.run_dir(cfg)).epochs for cfg in todo},
        {cfg.run_id(): run_label(cfg.to_dict(), plan.keys) for cfg in todo},
    )
    try:
        launcher.run(todo, progress, functools.partial(end_run, store, progress, plan.keep_checkpoints))
    finally:
        progress.close()
        store.write_summary()


@dataclass
class Outcome:
    """How a sweep ended: the state of each of its runs, by run id in the sweep's order."""

    states: dict[str, RunState]

    def counts(self) -> dict[str, int]:
        """How many runs have each status, in the order the statuses first occur."""
        return dict(Counter(state.status for state in self.states.values()))

    @property
    def exit_code(self) -> int:
        """0 when every run is done, 1 when some failed, diverged or are unfinished."""
        return 0 if all(state.status == DONE for state in self.states.values()) else 1


def outcome(configs: list[RunConfig], store: Store) -> Outcome:
    return Outcome({cfg.run_id(): store.state(store.run_dir(cfg)) for cfg in configs})


def run_plan(
    plan: Plan,
    launcher: Launcher,
    design: Design,
    study_text: str | None = None,
    announce: Callable[[], None] | None = None,
    run_ids: list[str] | None = None,
) -> Outcome:
    """Run a plan: hold the folder's lock (one sweep at a time), set damaged files aside, record the design (the
    sweep's `Design`, as sweep.json holds it: Store.add_design) with its runs, train, and say how it ended.
    `announce` is called once the sweep may start, so that what it prints never precedes a refusal. `run_ids`:
    the design's runs where the plan trains a part of them (a stage of seeds auto)."""
    with plan.store.lock_sweep():
        plan.store.drop_stale_temps()
        plan.store.set_aside_damaged()
        plan.store.add_design(design, run_ids or [cfg.run_id() for cfg in plan.configs], study_text)
        if announce is not None:
            announce()
        train_plan(plan, launcher)
    return outcome(plan.configs, plan.store)
