"""Self-checks for the notebooks' exercises.

Each `check_*` calls the learner's function on test inputs, compares it with the
package's own implementation, and when it is wrong says *how*, by recognising the usual
mistakes. It returns True or False and prints its verdict; it never raises, so a
notebook with an unfinished exercise still runs to the end. `show_solution(name)` prints
a reference solution, for when you are stuck.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from torch import Tensor

from minidiff.forward import x0_from_eps
from minidiff.nn.layers import timestep_embedding
from minidiff.nn.unet import ResBlock
from minidiff.samplers import SAMPLERS, sample
from minidiff.schedules import NoiseSchedule

BROADCAST_HINT = " A per-sample value of shape (B,) must be reshaped to (B, 1, 1, 1) to broadcast."


def _verdict(
    name: str,
    fn: Callable,
    args: tuple,
    expected: Tensor,
    mistakes: dict[str, Tensor],
    broadcast_hint: str = BROADCAST_HINT,
) -> bool:
    """Call the learner's fn(*args) and compare with `expected`; if wrong, name the first
    known mistake it matches. An exception in the learner's code becomes feedback."""
    try:
        got = fn(*args)
    except Exception as e:  # noqa: BLE001 — any error in learner code becomes feedback
        hint = broadcast_hint if "size of tensor" in str(e) else ""
        print(f"✗ {name}: your function raised {type(e).__name__}: {e}.{hint}")
        return False
    if got is None:
        print(f"✗ {name}: your function returned None. Did you forget `return`?")
        return False
    if not torch.is_tensor(got):
        print(f"✗ {name}: expected a torch.Tensor, got {type(got).__name__}.")
        return False
    if got.shape != expected.shape:
        print(f"✗ {name}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}. Check how you broadcast.")
        return False
    if torch.allclose(got.double(), expected.double(), rtol=1e-4, atol=1e-5):
        print(f"✓ {name}: correct.")
        return True
    for hint, wrong in mistakes.items():
        if torch.allclose(got.double(), wrong.double(), rtol=1e-4, atol=1e-5):
            print(f"✗ {name}: {hint}")
            return False
    err = (got.double() - expected.double()).abs().max().item()
    print(f"✗ {name}: the values are off (largest error {err:.3g}). Re-read the equation above the exercise.")
    return False


def _test_batch(seed: int = 0) -> tuple[NoiseSchedule, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    schedule = NoiseSchedule.linear()
    x0 = torch.randn(4, 3, 5, 5, generator=g)
    eps = torch.randn(4, 3, 5, 5, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    return schedule, x0, eps, t


def check_alpha_bar(fn: Callable[[Tensor], Tensor]) -> bool:
    """fn(betas) should return ᾱ_t = ∏_{s<=t} (1 - β_s) for every t."""
    betas = NoiseSchedule.linear(T=50).betas
    alphas = 1 - betas
    mistakes = {
        "this is α_t = 1 - β_t; ᾱ_t is the running *product* of the α's (torch.cumprod).": alphas,
        "this is the product of the β's; multiply α_s = 1 - β_s instead.": torch.cumprod(betas, 0),
        "this is 1 - Σβ; ᾱ_t is a product, not a sum (close only while β is tiny).": 1 - torch.cumsum(betas, 0),
        "off by one: ᾱ_0 should already include step 0, i.e. ᾱ_0 = 1 - β_0.": torch.cat(
            [torch.ones(1, dtype=betas.dtype), torch.cumprod(alphas, 0)[:-1]]
        ),
    }
    return _verdict("alpha_bar", fn, (betas,), torch.cumprod(alphas, 0), mistakes)


def check_q_sample(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> bool:
    """fn(x0, t, eps, alpha_bar) should return x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·ε for a batch,
    where t has shape (B,) and alpha_bar is the schedule's (T,) tensor."""
    schedule, x0, eps, t = _test_batch()
    alpha_bar = schedule.alpha_bar.float()
    ab = alpha_bar[t].reshape(-1, 1, 1, 1)
    mistakes = {
        "you used ᾱ_t and 1-ᾱ_t as the coefficients; they are variances, take their square roots.": ab * x0
        + (1 - ab) * eps,
        "the noise term is missing its square root: √(1-ᾱ_t)·ε.": ab.sqrt() * x0 + (1 - ab) * eps,
        "the signal term is missing its square root: √ᾱ_t·x0.": ab * x0 + (1 - ab).sqrt() * eps,
        "x0 and ε are swapped: the signal is scaled by √ᾱ_t, the noise by √(1-ᾱ_t).": ab.sqrt() * eps
        + (1 - ab).sqrt() * x0,
        "you used α_t = 1 - β_t of one step; the closed form needs the cumulative ᾱ_t.": solution_q_sample(
            x0, t, eps, schedule.alphas.float()
        ),
    }
    return _verdict("q_sample", fn, (x0, t, eps, alpha_bar), schedule.q_sample(x0, t, eps), mistakes)


def check_x0_from_eps(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> bool:
    """fn(x_t, eps, alpha_bar_t) should return x̂0 = (x_t - √(1-ᾱ_t)·ε)/√ᾱ_t, where
    alpha_bar_t already broadcasts over x_t."""
    schedule, x0, eps, t = _test_batch(1)
    ab = schedule.alpha_bar.float()[t].reshape(-1, 1, 1, 1)
    x_t = schedule.q_sample(x0, t, eps)
    mistakes = {
        "you subtracted ε without scaling it by √(1-ᾱ_t).": (x_t - eps) / ab.sqrt(),
        "you forgot to divide by √ᾱ_t at the end.": x_t - (1 - ab).sqrt() * eps,
        "you divided by ᾱ_t; divide by its square root.": (x_t - (1 - ab).sqrt() * eps) / ab,
        "the sign of the noise term is wrong: remove the noise, x_t - √(1-ᾱ_t)·ε.": (x_t + (1 - ab).sqrt() * eps)
        / ab.sqrt(),
    }
    return _verdict("x0_from_eps", fn, (x_t, eps, ab), x0_from_eps(x_t, eps, ab), mistakes)


def check_ddpm_mean(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> bool:
    """fn(x_t, eps, alpha_t, alpha_bar_t) should return the mean of p(x_{t-1} | x_t),
    Ho et al. 2020 Algorithm 2: (x_t - (1-α_t)/√(1-ᾱ_t)·ε) / √α_t."""
    schedule, x0, eps, t = _test_batch(2)
    a = schedule.alphas.float()[t].reshape(-1, 1, 1, 1)
    ab = schedule.alpha_bar.float()[t].reshape(-1, 1, 1, 1)
    x_t = schedule.q_sample(x0, t, eps)
    mistakes = {
        "the noise coefficient should be β_t/√(1-ᾱ_t) = (1-α_t)/√(1-ᾱ_t); you used √(1-ᾱ_t).": (
            x_t - (1 - ab).sqrt() * eps
        )
        / a.sqrt(),
        "divide by √α_t (one step), not √ᾱ_t (all steps).": (x_t - (1 - a) / (1 - ab).sqrt() * eps) / ab.sqrt(),
        "you forgot to divide by √α_t.": x_t - (1 - a) / (1 - ab).sqrt() * eps,
        "the coefficient is (1-α_t)/√(1-ᾱ_t), with a square root in the denominator.": (x_t - (1 - a) / (1 - ab) * eps)
        / a.sqrt(),
    }
    return _verdict("ddpm_mean", fn, (x_t, eps, a, ab), (x_t - (1 - a) / (1 - ab).sqrt() * eps) / a.sqrt(), mistakes)


def check_timestep_embedding(fn: Callable[[Tensor, int], Tensor]) -> bool:
    """fn(t, dim) should return the (B, dim) sinusoidal embedding [sin(t·ω_0) … sin(t·ω_{h-1}),
    cos(t·ω_0) … cos(t·ω_{h-1})] with h = dim/2 and ω_i = 10000^(-i/h)."""
    t = torch.tensor([0.0, 1.0, 3.0, 10.0, 49.5])  # moderate t: float32 and float64 answers agree
    dim = 16
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64)
    t64 = t.double()[:, None]

    def sincos(freqs: Tensor) -> Tensor:
        return torch.cat([(t64 * freqs).sin(), (t64 * freqs).cos()], dim=-1)

    freqs = torch.exp(-math.log(10_000) * i / half)
    angles = t64 * freqs
    mistakes = {
        "the sines and cosines are interleaved (sin, cos, sin, cos, …); put all the sines first, then all the "
        "cosines: torch.cat([sin, cos], dim=-1).": torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1),
        "the cosines come first; the order is [sin …, cos …].": torch.cat([angles.cos(), angles.sin()], dim=-1),
        "the exponent is i/dim; it should be i/(dim/2), so the frequencies run from 1 down to nearly 1/10000.": sincos(
            torch.exp(-math.log(10_000) * i / dim)
        ),
        "the exponent is i/(dim/2 - 1), another convention found in some code; this course uses i/(dim/2).": sincos(
            torch.exp(-math.log(10_000) * i / (half - 1))
        ),
    }
    return _verdict("timestep_embedding", fn, (t, dim), timestep_embedding(t, dim), mistakes)


def check_scale_shift(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> bool:
    """fn(h, scale, shift) with h (B, C, H, W) and scale, shift (B, C) should return
    h·(1 + scale) + shift, one scale and one shift per sample and channel."""
    g = torch.Generator().manual_seed(3)
    h = torch.randn(3, 4, 5, 6, generator=g)  # every size different, so a wrong broadcast raises
    scale, shift = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    s, b = scale[:, :, None, None], shift[:, :, None, None]
    mistakes = {
        "you multiplied by scale; multiply by (1 + scale), so that scale = 0 leaves h unchanged.": h * s + b,
        "scale and shift are swapped: h·(1 + scale) + shift.": h * (1 + b) + s,
        "you shifted before scaling; scale first, then add the shift: h·(1 + scale) + shift.": (h + b) * (1 + s),
        "the shift is missing: h·(1 + scale) + shift.": h * (1 + s),
        "the scale is missing: h·(1 + scale) + shift.": h + b,
    }
    hint = " scale and shift have shape (B, C); reshape them to (B, C, 1, 1) to broadcast over H and W."
    return _verdict("scale_shift", fn, (h, scale, shift), h * (1 + s) + b, mistakes, broadcast_hint=hint)


def check_resblock_params(fn: Callable[[int, int, int], int]) -> bool:
    """fn(c_in, c_out, emb_dim) should return the number of parameters of
    ResBlock(c_in, c_out, emb_dim, groups=8, dropout=0)."""
    cases = [(32, 32, 128), (32, 64, 128), (128, 64, 128), (64, 32, 256)]

    def count(c_in: int, c_out: int, e: int) -> int:
        return sum(p.numel() for p in ResBlock(c_in, c_out, e, groups=8, dropout=0.0).parameters())

    def skip(c_in: int, c_out: int) -> int:
        return c_in * c_out + c_out if c_in != c_out else 0

    def answers(f: Callable[[int, int, int], int]) -> Tensor | None:
        """f's answer for every case, as one tensor (None if f returned None anywhere)."""
        values = [f(*case) for case in cases]
        return None if any(v is None for v in values) else torch.tensor([float(v) for v in values])

    mistakes = {
        "the biases are missing: every Conv2d and Linear has one bias per output channel.": lambda i, o, e: (
            2 * i + 9 * i * o + 2 * e * o + 9 * o * o + (i * o if i != o else 0)
        ),
        "the 1×1 skip convolution is missing: when c_in ≠ c_out the shortcut needs it to change the width.": (
            lambda i, o, e: count(i, o, e) - skip(i, o)
        ),
        "norm2 has no parameters (affine=False): the scale-shift takes the place of GroupNorm's own scale and shift.": (
            lambda i, o, e: count(i, o, e) + 2 * o
        ),
        "norm1's learned scale and shift (2·c_in numbers) are missing.": lambda i, o, e: count(i, o, e) - 2 * i,
        "the embedding layer outputs 2·c_out numbers (a scale and a shift per channel), not c_out.": lambda i, o, e: (
            count(i, o, e) - e * o - o
        ),
        "a 3×3 convolution has 9 weights per (input, output) channel pair: c_in·c_out·3·3, not c_in·c_out·3.": (
            lambda i, o, e: count(i, o, e) - 6 * i * o - 6 * o * o
        ),
    }
    wrong = {hint: answers(f) for hint, f in mistakes.items()}
    return _verdict("resblock_params", lambda: answers(fn), (), answers(count), wrong)


def check_ema_update(fn: Callable[[Tensor, Tensor, float], Tensor]) -> bool:
    """fn(theta_ema, theta, decay) should return the new EMA weights decay·θ_ema + (1 - decay)·θ."""
    g = torch.Generator().manual_seed(4)
    theta_ema, theta = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    decay = 0.9
    mistakes = {
        "decay and 1 - decay are swapped: the *old* average keeps the large weight decay.": (
            (1 - decay) * theta_ema + decay * theta
        ),
        "this is the new weights θ alone: the EMA must keep decay·θ_ema of its past.": theta,
        "this returns θ_ema unchanged: add (1 - decay)·θ.": theta_ema,
        "the weights must sum to 1: decay·θ_ema + (1 - decay)·θ, not decay·θ_ema + θ.": decay * theta_ema + theta,
    }
    return _verdict("ema_update", fn, (theta_ema, theta, decay), solution_ema_update(theta_ema, theta, decay), mistakes)


def check_warmup_lr(fn: Callable[[int, float, int], float]) -> bool:
    """fn(step, lr, warmup) should return the learning rate of optimizer step `step` (1, 2, …):
    lr·step/warmup while step < warmup, then lr."""
    steps = [1, 2, 50, 99, 100, 101, 5000]

    def answers(f: Callable[[int, float, int], float]) -> Tensor | None:
        values = [f(step, 1e-3, 100) for step in steps]
        return None if any(v is None for v in values) else torch.tensor([float(v) for v in values])

    mistakes = {
        "after the warm-up the rate must stay at lr, not keep growing: use min(1, step/warmup).": (
            lambda step, lr, w: lr * step / w
        ),
        "the warm-up starts at lr and goes down; it should rise from ~0 to lr.": lambda step, lr, w: (
            lr * max(0.0, 1 - step / w) if step < w else lr
        ),
        "off by one: step 1 should already get lr/warmup, and step = warmup the full lr.": lambda step, lr, w: (
            lr * min(1.0, (step - 1) / w)
        ),
    }
    wrong = {hint: answers(f) for hint, f in mistakes.items()}
    return _verdict("warmup_lr", lambda: answers(fn), (), answers(solution_warmup_lr), wrong)


def check_euler_step(fn: Callable[[Tensor, Tensor, float, float], Tensor]) -> bool:
    """fn(x, x0_hat, sigma, sigma_next) should return one Euler step of the probability-flow
    ODE in σ: x + (σ_next - σ)·d with the slope d = (x - x̂0)/σ (Karras et al. 2022, Alg. 1)."""
    g = torch.Generator().manual_seed(5)
    x = 3.0 * torch.randn(4, 3, 5, 5, generator=g)  # x̃ = x0 + σ·ε at σ = 3
    x0_hat = torch.randn(4, 3, 5, 5, generator=g)
    sigma, sigma_next = 3.0, 1.2
    d = (x - x0_hat) / sigma
    mistakes = {
        "the step goes the wrong way. σ decreases, so the step is (σ_next - σ)·d with a negative "
        "(σ_next - σ); equivalently the slope is d = (x - x̂0)/σ, not (x̂0 - x)/σ.": x + (sigma - sigma_next) * d,
        "you forgot to divide by σ: the slope is d = (x - x̂0)/σ, the noise ε̂ the model sees.": x
        + (sigma_next - sigma) * (x - x0_hat),
        "divide by σ, the level you step *from* (where x̂0 was predicted), not by σ_next.": x
        + (sigma_next - sigma) * (x - x0_hat) / sigma_next,
        "the step size is σ_next - σ, not σ_next.": x + sigma_next * d,
        "you returned x̂0, a jump straight to σ = 0; put back noise of size σ_next: x̂0 + σ_next·d.": x0_hat,
        "you added the step to x̂0; start from x: x + (σ_next - σ)·d (or x̂0 + σ_next·d).": x0_hat
        + (sigma_next - sigma) * d,
    }
    return _verdict("euler_step", fn, (x, x0_hat, sigma, sigma_next), x + (sigma_next - sigma) * d, mistakes)


def _calls(sampler: str, steps: int) -> int:
    """How many times `sample` calls the model: counted on a model that predicts zeros."""
    calls = 0

    def zero_model(x_t: Tensor, t: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        return torch.zeros_like(x_t)

    sample(zero_model, torch.zeros(1, 2), NoiseSchedule.linear(T=100), sampler, steps)
    return calls


def check_nfe(fn: Callable[[str, int], int]) -> bool:
    """fn(sampler, steps) should return the number of model calls (NFE) of `sample` with that
    sampler and step count, for every sampler in SAMPLERS."""
    cases = [(sampler, steps) for sampler in SAMPLERS for steps in (10, 2, 50)]

    def answers(f: Callable[[str, int], int]) -> Tensor | None:
        values = [f(*case) for case in cases]
        return None if any(v is None for v in values) else torch.tensor([float(v) for v in values])

    heun2 = lambda s, n: 2 * n if s == "heun" else n  # noqa: E731
    mistakes = {
        "Heun's last step, to σ = 0, has no slope there to correct with and stays an Euler step: "
        "one call, so 2·steps - 1 in all.": heun2,
        "Heun calls the model twice per step: the slope at the start, and the slope at the end of the "
        "Euler step for the correction (except on the last step).": lambda s, n: n,
        "DPM-Solver++(2M) is second order with one call per step: it reuses the previous step's x̂0 "
        "instead of calling the model again (that is the 'multistep').": lambda s, n: (
            2 * n if s == "dpmpp_2m" else solution_nfe(s, n)
        ),
        "a sampler with N steps calls the model N times (Heun: 2N - 1): the final level σ = 0 is where "
        "the last step lands, not another call.": lambda s, n: solution_nfe(s, n) + 1,
        "only Heun pays two calls per step; the others call the model once per step.": lambda s, n: 2 * n,
    }
    wrong = {hint: answers(f) for hint, f in mistakes.items()}
    return _verdict("nfe", lambda: answers(fn), (), answers(_calls), wrong)


def check_cfg(fn: Callable[[Tensor, Tensor, float], Tensor]) -> bool:
    """fn(eps_uncond, eps_cond, w) should return classifier-free guidance's ε̂ in the Stable
    Diffusion convention: ε̂ = ε_uncond + w·(ε_cond − ε_uncond), so w = 1 is no guidance."""
    g = torch.Generator().manual_seed(6)
    eps_uncond, eps_cond = torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)
    w = 7.5
    mistakes = {
        "the branches are swapped: start from the unconditional prediction and move w times the "
        "difference (ε_cond − ε_uncond) towards the conditional one.": eps_cond + w * (eps_uncond - eps_cond),
        "that is Ho & Salimans' own convention, (1 + w)·ε_cond − w·ε_uncond, where w = 0 means no "
        "guidance; here w = 1 means no guidance: ε_uncond + w·(ε_cond − ε_uncond).": (1 + w) * eps_cond
        - w * eps_uncond,
        "you scaled the difference but dropped the starting point: add it to ε_uncond.": w * (eps_cond - eps_uncond),
        "you added the difference to ε_cond; it is added to ε_uncond.": eps_cond + w * (eps_cond - eps_uncond),
    }
    expected = eps_uncond + w * (eps_cond - eps_uncond)
    return _verdict("cfg", fn, (eps_uncond, eps_cond, w), expected, mistakes)


def check_drop_labels(fn: Callable[[Tensor, Tensor, int], Tensor]) -> bool:
    """fn(y, u, null) should return the labels y (B,) with each replaced by the null label
    where the uniform draw u (B,) is below p_uncond = 0.1 (Ho & Salimans 2022, Algorithm 1)."""
    y = torch.tensor([3, 0, 7, 7, 2, 5, 1, 9])
    u = torch.tensor([0.05, 0.5, 0.09, 0.99, 0.1, 0.0, 0.3, 0.95])
    null, p_uncond = 10, 0.1
    mistakes = {
        "you dropped the labels where u >= p_uncond, which keeps only 10%: drop where u < p_uncond.": torch.where(
            u >= p_uncond, null, y
        ),
        "a dropped label becomes the null label (here 10, one past the last class), not 0.": torch.where(
            u < p_uncond, 0, y
        ),
        "a label is dropped when u < p_uncond (strictly): u = 0.1 keeps its label.": torch.where(
            u <= p_uncond, null, y
        ),
    }
    return _verdict("drop_labels", fn, (y, u, null), torch.where(u < p_uncond, null, y), mistakes)


def check_attention_weights(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> bool:
    """fn(q, k, mask) should return cross-attention weights softmax(q kᵀ/√d) of shape (B, N, L),
    each row over the L tokens, with padding tokens (mask False) getting exactly 0."""
    g = torch.Generator().manual_seed(7)
    q, k = torch.randn(2, 6, 8, generator=g), torch.randn(2, 4, 8, generator=g)  # (B, N, d), (B, L, d)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])  # (B, L)
    logits = q @ k.transpose(1, 2)  # (B, N, L)

    def weights(scores: Tensor, dim: int = -1, masked: bool = True) -> Tensor:
        scores = scores.masked_fill(~mask[:, None, :], float("-inf")) if masked else scores
        return scores.softmax(dim)

    mistakes = {
        "divide the scores by √d (here √8) before the softmax, as in Attention(Q, K, V) = softmax(QKᵀ/√d)V.": weights(
            logits
        ),
        "the softmax runs over the tokens (the last dimension, L): each pixel's weights over the words sum to 1.": (
            weights(logits / 8**0.5, dim=1).nan_to_num()
        ),
        "padding tokens must get zero weight: set their scores to -inf before the softmax.": weights(
            logits / 8**0.5, masked=False
        ),
    }
    return _verdict("attention_weights", fn, (q, k, mask), weights(logits / 8**0.5), mistakes)


def check_kl(fn: Callable[[Tensor, Tensor], Tensor]) -> bool:
    """fn(mean, logvar) should return KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²) per
    image, summed over all latent values: shape (B,) for inputs (B, c, h, w)."""
    g = torch.Generator().manual_seed(8)
    mean, logvar = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    terms = mean**2 + logvar.exp() - 1 - logvar  # (B, c, h, w)
    mistakes = {
        "σ² is exp(logvar), not logvar itself: ½ Σ (μ² + exp(logvar) − 1 − logvar).": 0.5
        * (mean**2 + logvar - 1 - logvar).sum((1, 2, 3)),
        "you forgot the factor ½.": terms.sum((1, 2, 3)),
        "sum over every latent value of an image (channels and positions), not average.": 0.5 * terms.mean((1, 2, 3)),
        "σ = exp(logvar / 2), so σ² = exp(logvar); you used exp(logvar / 2) for σ².": 0.5
        * (mean**2 + (logvar / 2).exp() - 1 - logvar).sum((1, 2, 3)),
    }
    return _verdict("kl", fn, (mean, logvar), 0.5 * terms.sum((1, 2, 3)), mistakes)


def check_sdedit_start(fn: Callable[[Tensor, Tensor, float], Tensor]) -> bool:
    """fn(x0, eps, alpha_bar) should return where SDEdit starts: the input x0 noised to the
    first level kept, x_t = √ᾱ·x0 + √(1-ᾱ)·ε, with ᾱ a number (Meng et al. 2022, Algorithm 1)."""
    g = torch.Generator().manual_seed(9)
    x0, eps = torch.rand(4, 3, 5, 5, generator=g) * 2 - 1, torch.randn(4, 3, 5, 5, generator=g)
    alpha_bar = 0.3  # a middle strength: neither coefficient is close to 0 or 1
    a, b = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
    sigma = ((1 - alpha_bar) / alpha_bar) ** 0.5
    mistakes = {
        "you used ᾱ and 1-ᾱ as the coefficients; they are variances, take their square roots: "
        "√ᾱ·x0 + √(1-ᾱ)·ε.": alpha_bar * x0 + (1 - alpha_bar) * eps,
        "the noise term is missing its square root: √(1-ᾱ)·ε.": a * x0 + (1 - alpha_bar) * eps,
        "the signal term is missing its square root: √ᾱ·x0.": alpha_bar * x0 + b * eps,
        "x0 and ε are swapped: the input is scaled by √ᾱ, the noise by √(1-ᾱ).": a * eps + b * x0,
        "you added noise without shrinking the input: the model expects √ᾱ·x0 + √(1-ᾱ)·ε, whose "
        "variance stays 1 (variance preserving), not x0 + √(1-ᾱ)·ε.": x0 + b * eps,
        "that is x̃ = x0 + σ·ε, the σ-space state of the Euler samplers (lesson 05); the model sees "
        "x_t = √ᾱ·x̃ = √ᾱ·x0 + √(1-ᾱ)·ε.": x0 + sigma * eps,
        "you returned the input unchanged, which is where strength 0 'starts'; noise it to the level ᾱ: "
        "√ᾱ·x0 + √(1-ᾱ)·ε.": x0,
        "you returned pure noise ε, where strength 1 starts; at ᾱ > 0 some of the input remains: "
        "√ᾱ·x0 + √(1-ᾱ)·ε.": eps,
    }
    return _verdict("sdedit_start", fn, (x0, eps, alpha_bar), a * x0 + b * eps, mistakes)


# ----- reference solutions ---------------------------------------------------------------


def solution_alpha_bar(betas: Tensor) -> Tensor:
    return torch.cumprod(1 - betas, dim=0)


def solution_q_sample(x0: Tensor, t: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    ab = alpha_bar[t].reshape(-1, *([1] * (x0.ndim - 1)))  # (B, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def solution_x0_from_eps(x_t: Tensor, eps: Tensor, alpha_bar_t: Tensor) -> Tensor:
    return (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()


def solution_ddpm_mean(x_t: Tensor, eps: Tensor, alpha_t: Tensor, alpha_bar_t: Tensor) -> Tensor:
    return (x_t - (1 - alpha_t) / (1 - alpha_bar_t).sqrt() * eps) / alpha_t.sqrt()


def solution_timestep_embedding(t: Tensor, dim: int) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half) / half)  # ω_i, (dim/2,)
    angles = t.float()[:, None] * freqs[None, :]  # (B, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, dim)


def solution_scale_shift(h: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    return h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]  # (B, C, H, W)


def solution_resblock_params(c_in: int, c_out: int, emb_dim: int) -> int:
    norm1 = 2 * c_in  # GroupNorm's scale and shift per channel
    conv1 = 9 * c_in * c_out + c_out  # 3×3 weights + bias
    emb = emb_dim * 2 * c_out + 2 * c_out  # Linear(emb_dim → scale and shift)
    conv2 = 9 * c_out * c_out + c_out  # norm2 has no parameters (affine=False)
    skip = c_in * c_out + c_out if c_in != c_out else 0  # 1×1 convolution, only to change the width
    return norm1 + conv1 + emb + conv2 + skip


def solution_ema_update(theta_ema: Tensor, theta: Tensor, decay: float) -> Tensor:
    return decay * theta_ema + (1 - decay) * theta  # θ_ema ← decay·θ_ema + (1-decay)·θ


def solution_warmup_lr(step: int, lr: float, warmup: int) -> float:
    return lr * min(1.0, step / warmup)


def solution_euler_step(x: Tensor, x0_hat: Tensor, sigma: float, sigma_next: float) -> Tensor:
    d = (x - x0_hat) / sigma  # dx̃/dσ, the slope of the probability-flow ODE
    return x + (sigma_next - sigma) * d  # same as x0_hat + sigma_next * d


def solution_nfe(sampler: str, steps: int) -> int:
    return 2 * steps - 1 if sampler == "heun" else steps  # Heun's last step has no correction


def solution_cfg(eps_uncond: Tensor, eps_cond: Tensor, w: float) -> Tensor:
    return eps_uncond + w * (eps_cond - eps_uncond)  # w = 1: ε_cond; w = 0: ε_uncond


def solution_drop_labels(y: Tensor, u: Tensor, null: int) -> Tensor:
    return torch.where(u < 0.1, null, y)  # p_uncond = 0.1


def solution_attention_weights(q: Tensor, k: Tensor, mask: Tensor) -> Tensor:
    scores = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5  # (B, N, L): QKᵀ/√d
    scores = scores.masked_fill(~mask[:, None, :], float("-inf"))  # padding: weight exactly 0
    return scores.softmax(dim=-1)  # over the L tokens


def solution_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))  # ½ Σ (μ² + σ² − 1 − log σ²)


def solution_sdedit_start(x0: Tensor, eps: Tensor, alpha_bar: float) -> Tensor:
    return alpha_bar**0.5 * x0 + (1 - alpha_bar) ** 0.5 * eps  # eq. 4 of Ho et al. at the first level kept


def show_solution(name: str) -> None:
    """Print the reference solution of exercise `name` ("alpha_bar", "q_sample", …)."""
    fn = globals().get(f"solution_{name}")
    if fn is None:
        names = sorted(k.removeprefix("solution_") for k in globals() if k.startswith("solution_"))
        raise ValueError(f"unknown exercise {name!r}; expected one of {', '.join(names)}")
    print(inspect.getsource(fn))
