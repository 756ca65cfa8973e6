"""The engine's choice of layout and depthwise conv ("auto"): the fewest seconds wins, a tie keeps the old default,
the CPU path never changes, and the seconds come from a table on disk, measured once per device and shape, read by
every later run, and remade (never a crash) when the file is damaged."""

import json

import pytest
import torch

from ablations.engine import setup
from ablations.engine.setup import TABLE, Setup, Workload, candidates, fastest_setup, time_setup
from convmixer.runtime import cpu_name

CUDA = torch.device("cuda")
REAL_DEVICE_FACTS = setup.device_facts
SECONDS = {
    Setup(True, "torch"): 3.0,
    Setup(True, "triton"): 2.0,
    Setup(False, "torch"): 1.0,
    Setup(False, "triton"): 4.0,
}


@pytest.fixture(autouse=True)
def a_named_gpu(monkeypatch):
    """A GPU's facts without a GPU: the tests time CUDA workloads with fake timers."""
    monkeypatch.setattr(setup, "device_facts", lambda device: {"device": "NVIDIA H200", "torch": "2.11.0"})


@pytest.fixture
def table(tmp_path):
    return tmp_path / TABLE


def fake_timer(seconds: dict[Setup, float]):
    """A timer that returns the given seconds per setup and records what it was asked to time."""
    timed = []

    def timer(setup: Setup, work: Workload) -> float:
        timed.append((setup, work.kernel_size))
        return seconds[setup]

    return timer, timed


def workload(kernel_size: int, batch: int = 512) -> Workload:
    return Workload(CUDA, torch.bfloat16, dim=256, kernel_size=kernel_size, size=16, batch=batch)


@pytest.mark.parametrize("channels_last", [True, False, "auto"])
@pytest.mark.parametrize("impl", ["torch", "triton", "auto"])
def test_on_a_cpu_every_setting_runs_as_before_torch_and_channels_last_unless_told_false(channels_last, impl):
    options = candidates(channels_last, impl, torch.device("cpu"))
    assert options == (Setup(channels_last is not False, "torch"),)


def test_auto_keeps_the_fastest_and_writes_the_table_once_which_the_next_call_reads(table):
    timer, timed = fake_timer(SECONDS)
    assert fastest_setup("auto", "auto", workload(15), timer, table) == Setup(False, "torch")
    assert len(timed) == 4
    rows = json.loads(table.read_text())["rows"]
    assert {(row["channels_last"], row["impl"], row["seconds"]) for row in rows} == {
        (s.channels_last, s.impl, seconds) for s, seconds in SECONDS.items()
    }
    assert {row["kernel_size"] for row in rows} == {15} and {row["device"] for row in rows} == {"NVIDIA H200"}
    written = table.stat().st_mtime_ns
    assert fastest_setup("auto", "auto", workload(15), timer, table) == Setup(False, "torch")
    assert len(timed) == 4 and table.stat().st_mtime_ns == written  # read, not timed or written again


def test_the_table_is_what_decides_so_a_second_process_uses_the_first_ones_timings(table):
    timer, _ = fake_timer(SECONDS)
    fastest_setup("auto", "auto", workload(9), timer, table)
    never, timed = fake_timer(dict.fromkeys(SECONDS, 100.0))  # a later run whose timings would all differ
    assert fastest_setup("auto", "auto", workload(9), never, table) == Setup(False, "torch") and timed == []


def test_another_shape_or_device_or_torch_measures_again_and_keeps_the_other_rows(table, monkeypatch):
    timer, timed = fake_timer(SECONDS)
    fastest_setup("auto", "auto", workload(9), timer, table)
    fastest_setup("auto", "auto", workload(15), timer, table)
    fastest_setup("auto", "auto", workload(9, batch=256), timer, table)
    assert [k for _, k in timed] == [9] * 4 + [15] * 4 + [9] * 4
    monkeypatch.setattr(setup, "device_facts", lambda device: {"device": "NVIDIA H100", "torch": "2.11.0"})
    fastest_setup("auto", "auto", workload(9), timer, table)
    monkeypatch.setattr(setup, "device_facts", lambda device: {"device": "NVIDIA H100", "torch": "2.12.0"})
    fastest_setup("auto", "auto", workload(9), timer, table)
    assert len(timed) == 20 and len(json.loads(table.read_text())["rows"]) == 20


def test_auto_times_only_what_is_left_open_and_a_fixed_setting_times_nothing(table):
    seconds = {Setup(True, "torch"): 2.0, Setup(True, "triton"): 1.0, Setup(False, "torch"): 0.5}
    timer, timed = fake_timer(seconds)
    assert fastest_setup(True, "auto", workload(7), timer, table) == Setup(True, "triton")
    assert {setup for setup, _ in timed} == {Setup(True, "torch"), Setup(True, "triton")}
    assert fastest_setup(False, "torch", workload(7), timer, table) == Setup(False, "torch")
    assert len(timed) == 2


def test_a_row_the_table_lacks_is_timed_alone_and_added(table):
    timer, timed = fake_timer(SECONDS)
    fastest_setup(True, "auto", workload(5), timer, table)  # the channels_last rows
    assert fastest_setup("auto", "auto", workload(5), timer, table) == Setup(False, "torch")
    assert [setup.channels_last for setup, _ in timed] == [True, True, False, False]
    assert len(json.loads(table.read_text())["rows"]) == 4


@pytest.mark.parametrize(
    "damage",
    [
        "",
        "{not json",
        "[1, 2]",
        '{"format": 1}',
        '{"format": 1, "rows": 7}',
        '{"format": 99, "rows": []}',
        '{"format": 1, "rows": [{"seconds": "fast"}, {"seconds": -1}, 3]}',
    ],
)
def test_a_damaged_table_is_measured_again_and_rewritten_without_a_crash(table, damage):
    table.write_text(damage)
    timer, timed = fake_timer(SECONDS)
    assert fastest_setup("auto", "auto", workload(3), timer, table) == Setup(False, "torch")
    assert len(timed) == 4 and len(json.loads(table.read_text())["rows"]) == 4


def test_a_table_that_cannot_be_written_costs_a_timing_not_the_run(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    timer, timed = fake_timer(SECONDS)
    assert fastest_setup("auto", "auto", workload(3), timer, blocked / TABLE) == Setup(False, "torch")
    assert fastest_setup("auto", "auto", workload(3), timer, blocked / TABLE) == Setup(False, "torch")
    assert len(timed) == 8


def test_a_change_of_the_triton_kernels_source_measures_triton_again(table, tmp_path, monkeypatch):
    sources = tmp_path / "convmixer"
    sources.mkdir()
    (sources / "depthwise_kernels.py").write_text("# the first kernels\n")
    monkeypatch.setattr(setup, "DEPTHWISE_SOURCES", sources)
    timer, timed = fake_timer(SECONDS)
    fastest_setup(True, "auto", workload(5), timer, table)
    (sources / "depthwise_kernels.py").write_text("# faster kernels\n")
    fastest_setup(True, "auto", workload(5), timer, table)
    assert timed[2:] == [(Setup(True, "triton"), 5)]  # cuDNN's row still holds


def test_the_default_table_lives_in_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVMIXER_CACHE", str(tmp_path))
    timer, _ = fake_timer(SECONDS)
    fastest_setup("auto", "torch", workload(3), timer)
    assert len(json.loads((tmp_path / TABLE).read_text())["rows"]) == 2


def test_timing_a_setup_never_shifts_the_random_numbers_of_the_run_that_asked():
    work = Workload(torch.device("cpu"), None, dim=4, kernel_size=3, size=4, batch=2)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert time_setup(Setup(True, "torch"), work) > 0
    assert torch.equal(torch.rand(3), expected)


def test_a_tie_keeps_the_setup_runs_had_before_auto(table):
    timer, _ = fake_timer(dict.fromkeys([Setup(True, "torch"), Setup(False, "torch")], 1.0))
    assert fastest_setup("auto", "torch", workload(3), timer, table) == Setup(True, "torch")


def test_a_row_names_the_machine_and_the_versions_it_was_timed_with():
    facts = REAL_DEVICE_FACTS(torch.device("cpu"))
    assert facts == {"device": cpu_name(), "torch": torch.__version__}
    row = setup.table_row(Setup(False, "torch"), workload(9), facts)
    assert row == {
        "device": cpu_name(),
        "torch": torch.__version__,
        "dtype": "bfloat16",
        "tf32": None,
        "dim": 256,
        "kernel_size": 9,
        "size": 16,
        "batch": 512,
        "channels_last": False,
        "impl": "torch",
        "impl_version": "torch",
    }


def test_a_float32_timing_is_keyed_by_whether_its_convs_may_use_tf32(table):
    timer, timed = fake_timer(SECONDS)
    work = Workload(CUDA, None, dim=256, kernel_size=5, size=16, batch=512)
    saved = torch.backends.cudnn.allow_tf32
    try:
        for tf32 in (True, False, True):
            torch.backends.cudnn.allow_tf32 = tf32
            fastest_setup("auto", "torch", work, timer, table)
    finally:
        torch.backends.cudnn.allow_tf32 = saved
    assert len(timed) == 4 and {row["tf32"] for row in json.loads(table.read_text())["rows"]} == {True, False}
