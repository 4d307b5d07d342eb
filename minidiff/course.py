"""The one switch for run size: fast mode for tests, full mode for learners.

`make test` sets MINIDIFF_FAST=1, so every notebook runs in seconds under nbval; a learner
running the notebooks gets the full budgets. Lessons call `budget(fast=…, full=…)` for
every size that depends on it, instead of branching on a flag themselves.

`python -m minidiff.run_course NOTEBOOK… --out DIR` runs notebooks headlessly (`make course`).
"""

from __future__ import annotations

import os
from typing import TypeVar

import torch

T = TypeVar("T")


def fast_mode() -> bool:
    """True when the environment variable MINIDIFF_FAST is set to 1/true/yes."""
    return os.environ.get("MINIDIFF_FAST", "").strip().lower() in {"1", "true", "yes"}


def budget(fast: T, full: T) -> T:
    """`fast` in fast mode (tests), `full` otherwise (learners)."""
    return fast if fast_mode() else full


def default_device() -> torch.device:
    """CUDA if there is a GPU, else Apple's MPS if present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
