"""What `python -m ablations.run` shows before it trains: --help with the active preset's values, --dry-run."""

import contextlib
import io
import json

import pytest

from ablations.config import RunConfig
from ablations.run import cli


def run(argv: list[str]) -> tuple[int, str]:
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        try:
            code = cli(argv)
        except SystemExit as exit:  # --help
            code = exit.code
    return code, stdout.getvalue()


@pytest.mark.parametrize("preset, dim, lr", [([], "64", "0.02"), (["--preset", "cifar10"], "256", "0.05")])
def test_help_shows_the_active_presets_values_and_what_each_key_accepts(preset, dim, lr):
    code, text = run([*preset, "--help"])
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in text.split("keys,")[1].splitlines()[1:] if line}
    assert code == 0
    assert rows["dim"] == [dim, "an integer >= 1"] and rows["lr"] == [lr, "a number in (0, 1e+06]"]
    assert rows["norm"] == ["batch", "choose one of batch, layer"]


def test_dry_run_checks_the_data_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli(["--set", f"dataset=imagefolder,data_root={tmp_path / 'none'}", "--dry-run", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and "does not exist" in captured.err and not out.exists()
    first_line = "sweep out: 1 run of preset smoke: ConvMixer-64/1 on ImageFolder none, varying nothing"
    assert captured.out.splitlines() == [first_line]


def test_dry_run_can_print_each_runs_full_config(tmp_path):
    code, text = run(["--grid", "kernel_size=3,7", "--dry-run", "--show-config", "--out", str(tmp_path / "out")])
    lines = [line for line in text.splitlines() if "{" in line]
    assert code == 0 and len(lines) == 2
    run_id, config = lines[1].split(" ", 1)
    assert RunConfig(**json.loads(config)).run_id() == run_id and json.loads(config)["kernel_size"] == 7
    assert not (tmp_path / "out").exists()
