"""Lesson 14, beyond images (notebooks/14_beyond_images.ipynb): where a pitch lands in a
spectrogram, and a pitch error in cents."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minidiff.data.sounds import N_FFT, N_SAMPLES, SAMPLE_RATE
from minidiff.exercises._common import Verdict, _verdict, uses
from minidiff.nn.video import frame_tokens


def check_frequency_bin(fn: Callable[[Tensor], Tensor]) -> Verdict:
    """fn(f) should return the spectrogram row (a float) where frequency f (Hz) lands:
    k = f · N_FFT / SAMPLE_RATE (31.25 Hz per row here)."""
    f = torch.tensor([196.0, 261.63, 440.0, 1000.0], dtype=torch.float64)
    mistakes = {
        "that divides by the length of the whole note: a row is SAMPLE_RATE / N_FFT Hz wide, the window's "
        "resolution, not the note's.": f * N_SAMPLES / SAMPLE_RATE,
        "the rows span 0 … SAMPLE_RATE/2 in N_FFT/2 steps: the width of a row is SAMPLE_RATE / N_FFT, not "
        "(SAMPLE_RATE/2) / N_FFT.": f * 2 * N_FFT / SAMPLE_RATE,
        "upside down: k = f · N_FFT / SAMPLE_RATE.": SAMPLE_RATE / (f * N_FFT),
    }
    return _verdict("frequency_bin", fn, (f,), f * N_FFT / SAMPLE_RATE, mistakes)


def solution_frequency_bin(f: Tensor) -> Tensor:
    return f * N_FFT / SAMPLE_RATE  # each row is SAMPLE_RATE / N_FFT = 31.25 Hz wide


def check_cents(fn: Callable[[Tensor, Tensor], Tensor]) -> Verdict:
    """fn(f, f_ref) should return 1200 · log2(f / f_ref): the difference in cents (hundredths of a semitone)."""
    f = torch.tensor([440.0, 466.16, 220.0, 445.0], dtype=torch.float64)
    f_ref = torch.tensor([440.0, 440.0, 440.0, 440.0], dtype=torch.float64)
    mistakes = {
        "that uses the natural logarithm: cents count semitones on a base-2 scale, 1200·log2(f/f_ref) (an octave, "
        "a factor 2, is 1200 cents).": 1200 * (f / f_ref).log(),
        "that is in semitones: a cent is a hundredth of one, so multiply log2(f/f_ref) by 1200, not 12.":
            12 * (f / f_ref).log2(),
        "the ratio is upside down: a higher f gives positive cents.": 1200 * (f_ref / f).log2(),
    }
    return _verdict("cents", fn, (f, f_ref), 1200 * (f / f_ref).log2(), mistakes)


def solution_cents(f: Tensor, f_ref: Tensor) -> Tensor:
    return 1200 * torch.log2(f / f_ref)  # an octave (×2) is 1200 cents, a semitone 100


def check_frame_tokens(fn: Callable[[Tensor, int], Tensor]) -> Verdict:
    """fn(h, frames) should turn a batch of per-frame feature maps h (B·F, C, H, W) (the frames of each
    clip consecutive) into the sequences temporal attention reads: one sequence of the F frames per clip
    and pixel, (B·H·W, F, C), the pixel's C features at each frame, in the order (clip, row, column)."""
    g = torch.Generator().manual_seed(14)
    B, F, C, H, W = 2, 3, 4, 2, 5
    h = torch.randn(B * F, C, H, W, generator=g, dtype=torch.float64)
    expected = frame_tokens(h, F)
    mistakes = {
        "a reshape alone does not move the numbers: the frame axis and the channel axis must first be brought "
        "next to each other, after the pixel axes (permute to (B, H, W, F, C)).": h.reshape(B * H * W, F, C),
        "the frame and channel axes are swapped: each sequence must run over the F frames, each token holding "
        "the C features (permute to (B, H, W, F, C), not (B, H, W, C, F)).":
            h.reshape(B, F, C, H, W).permute(0, 3, 4, 2, 1).reshape(B * H * W, F, C),
        "the pixels are taken column first: keep the order (clip, row, column).":
            h.reshape(B, F, C, H, W).permute(0, 4, 3, 1, 2).reshape(B * H * W, F, C),
    }
    shape = f" Expected (B·H·W, F, C) = {(B * H * W, F, C)}: split B·F into (B, F) first."
    return _verdict("frame_tokens", fn, (h, F), expected, mistakes, shape_hint=shape)


@uses(frame_tokens)
def solution_frame_tokens(h: Tensor, frames: int) -> Tensor:
    return frame_tokens(h, frames)  # the package's: split B·F, move (F, C) after (H, W), merge
