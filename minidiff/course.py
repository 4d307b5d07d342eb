"""The one switch for run size: fast mode for tests, full mode for learners.

`make test` sets MINIDIFF_FAST=1, so every notebook runs in seconds under nbval; a learner
running the notebooks gets the full budgets. Lessons call `budget(fast=…, full=…)` for
every size that depends on it, instead of branching on a flag themselves.

A lesson that needs an optional package names it in its metadata, "minidiff": {"requires":
["diffusers"]}; `missing_requirement` says why such a lesson cannot run here, so that the course
runner and the tests skip it with that reason instead of failing.

`claim(...)` backs each quantitative sentence of a lesson with a check of what the lesson
measured. `python -m minidiff.run_course NOTEBOOK… --out DIR` runs notebooks headlessly
(`make course`) and reports every claim.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO, TypeVar

import torch
from tqdm.auto import tqdm as tqdm_auto
from tqdm.std import tqdm as tqdm_std

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


_bf16_on: set[str] = set()  # device types whose U-Nets and DiTs run under bfloat16 autocast (`use_device`)


def use_device() -> torch.device:
    """The device a lesson runs on, `default_device()`, with one line saying which. On a CUDA GPU
    that computes in bfloat16 (Ampere and newer) it also turns on bfloat16 autocast for the U-Net
    and the DiT (`bf16_autocast`: their matrix products in bfloat16, 8 bits of mantissa, which such
    GPUs run much faster than float32). The CPU and Apple's MPS stay in float32 (bfloat16 is slow on
    CPUs without native support; `benchmarks/bench_recipes.py` measures it on yours)."""
    device = default_device()
    _bf16_on.clear()
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        _bf16_on.add("cuda")
    if device.type == "cuda":
        print(f"device: cuda, {torch.cuda.get_device_name(device)}"
              + (" (bfloat16 autocast)" if _bf16_on else " (float32: no bfloat16 on this GPU)"))
    else:
        threads = torch.get_num_threads()
        print(f"device: cpu (float32; {threads} torch thread{'s' if threads > 1 else ''})" if device.type == "cpu"
              else f"device: {device.type} (float32)")
    return device


def bf16_autocast(x: torch.Tensor, requested: bool = False):
    """bfloat16 autocast on x's device, if `requested` (a model's config.bf16) or if `use_device` turned
    it on for this kind of device; else a context that does nothing. Outputs come back in x's dtype."""
    on = requested or x.device.type in _bf16_on
    return torch.autocast(x.device.type, dtype=torch.bfloat16) if on else contextlib.nullcontext()


# ----- progress bars ---------------------------------------------------------------------------
TERMINAL_PROGRESS = "MINIDIFF_TERMINAL_PROGRESS"  # set by the course runner: a file it copies to its terminal


def progress(iterable: Iterable[T], **kwargs) -> Iterable[T]:
    """A tqdm progress bar over `iterable`: the notebook's own bar in Jupyter, a text bar in a
    terminal; under the headless course runner, a text bar written to the file the runner names
    (and copies to its terminal as it grows), so that a learner running `make course` sees the
    training advance and the executed notebook and its page keep no bars."""
    if os.environ.get(TERMINAL_PROGRESS):
        return tqdm_std(iterable, file=_progress_file(os.environ[TERMINAL_PROGRESS]), mininterval=2.0, **kwargs)
    return tqdm_auto(iterable, **kwargs)


@functools.cache
def _progress_file(path: str) -> TextIO:
    return open(path, "a", encoding="utf-8")  # open for the kernel's life, like a terminal


# ----- claims: every number a lesson's prose states, checked against what the lesson measured -----
CLAIMS_LOG = "MINIDIFF_CLAIMS"  # environment variable: a file where each claim's status is recorded


class ClaimError(AssertionError):
    """A sentence of a lesson that its own measurement contradicts."""


def claim(statement: str, holds: bool, measured: object, *, full_only: bool = False) -> bool:
    """Check a quantitative sentence of a lesson against the value the lesson just measured.

        claim("SNR drops below 1 before t = 260", t_cross < 260, f"crossing at t = {t_cross}")

    Prints ✓ with the measured value when it holds. When it does not, raises ClaimError (the
    lesson stops, and `make course` fails loudly) — unless `full_only` and this is fast mode,
    whose smaller budgets cannot support the sentence: then it says the claim is checked in
    full mode only. Each claim's status is appended to the file named by $MINIDIFF_CLAIMS, if
    set (the course runner sets it and reports all claims at the end).

    Args:
        statement: the claim in words, as the prose makes it
        holds:     whether the measurement supports it (a bool, or a one-element tensor)
        measured:  what was measured, shown next to the verdict (a number or a short text)
        full_only: the claim needs full mode's budgets
    Returns True when the claim holds, False when it is left to full mode.
    """
    holds = bool(holds)
    shown = f"{measured:.4g}" if isinstance(measured, float) else str(measured)
    status = "held" if holds else "full-only" if full_only and fast_mode() else "failed"
    _record(statement, status, shown)
    if status == "failed":
        raise ClaimError(f"✗ the lesson says: {statement} — but it measured {shown}")
    if holds:
        print(f"✓ {statement} (measured: {shown})")
    else:
        print(f"· {statement}: checked in full mode only (fast mode: {shown})")
    return holds


def _record(statement: str, status: str, measured: str) -> None:
    path = os.environ.get(CLAIMS_LOG)
    if path:
        with open(path, "a", encoding="utf-8") as f:  # one JSON line per claim, appended as the lesson runs
            f.write(json.dumps({"claim": statement, "status": status, "measured": measured}) + "\n")


# ----- lessons that need an optional package -----------------------------------------------------
EXTRAS = ("diffusers",)  # optional packages that minidiff has an extra of the same name for (pyproject.toml)


def missing_requirement(notebook: str | Path) -> str | None:
    """Why the lesson `notebook` cannot run here, or None if it can: the first package named in
    its metadata's "minidiff": {"requires": […]} that is not installed, and how to install it."""
    metadata = json.loads(Path(notebook).read_text(encoding="utf-8")).get("metadata", {})
    for package in metadata.get("minidiff", {}).get("requires", []):
        if importlib.util.find_spec(package) is None:
            how = f"pip install 'minidiff[{package}]'" if package in EXTRAS else f"pip install {package}"
            return f"needs {package}, which is not installed ({how})"
    return None
