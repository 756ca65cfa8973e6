"""The local launcher's worker slots: spread over GPUs before doubling up (fake device lists, no GPU needed)."""

import pytest

from ablations.config import RunConfig
from ablations.store import Store
from ablations.sweep.local import LocalLauncher, device_slots


@pytest.mark.parametrize(
    "devices, jobs, slots",
    [
        (["cuda:0", "cuda:1"], 2, ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]),
        (["cuda:0", "cuda:1", "cuda:2"], 1, ["cuda:0", "cuda:1", "cuda:2"]),
        (["cuda:3", "cuda:1"], 3, ["cuda:3", "cuda:1"] * 3),
        (["cpu"], 2, ["cpu", "cpu"]),
    ],
)
def test_slots_interleave_devices(devices, jobs, slots):
    assert device_slots(devices, jobs) == [(device,) for device in slots]


def test_n_runs_on_n_gpus_start_one_per_gpu(tmp_path, monkeypatch):
    started = []

    class Started(Exception):
        pass

    def fake_start(self, device):
        started.append(device)
        if len(started) == 2:
            raise Started  # both workers are placed: stop before anything would run on a GPU

    monkeypatch.setattr(LocalLauncher, "start_worker", fake_start)
    configs = [RunConfig(kernel_size=3), RunConfig(kernel_size=5)]
    launcher = LocalLauncher(Store(tmp_path), ["cuda:0", "cuda:1"], jobs_per_device=2)
    with pytest.raises(Started):
        launcher.run(configs, progress=None, end_run=None)
    assert started == [("cuda:0",), ("cuda:1",)]
