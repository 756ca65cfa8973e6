"""`python -m convmixer.check`: passes on the real converter, reports even kernels as a different function,
and fails when the modular model gets even one wrong weight."""

import subprocess
import sys

import pytest
import torch

from convmixer import check
from convmixer.interop import StateDict, tweet_to_modular


def test_quick_check_passes_and_shows_even_kernels_differ(capsys: pytest.CaptureFixture[str]) -> None:
    assert check.main(["--quick", "--dtype", "both", "--seed", "3"]) == 0
    output = capsys.readouterr().out
    assert "tolerance: float64 1e-10, float32 1e-04" in output
    even_rows = [line for line in output.splitlines() if line.startswith("8/2 k4 p2")]
    assert len(even_rows) == 2  # one per dtype
    assert all(
        "DIFFERS not the same function: tweet fails with RuntimeError: The size of tensor" in row for row in even_rows
    )
    assert "equals the tweet's conv with the first row and column dropped" in " ".join(output.split())
    assert f"{2 * (len(check.QUICK_CASES) - 1)} passed, 0 failed" in output
    assert "convmixer_1536_20 51.63M" in " ".join(output.split())


def test_even_kernel_modular_conv_is_the_tweets_conv_without_its_first_row_and_column() -> None:
    row = check.check_case(check.Case(6, 1, 4, 1, 7), torch.float64, seed=0)
    assert row.status == "DIFFERS"
    assert row.crop_first <= check.TOLERANCES["float64"]  # rounding only: PyTorch pads, then convolves unpadded
    assert row.crop_last > 0.01


def test_even_kernel_at_depth_zero_is_the_same_function() -> None:
    row = check.check_case(check.Case(6, 0, 4, 2, 8), torch.float32, seed=0)
    assert row.status == "PASS"
    assert set(row.differences) == set(check.COLUMNS)


def with_one_weight_perturbed(key: str) -> check.Converter:
    def convert(state_dict: StateDict) -> StateDict:
        converted = dict(tweet_to_modular(state_dict))
        converted[key] = converted[key].clone()
        converted[key].view(-1)[0] += 1e-3
        return converted

    return convert


@pytest.mark.parametrize("key", ["head.fc.weight", "stem.norm.running_var"])
def test_one_perturbed_weight_fails_the_check(key: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert check.main(["--quick", "--dtype", "float32"], convert=with_one_weight_perturbed(key)) == 1
    assert "FAIL" in capsys.readouterr().out


def test_swapped_norms_fail_in_every_column() -> None:
    def swap_norms_of_first_layer(state_dict: StateDict) -> StateDict:
        converted = dict(tweet_to_modular(state_dict))
        for tensor in ("weight", "bias", "running_mean", "running_var"):
            depthwise, pointwise = f"blocks.0.depthwise.norm.{tensor}", f"blocks.0.pointwise.norm.{tensor}"
            converted[depthwise], converted[pointwise] = converted[pointwise], converted[depthwise]
        return converted

    row = check.check_case(check.Case(6, 1, 3, 2, 8), torch.float64, seed=0, convert=swap_norms_of_first_layer)
    assert row.status == "FAIL"
    assert all(value > 1e-3 for value in row.differences.values()), row.differences


def test_tweet_failure_on_an_odd_kernel_is_a_failure() -> None:
    row = check.Row(check.Case(6, 1, 3, 2, 8), torch.float64, tweet_error="RuntimeError: boom")
    assert row.status == "FAIL"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--dtype", "float16"], ("--dtype: invalid choice: 'float16'", "float32", "float64", "both")),
        (["--seed", "-1"], ("--seed: invalid seed '-1'; expected an integer from 0 to 18446744073709551615",)),
        (["--seed", str(2**64)], ("--seed: invalid seed '18446744073709551616'; expected an integer from 0",)),
        (["--seed", "²"], ("--seed: invalid seed '²'; expected an integer from 0",)),
        (["--fast"], ("unrecognized arguments: --fast",)),
    ],
)
def test_bad_options_exit_2_with_one_line(argv: list[str], message: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    assert check.cli(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"{check.PROG}: error: ") and error.count("\n") == 1
    assert all(fragment in error for fragment in message)


@pytest.mark.slow  # the entry point's smoke test: a fresh interpreter imports torch
def test_command_line_bad_option_has_no_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "convmixer.check", "--dtype", "half"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr.startswith("python -m convmixer.check: error:") and "Traceback" not in result.stderr
