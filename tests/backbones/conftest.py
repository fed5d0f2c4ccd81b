"""Backbone tests run single-threaded: the CI machine has 2 shared cores, and thread
oversubscription makes these small forward passes several times slower."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
