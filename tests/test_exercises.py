"""Exercise checks accept the reference solutions and name the usual mistakes."""

import importlib
import json
import math
import pkgutil
import re
from pathlib import Path

import pytest
import torch

from minidiff import exercises as ex

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


@pytest.mark.parametrize(
    "name",
    [
        "alpha_bar",
        "q_sample",
        "x0_from_eps",
        "ddpm_mean",
        "timestep_embedding",
        "scale_shift",
        "resblock_params",
        "ema_update",
        "warmup_lr",
        "euler_step",
        "nfe",
        "cfg",
        "drop_labels",
        "attention_weights",
        "kl",
        "sdedit_start",
        "path",
        "flow_euler_step",
        "patchify",
        "dit_block_params",
        "unic_step",
        "consistency_coefficients",
        "lora_delta",
        "mask_iou",
        "frequency_bin",
        "cents",
        "frame_tokens",
        "scale_model_input",
        "img2img_steps",
    ],
)
def test_solutions_pass(name, capsys):
    assert bool(getattr(ex, f"check_{name}")(getattr(ex, f"solution_{name}"))) is True
    assert "✓" in capsys.readouterr().out


def test_unfinished_exercise_is_reported_not_raised(capsys):
    assert bool(ex.check_q_sample(lambda x0, t, eps, ab: None)) is False
    assert "returned None" in capsys.readouterr().out


def test_exception_in_learner_code_becomes_feedback(capsys):
    assert bool(ex.check_alpha_bar(lambda betas: 1 / 0)) is False
    out = capsys.readouterr().out
    assert "raised ZeroDivisionError" in out


MISTAKES = [
    (ex.check_alpha_bar, lambda b: 1 - b, "running *product*"),
    (ex.check_alpha_bar, lambda b: 1 - torch.cumsum(b, 0), "not a sum"),
    (
        ex.check_q_sample,
        lambda x0, t, e, ab: ab[t].view(-1, 1, 1, 1) * x0 + (1 - ab[t]).view(-1, 1, 1, 1) * e,
        "square roots",
    ),
    (ex.check_q_sample, lambda x0, t, e, ab: ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * e, "reshaped to (B, 1, 1, 1)"),
    (ex.check_x0_from_eps, lambda x, e, ab: x - (1 - ab).sqrt() * e, "divide by √ᾱ_t"),
    (ex.check_ddpm_mean, lambda x, e, a, ab: (x - (1 - ab).sqrt() * e) / a.sqrt(), "noise coefficient"),
    (
        ex.check_timestep_embedding,
        lambda t, d: ex.solution_timestep_embedding(t, d).view(len(t), 2, -1).transpose(1, 2).flatten(1),
        "interleaved",
    ),
    (ex.check_scale_shift, lambda h, s, b: h * s[..., None, None] + b[..., None, None], "(1 + scale)"),
    (ex.check_scale_shift, lambda h, s, b: h * (1 + s) + b, "(B, C, 1, 1)"),
    (ex.check_resblock_params, lambda i, o, e: ex.solution_resblock_params(i, o, e) + 2 * o, "affine=False"),
    (ex.check_resblock_params, lambda i, o, e: None, "returned None"),
    (ex.check_ema_update, lambda e, t, d: (1 - d) * e + d * t, "swapped"),
    (ex.check_warmup_lr, lambda s, lr, w: lr * s / w, "min(1, step/warmup)"),
    (ex.check_euler_step, lambda x, x0, s, sn: x + (s - sn) * (x - x0) / s, "wrong way"),
    (ex.check_nfe, lambda sampler, n: 2 * n if sampler == "heun" else n, "2·steps - 1"),
    (ex.check_cfg, lambda u, c, w: (1 + w) * c - w * u, "Ho & Salimans' own convention"),
    (ex.check_cfg, lambda u, c, w: c + w * (u - c), "swapped"),
    (ex.check_drop_labels, lambda y, u, null: torch.where(u < 0.1, 0, y), "not 0"),
    (ex.check_drop_labels, lambda y, u, null: torch.where(u <= 0.1, null, y), "strictly"),
    (ex.check_attention_weights, lambda q, k, m: (q @ k.transpose(1, 2) / 8**0.5).softmax(-1), "-inf"),
    (ex.check_attention_weights, lambda q, k, m: ex.solution_attention_weights(q, k, m) * 1.01, "off"),
    (ex.check_kl, lambda m, lv: 0.5 * (m**2 + lv - 1 - lv).sum((1, 2, 3)), "exp(logvar)"),
    (ex.check_kl, lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv).mean((1, 2, 3)), "not average"),
    (ex.check_sdedit_start, lambda x0, e, ab: ab * x0 + (1 - ab) * e, "square roots"),
    (ex.check_sdedit_start, lambda x0, e, ab: x0 + ((1 - ab) / ab) ** 0.5 * e, "σ-space"),
    (ex.check_sdedit_start, lambda x0, e, ab: x0 + (1 - ab) ** 0.5 * e, "without shrinking the input"),
    (ex.check_sdedit_start, lambda x0, e, ab: x0, "input unchanged"),
    (ex.check_path, lambda x0, e, t: t.view(-1, 1, 1, 1) * x0 + (1 - t.view(-1, 1, 1, 1)) * e, "swapped"),
    (ex.check_path, lambda x0, e, t: (1 - t.view(-1, 1, 1, 1)).sqrt() * x0 + t.view(-1, 1, 1, 1).sqrt() * e,
     "square roots"),
    (ex.check_path, lambda x0, e, t: (1 - t) * x0 + t * e, "raised"),
    (ex.check_flow_euler_step, lambda x, v, t, tn: x + (t - tn) * v, "wrong way"),
    (ex.check_flow_euler_step, lambda x, v, t, tn: (tn - t) * v, "dropped x"),
    (ex.check_patchify, lambda x, p: x.reshape(x.shape[0], -1, x.shape[1] * p * p), "rows of pixels"),
    (ex.check_patchify, lambda x, p: x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 4, 5, 1).flatten(3)
     .flatten(1, 2), "channels last"),
    (ex.check_dit_block_params, lambda D, r: (10 + 2 * r) * D * D, "biases"),
    (ex.check_dit_block_params, lambda D, r: (10 + 2 * r) * D * D + (11 + r) * D + 4 * D, "learn nothing"),
    (ex.check_dit_block_params, lambda D, r: (8 + 2 * r) * D * D + (9 + r) * D, "six vectors"),
    (ex.check_unic_step, lambda x, Ds, Dt, s, t: t / s * x + (1 - t / s) * Ds, "without correction"),
    (ex.check_unic_step, lambda x, Ds, Dt, s, t: t / s * x + (1 - t / s) * Dt, "D_t alone"),
    (ex.check_consistency_coefficients, lambda t: (0.25 / (100 * t**2 + 0.25), 5 * t / (100 * t**2 + 0.25) ** 0.5),
     "factor σ_d"),
    (ex.check_consistency_coefficients, lambda t: (0.25 / (t**2 + 0.25), t / (t**2 + 0.25) ** 0.5), "not scaled"),
    (ex.check_lora_delta, lambda A, B, alpha: B @ A, "scale is missing"),
    (ex.check_lora_delta, lambda A, B, alpha: alpha * B @ A, "not α/r"),
    (ex.check_lora_delta, lambda A, B, alpha: alpha / A.shape[0] * A.T @ B.T, "W's shape"),
    (ex.check_mask_iou, lambda a, b: (a & b).flatten(1).sum(1) / a.flatten(1).sum(1), "first mask alone"),
    (ex.check_mask_iou, lambda a, b: 2 * (a & b).flatten(1).sum(1) / (a.flatten(1).sum(1) + b.flatten(1).sum(1)),
     "Dice"),
    (ex.check_mask_iou, lambda a, b: (a & b).sum() / (a | b).sum(), "One IoU per sample"),
    (ex.check_frequency_bin, lambda f: f * 2048 / 4000, "whole note"),
    (ex.check_frequency_bin, lambda f: f * 256 / 4000, "SAMPLE_RATE / N_FFT, not"),
    (ex.check_cents, lambda f, r: 1200 * (f / r).log(), "natural logarithm"),
    (ex.check_cents, lambda f, r: 12 * (f / r).log2(), "in semitones"),
    (ex.check_frame_tokens, lambda h, F: h.reshape(-1, F, h.shape[1]), "reshape alone"),
    (ex.check_frame_tokens, lambda h, F: h.reshape(-1, F, *h.shape[1:]).permute(0, 3, 4, 2, 1).reshape(
        -1, F, h.shape[1]), "swapped"),
    (ex.check_scale_model_input, lambda x, s: x, "that is x̃ itself"),
    (ex.check_scale_model_input, lambda x, s: x / s.view(-1, 1, 1, 1), "divides by σ, not"),
    (ex.check_scale_model_input, lambda x, s: x / (s.view(-1, 1, 1, 1) ** 2 + 1), "not by its square root"),
    (ex.check_img2img_steps, lambda n, s: round(n * s), "that rounds ("),
    (ex.check_img2img_steps, lambda n, s: n - int(n * s), "*skipped*"),
]


@pytest.mark.parametrize("check, wrong, hint", MISTAKES)
def test_mistakes_are_named(check, wrong, hint, capsys):
    assert bool(check(wrong)) is False
    assert hint in capsys.readouterr().out


def test_show_solution(capsys):
    ex.show_solution("q_sample")
    assert "def solution_q_sample" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown exercise 'nope'.*q_sample"):
        ex.show_solution("nope")


def test_show_solution_prints_the_package_function_where_the_exercise_is_one(capsys):
    ex.show_solution("x0_from_eps")
    out = capsys.readouterr().out
    assert "# minidiff.forward.x0_from_eps" in out and "def x0_from_eps" in out
    ex.show_solution("timestep_embedding")
    assert "def timestep_embedding" in capsys.readouterr().out


def test_show_solution_prints_the_package_code_a_wrapper_calls(capsys):
    ex.show_solution("kl")
    out = capsys.readouterr().out
    assert "def solution_kl" in out and "# minidiff.nn.vae.DiagonalGaussian.kl" in out and "def kl(self)" in out
    ex.show_solution("alpha_bar")
    out = capsys.readouterr().out
    assert "def solution_alpha_bar" in out and "torch.cumprod" in out


LESSONS = [m.name for m in pkgutil.iter_modules(ex.__path__) if not m.name.startswith("_")]


def test_one_module_per_notebook():
    notebooks = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert LESSONS == [f"l{stem}" for stem in notebooks]


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_check_has_a_solution_and_both_are_exported(lesson):
    module = importlib.import_module(f"minidiff.exercises.{lesson}")
    checks = {n.removeprefix("check_") for n in vars(module) if n.startswith("check_")}
    solutions = {n.removeprefix("solution_") for n in vars(module) if n.startswith("solution_")}
    assert checks and checks == solutions
    for name in checks:
        assert getattr(ex, f"check_{name}") is getattr(module, f"check_{name}")
        assert getattr(ex, f"solution_{name}") is getattr(module, f"solution_{name}")
        assert {f"check_{name}", f"solution_{name}"} <= set(ex.__all__)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_the_notebooks_use_only_existing_exercises(path, capsys):
    source = "\n".join("".join(cell["source"]) for cell in json.loads(path.read_text())["cells"])
    for name in re.findall(r"\bex\.(\w+)", source):
        assert hasattr(ex, name), f"{path.name} uses ex.{name}"
    for name in re.findall(r"show_solution\(\"(\w+)\"\)", source):
        ex.show_solution(name)
        assert "def " in capsys.readouterr().out


def test_a_verdict_shows_nothing_more_in_a_notebook():
    """The check prints its message; the returned verdict adds no stray `Out: False` below it."""
    from IPython.core.formatters import DisplayFormatter

    from minidiff.exercises._common import Verdict

    for ok in (True, False):
        assert DisplayFormatter().format(Verdict(ok)) == ({}, {})
        assert bool(Verdict(ok)) is ok


def test_lesson_11_hints_fit_their_exercise(capsys):
    assert not ex.check_patchify(lambda x, p: x)  # the unfinished exercise returns the image
    assert "Tokens have shape (B, N, C·p²)" in capsys.readouterr().out
    assert not ex.check_dit_block_params(lambda D, r: 0)
    assert "Count every Linear of DiTBlock.__init__" in capsys.readouterr().out


def test_the_unic_exercise_is_the_samplers_corrector():
    """Lesson 12's UniC-1 step is what `unipc` does when it corrects with one new prediction."""
    from minidiff.samplers import _unipc_update

    g = torch.Generator().manual_seed(0)
    x, D_s, D_t = (torch.randn(2, 3, generator=g, dtype=torch.float64) for _ in range(3))
    expected = _unipc_update(x, [-math.log(2.0)], [D_s], -math.log(0.7), D_t)
    torch.testing.assert_close(ex.solution_unic_step(x, D_s, D_t, 2.0, 0.7), expected)
