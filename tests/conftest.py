"""Tests draw figures without a screen and run torch on one thread: the models in tests are
tiny, for which one thread is fastest, and CI machines are small and shared."""

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
