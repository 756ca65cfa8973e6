"""Shared pytest setup: the test models are tiny, so torch runs single-threaded.

On a small, busy CPU, handing microsecond-sized ops to OpenMP threads costs far more than it saves
(measured: a 4-channel ConvMixer forward took ~300 ms with 2 threads under load, ~3 ms with 1).
"""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def single_threaded_torch() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
