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


@pytest.fixture
def summary_of(capsys):
    """summary_of(model, input_shape) → {stage: its output shape as printed}, after checking that
    the printed total and the stages' parameter counts both add up to the model's parameters."""

    def read(model: torch.nn.Module, input_shape: tuple[int, ...]) -> dict[str, str]:
        model.summary(input_shape)
        lines = capsys.readouterr().out.splitlines()
        total = sum(p.numel() for p in model.parameters())
        assert lines[-1].split() == ["total", f"{total:,}"]
        rows = [line.split() for line in lines[1:-1]]
        assert sum(int(row[-1].replace(",", "")) for row in rows) == total  # every parameter counted once
        return {row[0]: " ".join(row[1:-1]) for row in rows}

    return read
