"""What a researcher watches during a sweep: one overall tqdm bar, one bar per active run, a line per event.

The overall bar counts epochs rather than runs, so its ETA is useful long before the first run finishes;
its postfix counts runs done, failed, running and left, and under SLURM the jobs' squeue states. Off a
terminal (a SLURM log, `> file`) the bars are off and every run start, epoch and end is one plain line instead.
"""

import sys

from tqdm import tqdm

from ablations.store import DONE, FINISHED


def run_label(values: dict, keys: list[str]) -> str:
    return " ".join(f"{key}={values[key]}" for key in keys)


class SweepProgress:
    def __init__(self, epochs: dict[str, int], done_epochs: dict[str, int], labels: dict[str, str]) -> None:
        """epochs: each run's total epochs; done_epochs: those already done (resumed runs); labels: what varies."""
        self.epochs, self.labels = epochs, labels
        self.interactive = sys.stderr.isatty()
        self.overall = tqdm(
            total=sum(epochs.values()), initial=sum(done_epochs.values()), desc="sweep", unit="epoch",
            disable=not self.interactive, dynamic_ncols=True,
        )  # fmt: skip
        self.done_epochs = dict(done_epochs)
        self.run_bars: dict[str, tqdm] = {}
        self.slots: dict[str, int] = {}  # terminal line of each active run's bar, below the overall one
        self.counts = {**dict.fromkeys(FINISHED, 0), "running": 0, "left": len(epochs)}
        self.queue_states = ""  # squeue's view of the jobs, for the SLURM launcher
        self.update_counts()

    def name(self, run_id: str) -> str:
        return f"{run_id} {self.labels[run_id]}".rstrip()

    def write(self, line: str) -> None:
        tqdm.write(line)
        sys.stdout.flush()

    def update_counts(self, **changes: int) -> None:
        for key, change in changes.items():
            self.counts[key] += change
        counts = ", ".join(f"{n} {key}" for key, n in self.counts.items())
        self.overall.set_postfix_str(counts + (f"; squeue: {self.queue_states}" if self.queue_states else ""))

    def queue(self, states: str) -> None:
        """Show how many of the sweep's SLURM jobs are in each state, e.g. `2 RUNNING, 3 PENDING (Resources)`."""
        if states != self.queue_states:
            self.queue_states = states
            self.update_counts()
            if not self.interactive:
                self.write(f"squeue   {states}")

    def started(self, run_id: str, device: str) -> None:
        self.update_counts(running=1, left=-1)
        done = self.done_epochs[run_id]  # epochs a checkpoint holds: the run resumes after them
        start = f"resume   {self.name(run_id)} after epoch {done}" if done else f"start    {self.name(run_id)}"
        self.write(f"{start} on {device}")
        self.slots[run_id] = min(set(range(1, len(self.slots) + 2)) - set(self.slots.values()))
        self.run_bars[run_id] = tqdm(
            total=self.epochs[run_id], initial=self.done_epochs[run_id], desc=self.name(run_id),
            unit="epoch", position=self.slots[run_id], leave=False, disable=not self.interactive, dynamic_ncols=True,
        )  # fmt: skip

    def epoch(self, run_id: str, record: dict) -> None:
        self.done_epochs[run_id] += 1
        self.overall.update(1)
        bar = self.run_bars[run_id]
        bar.update(1)
        bar.set_postfix(test_acc=f"{record['test_acc']:.4f}", train_loss=f"{record['train_loss']:.4f}")
        if not self.interactive:
            self.write(
                f"epoch    {run_id} {record['epoch']}/{self.epochs[run_id]} "
                f"test_acc {record['test_acc']:.4f} train_loss {record['train_loss']:.4f}"
            )

    def finished(self, run_id: str, metrics: dict) -> None:
        # A diverged or failed run's remaining epochs will never run: count them as gone, for the ETA.
        self.overall.update(self.epochs[run_id] - self.done_epochs[run_id])
        self.run_bars.pop(run_id).close()
        del self.slots[run_id]
        self.update_counts(running=-1, **{metrics["status"]: 1})
        result = f"test_acc {metrics['test_acc']:.4f}" if metrics["status"] == DONE else metrics["reason"]
        self.write(f"{metrics['status']:<8} {self.name(run_id)}: {result}")

    def close(self) -> None:
        for bar in self.run_bars.values():
            bar.close()
        self.overall.close()
