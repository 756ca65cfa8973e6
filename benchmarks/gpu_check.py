"""One command that checks the toolkit on a GPU machine in minutes and prints one table.

    python -m benchmarks.gpu_check --wheels .whl --data .device-data/cifar10-jpeg.tar.gz --out $OUT   # a GPU box
    python -m benchmarks.gpu_check --device cpu --tiny --data synthetic                              # any CPU

Stages, each timed and reported even when another fails:
  cuda tests    pytest -m cuda: no host sync in an epoch, fused AdamW on resume, compile, sweep placement, ...
  sync audit    one training epoch of the CIFAR-10 recipe under torch.cuda.set_sync_debug_mode("warn"):
                every host sync, by file:line (none expected)
  train         a 2-epoch run of the CIFAR-10 recipe (ConvMixer-256/8) with ablations.engine.train.train_run
  count         python -m convmixer.count --throughput on the device (needs fvcore: see --wheels)
  layernorm     inference images/s of norm=batch vs norm=layer under bf16 autocast and fp32, which prices
                the fp32 LayerNorm that autocast runs (the `norm` ablation's throughput column)
  sweep         python -m ablations.run: 4 runs on 2 worker slots, and which device each ran on
On a fresh GPU machine with no network this fits in 9 minutes (--budget); with --device cpu --tiny the same
code runs on a CPU in well under a minute, which is how the test suite keeps it from rotting.
Exit code 0 when every stage passed, 1 otherwise. torch, the engine and the data are imported by the stages that
use them, so that --help and a bad option answer at once.
"""

import argparse
import collections
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

from ablations.config import RunConfig
from ablations.data import CIFAR10_JPEG_ENV, dataset_label, default_cifar10_jpeg
from ablations.store import DONE
from ablations.sweep.presets import CIFAR10_RECIPE
from benchmarks.common import TIMED_PRECISIONS
from convmixer.arguments import OneLineParser, run_cli
from convmixer.config import ConvMixerConfig

REPO = Path(__file__).resolve().parents[1]

PROG = "python -m benchmarks.gpu_check"
# --tiny: the same stages with a model, data and epochs small enough for a busy 2-core CPU.
TINY = {"dim": 16, "depth": 1, "patch_size": 4, "train_subset": 256, "test_subset": 128, "batch_size": 64, "epochs": 1}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--data", help=f"CIFAR-10 tree or .tar.gz, or 'synthetic' (default: ${CIFAR10_JPEG_ENV}, else synthetic)"
    )
    parser.add_argument("--wheels", type=Path, help="install these .whl files (fvcore, submitit, ...) first, offline")
    parser.add_argument("--tiny", action="store_true", help="tiny model and data: the CPU self-test")
    parser.add_argument("--budget", type=float, default=530, help="seconds for all stages (default 530)")
    parser.add_argument("--out", type=Path, help="folder for gpu_check.json and gpu_check.txt")
    args = parser.parse_args(argv)
    from convmixer.runtime import parse_device  # torch: after --help and the other options

    try:
        args.device = parse_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    args.data = args.data or default_cifar10_jpeg() or "synthetic"
    if args.data != "synthetic" and not Path(args.data).exists():
        parser.error(f"--data {args.data!r} is not accepted: it does not exist")
    if args.wheels is not None and not list(args.wheels.glob("*.whl")):
        parser.error(f"--wheels {str(args.wheels)!r} is not accepted: no .whl files in it")
    return args


class Check:
    """The stages' shared settings, the time budget, and the table of results."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.device, self.work = args, args.device, work
        self.deadline = time.monotonic() + args.budget
        self.rows: list[dict] = []
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}

    def recipe(self) -> RunConfig:
        """The CIFAR-10 recipe on --data for 2 epochs (the tiny model, data and epochs with --tiny)."""
        data = (
            {"dataset": "synthetic"}
            if self.args.data == "synthetic"
            else {"dataset": "imagefolder", "data_root": self.args.data}
        )
        return RunConfig(**{**CIFAR10_RECIPE, **data, "epochs": 2, **(TINY if self.args.tiny else {})})

    def stage(self, name: str, limit: float, work: Callable[["Check", float], str]) -> None:
        """Run one stage with at most `limit` seconds (less if the budget is nearly spent); record its row."""
        timeout = min(limit, self.deadline - time.monotonic() - 10)
        start = time.monotonic()
        if timeout < 10:
            status, result = "skipped", "the time budget is spent"
        else:
            try:
                status, result = "ok", work(self, timeout)
            except subprocess.TimeoutExpired:
                status, result = "FAIL", f"timed out after {timeout:.0f} s"
            except Exception as error:  # one failing stage must not hide the others
                status, result = "FAIL", f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
                traceback.print_exc()
        row = {"stage": name, "status": status, "seconds": round(time.monotonic() - start, 1), "result": result}
        print(f"--- {name}: {status} in {row['seconds']} s: {result}", flush=True)
        self.rows.append(row)

    def run(self, command: list[str], timeout: float) -> subprocess.CompletedProcess:
        # --device cpu checks the CPU even on a GPU machine: hide the GPUs from the commands it starts
        env = self.env if self.device.type == "cuda" else {**self.env, "CUDA_VISIBLE_DEVICES": ""}
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        log = self.work / "logs.txt"
        with open(log, "a") as f:
            f.write(f"===== {' '.join(command)} (exit {done.returncode})\n{done.stdout}\n{done.stderr}\n")
        return done


def install_wheels(check: Check, folder: Path) -> None:
    """pip install the carried wheels into a private folder (no network, no dependencies resolved)."""
    site = check.work / "site"
    wheels = [str(path) for path in sorted(folder.glob("*.whl"))]
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site), *wheels]
    subprocess.run(pip, check=True, capture_output=True, text=True)
    sys.path.insert(0, str(site))
    check.env["PYTHONPATH"] = os.pathsep.join([str(site), check.env["PYTHONPATH"]])


def cuda_tests(check: Check, timeout: float) -> str:
    # Only the files that hold CUDA-marked tests: collecting the rest would need packages a GPU image may lack
    # (nbclient for the notebook tests) and time, for tests that -m cuda deselects anyway.
    files = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "tests").glob("test_*.py"))
        if "pytest.mark.cuda" in path.read_text()
    ]
    done = check.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "-rfEs", *files], timeout
    )
    summary = (
        re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|error|deselected).*?)\s*=*$", done.stdout, re.M)
        or ["no summary"]
    )[-1]
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, re.M)
    if done.returncode != 0:
        raise RuntimeError(f"{summary}; {', '.join(failed) or done.stderr[-300:]}")
    return summary


# The text of the warning c10::cuda::warn_or_error_on_sync() raises for each sync under set_sync_debug_mode("warn");
# set_sync_debug_mode itself warns that it "is a prototype feature", which is not a sync.
SYNC_WARNING = "called a synchronizing CUDA operation"


def sync_sites(caught: list[warnings.WarningMessage]) -> collections.Counter:
    """The host syncs among the caught warnings, counted by file:line (relative to the repository)."""
    return collections.Counter(
        f"{os.path.relpath(warning.filename, REPO)}:{warning.lineno}"
        for warning in caught
        if SYNC_WARNING in str(warning.message)
    )


def sync_audit(check: Check, timeout: float) -> str:
    """Train one epoch after a warm-up one and count every host sync CUDA's debug mode reports, by source line."""
    import torch

    from ablations.data.loaders import build_data
    from ablations.engine.modes import run_dtype
    from ablations.engine.train import Trainer
    from convmixer.runtime import synchronize

    cfg = check.recipe()
    device = check.device
    data = build_data(cfg, device)
    trainer = Trainer(cfg, cfg.model_config(data.num_classes).build(), device, run_dtype(cfg.precision, device))
    warm = data.train.epoch(0)
    for _ in range(3):
        trainer.train_step(*next(warm), 1e-3)
    synchronize(device)
    steps = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            for images, targets in data.train.epoch(1):
                trainer.train_step(images, targets, 1e-3)
                steps += 1
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode(0)
    synchronize(device)
    sites = sync_sites(caught)
    if device.type != "cuda":
        return f"{steps} steps ran; host syncs are a CUDA notion, not audited on {device.type}"
    if sites:
        raise RuntimeError(f"host syncs in {steps} steps: {dict(sites)}")
    return f"0 host syncs in {steps} train steps ({cfg.randaug_n} RandAugment ops/image, {trainer.dtype})"


def train_recipe(check: Check, timeout: float) -> str:
    from ablations.engine.train import train_run

    cfg = check.recipe()
    history: list[dict] = []
    metrics = train_run(cfg, None, device=check.device, log=lambda line: None, on_epoch=history.append)
    if metrics["status"] != DONE:
        raise RuntimeError(f"run {metrics['status']}: {metrics['reason']}")
    last = history[-1]
    return (
        f"{cfg.model_name}, {cfg.epochs} epochs on {data_label(check)}: test acc "
        f"{metrics['test_acc']:.4f} (one seed), last epoch {last['epoch_time_s']:.2f} s, "
        f"{last['train_images_per_s']:.0f} train img/s, {metrics['precision_used']}, "
        f"peak {metrics['peak_memory_mb']:.0f} MB"
    )


def data_label(check: Check) -> str:
    cfg = check.recipe()
    return dataset_label(cfg.dataset, cfg.data_root)


def count_throughput(check: Check, timeout: float) -> str:
    tiny_model = ["--dim", "16", "--depth", "1", "--patch-size", "4"]
    model = tiny_model if check.args.tiny else ["--model", "convmixer_256_8_cifar10"]
    batch, dtype = ("8", "fp32") if check.args.tiny else ("512", "bf16" if check.device.type == "cuda" else "fp32")
    command = [sys.executable, "-m", "convmixer.count", *model, "--image-size", "32", "--throughput", "--json"]
    command += ["--device", str(check.device), "--batch-size", batch, "--dtype", dtype, "--channels-last"]
    command += ["--repeats", "3" if check.args.tiny else "20"]
    done = check.run(command, timeout)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    report = json.loads(done.stdout)
    speed = report["throughput"]
    return (
        f"{report['macs'] / 1e6:.1f} M MACs/img, inference {speed['images_per_s']:.0f} img/s at batch {batch} "
        f"{dtype} channels_last, peak {speed['peak_memory_mb']:.0f} MB"
    )


def layernorm_cost(check: Check, timeout: float) -> str:
    """Inference img/s of the batch- and layer-norm models, under bf16 autocast and in fp32 (channels_last)."""
    from convmixer.throughput import measure_throughput

    dim, depth, patch, batch = (16, 1, 4, 8) if check.args.tiny else (256, 8, 2, 512)
    rates = {}
    for norm in ("batch", "layer"):
        for dtype in TIMED_PRECISIONS:
            model = ConvMixerConfig(dim, depth, 5, patch, norm=norm).build()
            rates[norm, dtype] = measure_throughput(
                model, 32, batch, check.device, dtype=dtype, channels_last=True, repeats=3 if check.args.tiny else 20
            )["images_per_s"]
    return "; ".join(
        f"{dtype}: batch {rates['batch', dtype]:.0f}, layer {rates['layer', dtype]:.0f} img/s "
        f"(layer/batch {rates['layer', dtype] / rates['batch', dtype]:.2f})"
        for dtype in TIMED_PRECISIONS
    )


def sweep(check: Check, timeout: float) -> str:
    """4 runs on 2 worker slots: one GPU twice, or two GPUs once each (a CPU twice with --device cpu)."""
    import torch

    gpus = torch.cuda.device_count() if check.device.type == "cuda" else 0
    devices, jobs = ("0,1", "1") if gpus >= 2 else (check.device.type, "2")
    keys = TINY if check.args.tiny else {"train_subset": 2000, "test_subset": 500, "epochs": 2}
    out = check.work / "sweep"
    sets = ",".join(f"{k}={v}" for k, v in keys.items())
    command = [sys.executable, "-m", "ablations.run", "--preset", "smoke", "--grid", "kernel_size=3,5,7,9"]
    command += ["--set", sets, "--devices", devices, "--jobs-per-device", jobs, "--out", str(out)]
    done = check.run(command, timeout)
    statuses = [json.loads(p.read_text())["status"] for p in sorted(out.glob("runs/*/metrics.json"))]
    starts = [
        re.search(r"start on (\S+) \(host \S+, pid (\d+)\)", log.read_text()) for log in out.glob("runs/*/log.txt")
    ]
    workers = sorted({match.groups() for match in starts if match})
    if done.returncode != 0 or statuses != [DONE] * 4:
        raise RuntimeError(f"exit {done.returncode}, statuses {statuses}: {done.stderr.strip()[-300:]}")
    return f"4 runs done on devices {sorted({d for d, _ in workers})} by {len(workers)} worker processes"


def table(rows: list[dict]) -> str:
    lines = [f"{'stage':<12} {'status':<7} {'seconds':>7}  result"]
    lines += [f"{r['stage']:<12} {r['status']:<7} {r['seconds']:>7}  {r['result']}" for r in rows]
    return "\n".join(lines)


def environment(check: Check) -> str:
    import torch

    from convmixer.runtime import device_name

    device = check.device
    facts = [f"torch {torch.__version__}", device_name(device)]
    if device.type == "cuda":
        facts += [
            f"CUDA {torch.version.cuda}",
            f"cuDNN {torch.backends.cudnn.version()}",
            f"{torch.cuda.device_count()} GPU(s)",
        ]
    for package in ("fvcore", "submitit"):
        facts.append(f"{package} {'present' if importlib.util.find_spec(package) else 'MISSING'}")
    return ", ".join(facts) + f"; data: {data_label(check)}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        check = Check(args, Path(folder))
        if args.wheels is not None:
            install_wheels(check, args.wheels)
        header = environment(check)
        print(header, flush=True)
        check.stage("cuda tests", 270, cuda_tests)
        check.stage("sync audit", 60, sync_audit)
        check.stage("train", 150, train_recipe)
        check.stage("count", 60, count_throughput)
        check.stage("layernorm", 60, layernorm_cost)
        check.stage("sweep", 150, sweep)
        report = f"GPU CHECK  {header}\n{table(check.rows)}"
        print("\n" + report)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "gpu_check.txt").write_text(report + "\n")
            (args.out / "gpu_check.json").write_text(
                json.dumps({"environment": header, "stages": check.rows}, indent=1)
            )
            logs = check.work / "logs.txt"
            if logs.exists():
                (args.out / "gpu_check_logs.txt").write_text(logs.read_text())
    return 0 if all(row["status"] == "ok" for row in check.rows) else 1


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG)


if __name__ == "__main__":
    sys.exit(cli())
