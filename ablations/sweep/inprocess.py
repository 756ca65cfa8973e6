"""The in-process launcher: each run of the plan trained in this process, one after the other.

It is `python -m ablations.train`'s launcher (rank 0 of the processes torchrun started, or the one process), a
notebook's (no worker to spawn, so no `if __name__ == "__main__":` guard), and the tests'. It ends each run as every
launcher does, through the plan's `EndRun`.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ablations.config import RunConfig
from ablations.store import Store
from ablations.sweep.execute import EndRun, execute_run
from ablations.sweep.progress import SweepProgress

if TYPE_CHECKING:
    from ablations.engine.distributed import Ranks


@dataclass
class InProcessLauncher:
    """run_plan's launcher that trains in this process, on `device`; `ranks`: this process's place, rank 0 of a run
    on several processes (torchrun started the others); None: the run's one process."""

    trains_here: ClassVar[bool] = True
    store: Store
    device: str = "cpu"
    ranks: "Ranks | None" = None

    def run(self, configs: list[RunConfig], progress: SweepProgress, end_run: EndRun) -> dict[str, dict]:
        results = {}
        for cfg in configs:
            run_id = cfg.run_id()
            progress.started(run_id, self.device)
            on_epoch = lambda record, run_id=run_id: progress.epoch(run_id, record)  # noqa: E731
            execute_run(cfg, self.store, self.device, on_epoch=on_epoch, ranks=self.ranks)
            results[run_id] = end_run(run_id, lambda: "the run ended unrecorded", self.device)
        return results
