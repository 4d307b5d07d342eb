"""What every lesson's checks share: calling the learner's function safely, comparing its
answer with the expected one, and naming the first known mistake it matches."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from minidiff.schedules import NoiseSchedule

EXERCISES_LOG = "MINIDIFF_EXERCISES"  # environment variable: a file where each check's verdict is recorded
BROADCAST_HINT = " A per-sample value of shape (B,) must be reshaped to (B, 1, 1, 1) to broadcast."


class Verdict:
    """What a check returns: true when the answer is right. The check has already printed what
    is right or wrong, so in a notebook the verdict itself shows nothing (no stray `False`)."""

    def __init__(self, ok: bool):
        self.ok = ok

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"Verdict({self.ok})"

    def _ipython_display_(self) -> None:
        pass  # the message is printed; there is nothing more to show


def _verdict(
    name: str,
    fn: Callable,
    args: tuple,
    expected: Tensor,
    mistakes: dict[str, Tensor],
    broadcast_hint: str = BROADCAST_HINT,
    shape_hint: str = " Check how you broadcast.",
    off_hint: str = " Re-read the equation above the exercise.",
) -> Verdict:
    """Call the learner's fn(*args) and compare with `expected`; if wrong, name the first
    known mistake it matches. An exception in the learner's code becomes feedback. The hints
    end the messages for an error about sizes, a wrong shape, and values off for no known reason."""
    try:
        got = fn(*args)
    except Exception as e:  # noqa: BLE001 — any error in learner code becomes feedback
        hint = broadcast_hint if "size of tensor" in str(e) else ""
        return _say(name, False, f"your function raised {type(e).__name__}: {e}.{hint}")
    if got is None:
        return _say(name, False, "your function returned None. Did you forget `return`?")
    if not torch.is_tensor(got):
        return _say(name, False, f"expected a torch.Tensor, got {type(got).__name__}.")
    if got.shape != expected.shape:
        return _say(name, False, f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)}.{shape_hint}")
    if torch.allclose(got.double(), expected.double(), rtol=1e-4, atol=1e-5):
        return _say(name, True, "correct.")
    for hint, wrong in mistakes.items():
        if torch.allclose(got.double(), wrong.double(), rtol=1e-4, atol=1e-5):
            return _say(name, False, hint)
    err = (got.double() - expected.double()).abs().max().item()
    return _say(name, False, f"the values are off (largest error {err:.3g}).{off_hint}")


def _say(name: str, ok: bool, message: str) -> Verdict:
    """Print a check's verdict, "✓ name: message" or "✗ name: message", and, when the exercise report
    runs the notebook (`python -m minidiff.exercises report`), record it in its log as a line of JSON."""
    print(f"{'✓' if ok else '✗'} {name}: {message}")
    if os.environ.get(EXERCISES_LOG):
        with open(os.environ[EXERCISES_LOG], "a", encoding="utf-8") as log:
            log.write(json.dumps({"check": name, "ok": ok, "message": message}) + "\n")
    return Verdict(ok)


def _verdict_on_cases(
    name: str, fn: Callable, cases: Sequence[tuple], reference: Callable, mistakes: dict[str, Callable],
    off_hint: str = " Re-read the equation above the exercise.",
) -> Verdict:
    """`_verdict` for a function that returns a number: fn(*case) for every case, as one
    tensor, against reference(*case) and against each known mistake's answers."""

    def answers(f: Callable) -> Tensor | None:
        """f's answer for every case, as one tensor (None if f returned None anywhere)."""
        values = [f(*case) for case in cases]
        return None if any(v is None for v in values) else torch.tensor([float(v) for v in values])

    wrong = {hint: answers(f) for hint, f in mistakes.items()}
    return _verdict(name, lambda: answers(fn), (), answers(reference), wrong, off_hint=off_hint)


def _test_batch(seed: int = 0) -> tuple[NoiseSchedule, Tensor, Tensor, Tensor]:
    """The linear schedule, x0 and ε of shape (4, 3, 5, 5), and one timestep per sample."""
    g = torch.Generator().manual_seed(seed)
    schedule = NoiseSchedule.linear()
    x0 = torch.randn(4, 3, 5, 5, generator=g)
    eps = torch.randn(4, 3, 5, 5, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    return schedule, x0, eps, t


def uses(*package_code: Callable) -> Callable[[Callable], Callable]:
    """Mark a solution that only calls the package: `show_solution` prints `package_code`'s
    source after the solution's, so the learner reads the tested implementation."""

    def mark(solution: Callable) -> Callable:
        solution.uses = package_code
        return solution

    return mark
