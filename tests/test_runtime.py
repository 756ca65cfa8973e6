"""Runtime helpers (devices, precision, CUDA flags, timing, memory, optional packages) and training without
fvcore/submitit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.backends import cudnn

from ablations.config import RunConfig
from convmixer import runtime
from convmixer.arguments import MissingPackage, require
from convmixer.counting import closed_form
from convmixer.runtime import autocast_dtype, cuda_math_flags, parse_device, step_seconds

OPTIONAL = ("fvcore", "submitit")
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_step_seconds_times_each_call_after_the_untimed_warm_up(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    calls = []
    x = torch.ones(64, 64, device=device)
    seconds = step_seconds(lambda: calls.append(x @ x), torch.device(device), warmup=2, repeats=3)
    assert len(calls) == 5 and len(seconds) == 3 and all(s > 0 for s in seconds)


def test_device_names():
    assert parse_device("cpu") == torch.device("cpu")
    assert parse_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cuda:x", "mps"):
        with pytest.raises(ValueError, match=f"device='{bad}' is not accepted"):
            parse_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            parse_device("cuda:0")


def test_precision_table():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert (autocast_dtype("auto", cpu), autocast_dtype("fp32", cuda)) == (None, None)
    assert (autocast_dtype("auto", cuda), autocast_dtype("fp16", cuda)) == (torch.bfloat16, torch.float16)
    with pytest.raises(ValueError, match="precision='fp16' is not accepted on cpu"):
        autocast_dtype("fp16", cpu)
    with pytest.raises(ValueError, match="precision='fp8' is not accepted"):
        autocast_dtype("fp8", cpu)


def test_cuda_math_flags_are_restored_even_after_an_error():
    before = (cudnn.benchmark, cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    with pytest.raises(RuntimeError), cuda_math_flags(benchmark=not before[0], tf32=not before[1]):
        assert (cudnn.benchmark, cudnn.allow_tf32) == (not before[0], not before[1])
        assert torch.backends.cuda.matmul.allow_tf32 is False
        raise RuntimeError
    assert (cudnn.benchmark, cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_peak_memory_of_this_process_is_its_resident_set():
    assert 10 < runtime.peak_memory_mb(torch.device("cpu")) < 1e6  # megabytes, not KiB or bytes


def test_a_missing_optional_package_is_one_line_saying_how_to_install_it():
    with pytest.raises(MissingPackage, match=r"^no_such_pkg is not installed; .*pip install 'convmixer-toolkit\[x\]'"):
        require("no_such_pkg.sub", "x")
    assert require("json", "x") is json


def hide_packages(folder: Path) -> dict:
    """An environment in which importing any of OPTIONAL fails as if it were not installed (children included)."""
    for name in OPTIONAL:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f"raise ModuleNotFoundError({name!r}, name={name!r})\n")
    path = os.pathsep.join([str(folder), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


@pytest.mark.slow
def test_a_sweep_trains_and_reports_counts_without_fvcore_and_submitit(tmp_path, repo_root):
    env = hide_packages(tmp_path / "hidden")
    keys = "dataset=synthetic,epochs=1,dim=8,depth=1,patch_size=4,train_subset=64,test_subset=32,batch_size=32"
    command = [sys.executable, "-m", "ablations.run", "--set", keys, "--devices", "cpu", "--out", str(tmp_path / "s")]
    done = subprocess.run(command, cwd=repo_root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (metrics_path,) = (tmp_path / "s").glob("runs/*/metrics.json")
    metrics = json.loads(metrics_path.read_text())
    expected = closed_form(RunConfig(dim=8, depth=1, patch_size=4).model_config(10), 32)
    assert (metrics["status"], metrics["params"], metrics["macs"]) == ("done", expected.params, expected.macs)
    counted = subprocess.run(
        [sys.executable, "-m", "convmixer.count", "--model", "convmixer_256_8_cifar10", "--image-size", "32"],
        cwd=repo_root, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert counted.returncode == 2 and counted.stdout == ""
    assert "fvcore is not installed" in counted.stderr and "pip install" in counted.stderr
    assert "Traceback" not in counted.stderr


def test_a_gpu_run_records_its_nvidia_driver_and_a_cpu_run_none(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\n[ "$3" = "--id=1" ] && echo "580.159"\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert runtime.gpu_driver(torch.device("cuda:1")) == "580.159"
    assert runtime.gpu_driver(torch.device("cuda:0")) is None  # nvidia-smi printed nothing
    assert runtime.gpu_driver(torch.device("cpu")) is None
