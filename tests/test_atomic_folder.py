"""Whole-folder writes (ablations.atomic), as the report and the exports use them: a reader sees the old folder or
the new one, never a mix; a kill between the swap's two renames is put right by the next write; a failed write
leaves the folder as it was."""

import errno
from pathlib import Path

import pytest

from ablations import atomic
from analysis.build import FIGURE_PATTERNS


def test_a_write_failure_without_an_os_error_behind_it_is_named():
    try:
        raise TypeError("bad figure")
    except TypeError as error:
        assert atomic.failure(error) == "TypeError: bad figure"


def folder(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def contents(path: Path) -> dict[str, str]:
    return {file.name: file.read_text() for file in path.iterdir()}


OLD = {"report.md": "old", "accuracy_vs_dim.png": "old figure", "my-notes.txt": "mine"}
NEW = {"report.md": "new", "accuracy_vs_kernel_size.png": "new figure"}


def test_publish_swaps_the_whole_folder_keeping_the_users_files_and_no_stale_figure(tmp_path):
    target = folder(tmp_path / "report", OLD)
    staging = folder(tmp_path / ".report.abcd.tmp", NEW)
    atomic.keep_files(target, staging, FIGURE_PATTERNS)
    atomic.publish_folder(staging, target)
    assert contents(target) == NEW | {"my-notes.txt": "mine"}
    assert [path.name for path in tmp_path.iterdir()] == ["report"]


def test_a_report_killed_between_the_two_renames_is_put_back_by_the_next_one(tmp_path, monkeypatch):
    """publish renamed file by file: a kill after the first rename left new figures beside the old report.md."""
    target = folder(tmp_path / "report", OLD)
    staging = folder(tmp_path / ".report.abcd.tmp", NEW)
    replace = atomic.os.replace

    def killed(*args):
        raise SystemExit(137)  # as a SIGKILL: nothing after it runs

    def killed_after_the_first(source, destination):
        replace(source, destination)
        monkeypatch.setattr(atomic.os, "replace", killed)

    monkeypatch.setattr(atomic.os, "replace", killed_after_the_first)
    with pytest.raises(SystemExit):
        atomic.publish_folder(staging, target)
    monkeypatch.setattr(atomic.os, "replace", replace)
    (aside,) = tmp_path.glob(".report.old-*")
    assert not target.exists() and contents(aside) == OLD and contents(staging) == NEW  # no folder holds a mix
    atomic.recover_folder(target)
    assert contents(target) == OLD and [path.name for path in tmp_path.iterdir()] == ["report"]


def test_a_swap_that_fails_halfway_puts_the_old_report_back(tmp_path, monkeypatch):
    target = folder(tmp_path / "report", OLD)
    staging = folder(tmp_path / ".report.abcd.tmp", NEW)
    replace, calls = atomic.os.replace, []

    def second_fails(source, destination):
        calls.append(source)
        if len(calls) == 2:
            raise OSError(errno.EBUSY, "Device or resource busy")
        replace(source, destination)

    monkeypatch.setattr(atomic.os, "replace", second_fails)
    with pytest.raises(OSError):
        atomic.publish_folder(staging, target)
    assert contents(target) == OLD and contents(staging) == NEW  # the caller removes the staging folder
    assert sorted(path.name for path in tmp_path.iterdir()) == [".report.abcd.tmp", "report"]


def test_the_next_report_removes_staging_folders_and_set_aside_reports_of_earlier_kills(tmp_path):
    target = folder(tmp_path / "report", OLD)
    folder(tmp_path / ".report.k1.tmp", {"table.md": "half"})
    folder(tmp_path / ".report.old-k2", OLD)  # killed after the swap, before the old one was removed
    folder(tmp_path / ".other.k3.tmp", {})  # another report folder's: not this one's to clear
    atomic.recover_folder(target)
    assert contents(target) == OLD and sorted(path.name for path in tmp_path.iterdir()) == [".other.k3.tmp", "report"]


def test_a_failed_folder_write_leaves_the_folder_as_it_was_and_no_staging_behind(tmp_path):
    target = folder(tmp_path / "export", OLD)

    def half_then_full_disk(staging: Path) -> None:
        (staging / "report.md").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as raised:
        atomic.write_folder(target, half_then_full_disk)
    assert atomic.failure(raised.value) == "No space left on device"
    assert contents(target) == OLD and [path.name for path in tmp_path.iterdir()] == ["export"]


def test_a_folder_write_replaces_the_whole_folder(tmp_path):
    target = folder(tmp_path / "export", OLD)
    atomic.write_folder(target, lambda staging: (staging / "report.md").write_text("new"))
    assert contents(target) == {"report.md": "new"} and [path.name for path in tmp_path.iterdir()] == ["export"]
