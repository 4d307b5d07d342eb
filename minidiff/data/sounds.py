"""Procedural sounds: short notes of three timbres at six pitches, generated from a seed, and
the spectrogram that lets the image U-Net learn them unchanged.

A note is a sum of harmonics k·f of its pitch f under an amplitude envelope:

    sine     the fundamental alone, held
    organ    every harmonic k = 1, 2, 3, … at amplitude 1/k (a band-limited sawtooth), held
    pluck    the organ's harmonics, each dying away faster the higher it is (exp(-k·t/τ)), as a
             plucked string does

so sine and organ differ in their harmonics, organ and pluck in how they change over time: both
show in a spectrogram. (Every pitch is below 500 Hz, so every note but a sine has a harmonic
below NYQUIST_KEPT.)

Each note gets a random loudness, a detuning of up to ±10 cents, a start within the first 50 ms
and a little noise. Harmonics stop below NYQUIST_KEPT (1 kHz), so the spectrogram keeps
everything the waveform holds.

The model never sees the waveform: `to_spectrogram` turns it into a (1, 32, 32) image (32
frequency bins of 31.25 Hz up to 1 kHz, 32 frames of 16 ms), log-magnitude in [-1, 1]. A U-Net
made for images learns those; `to_waveform` turns a generated spectrogram back into sound by
Griffin-Lim (Griffin & Lim 1984): the magnitude is what the model made, the phase is found by
alternating between the waveform and its spectrogram until they agree.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minidiff.data.images import LabelledImages

SAMPLE_RATE = 4000  # Hz
N_SAMPLES = 2048  # 0.512 s
N_FFT, HOP = 128, 64  # 31.25 Hz per frequency bin, 16 ms per frame
BINS, FRAMES = 32, 32  # the spectrogram kept: 0 … 1 kHz, the whole note
NYQUIST_KEPT = BINS * SAMPLE_RATE / N_FFT  # 1,000 Hz: no harmonic above it
TIMBRES = ("sine", "organ", "pluck")
PITCHES = {"G3": 196.00, "A3": 220.00, "C4": 261.63, "D4": 293.66, "E4": 329.63, "G4": 392.00}  # pentatonic, Hz
SOUND_CLASSES = tuple(f"{timbre} {note}" for timbre in TIMBRES for note in PITCHES)  # label = timbre·6 + pitch
LOG_RANGE = (-6.0, 4.0)  # log-magnitudes mapped to [-1, 1]


def note(timbre: str, frequency: float, amplitude: float = 0.8, start: float = 0.0) -> Tensor:
    """One note, (N_SAMPLES,) float32 in about [-1, 1]: harmonics of `frequency` below NYQUIST_KEPT
    under the timbre's envelope, starting `start` seconds in."""
    t = torch.arange(N_SAMPLES, dtype=torch.float64) / SAMPLE_RATE - start  # (N,) seconds since the onset
    ks = [k for k in range(1, 64) if k * frequency < NYQUIST_KEPT]
    ks = ks[:1] if timbre == "sine" else ks
    wave = torch.zeros_like(t)
    for k in ks:
        decay = torch.exp(-k * t.clamp(min=0) / 0.12) if timbre == "pluck" else 1.0  # higher harmonics die first
        wave += decay * torch.sin(2 * math.pi * k * frequency * t) / k
    attack = (t / 0.01).clamp(0, 1)  # 10 ms
    release = ((0.5 - t) / 0.05).clamp(0, 1) if timbre != "pluck" else 1.0  # sustained notes end by 0.5 s
    envelope = attack * release * (t >= 0)
    wave = wave * envelope
    return (amplitude * wave / wave.abs().max().clamp(min=1e-8)).float()


class SoundsDataset(LabelledImages):
    """n notes, each one of TIMBRES at one of PITCHES, labelled timbre·len(PITCHES) + pitch
    (SOUND_CLASSES). `.waveforms` (n, N_SAMPLES) are the sounds; `.images` (n, 1, BINS, FRAMES)
    their spectrograms in [-1, 1] (`to_spectrogram`), what a diffusion model trains on. The same
    seed gives identical tensors."""

    def __init__(self, n: int = 5000, seed: int = 0):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        g = torch.Generator().manual_seed(seed)
        timbre = torch.randint(len(TIMBRES), (n,), generator=g)
        pitch = torch.randint(len(PITCHES), (n,), generator=g)
        cents = (torch.rand(n, generator=g) * 2 - 1) * 10  # detuning
        amplitude = 0.5 + 0.4 * torch.rand(n, generator=g)
        start = 0.05 * torch.rand(n, generator=g)
        noise = 0.01 * torch.randn(n, N_SAMPLES, generator=g)
        frequencies = torch.tensor(list(PITCHES.values()))[pitch] * 2 ** (cents / 1200)
        waves = torch.stack([note(TIMBRES[k], f.item(), a.item(), s.item())
                             for k, f, a, s in zip(timbre.tolist(), frequencies, amplitude, start, strict=True)])
        self.waveforms = waves + noise  # (n, N_SAMPLES)
        self.frequencies = frequencies  # (n,) Hz, detuned
        super().__init__(to_spectrogram(self.waveforms), timbre * len(PITCHES) + pitch, SOUND_CLASSES)


def _window(device: torch.device) -> Tensor:
    return torch.hann_window(N_FFT, device=device)


def to_spectrogram(waves: Tensor) -> Tensor:
    """Waveforms (B, N_SAMPLES) → log-magnitude spectrograms (B, 1, BINS, FRAMES) in [-1, 1]
    (low frequencies at row 0): |STFT| with a Hann window of N_FFT, hop HOP, log, mapped from LOG_RANGE."""
    if waves.ndim != 2 or waves.shape[1] != N_SAMPLES:
        raise ValueError(f"waves must have shape (B, {N_SAMPLES}), got {tuple(waves.shape)}")
    S = torch.stft(waves, N_FFT, HOP, window=_window(waves.device), return_complex=True)  # (B, N_FFT/2+1, frames)
    log_mag = S.abs()[:, :BINS, :FRAMES].clamp(min=1e-8).log()  # (B, BINS, FRAMES)
    lo, hi = LOG_RANGE
    return ((log_mag - lo) / (hi - lo) * 2 - 1).clamp(-1, 1)[:, None]


def to_waveform(spectrograms: Tensor, iterations: int = 32, seed: int = 0) -> Tensor:
    """Spectrograms (B, 1, BINS, FRAMES) in [-1, 1] → waveforms (B, N_SAMPLES) by Griffin-Lim:
    start from random phases, then `iterations` times: waveform = iSTFT(magnitude · phase), phase =
    the phase of STFT(waveform). The bins above 1 kHz are taken as silent."""
    if spectrograms.ndim != 4 or tuple(spectrograms.shape[1:]) != (1, BINS, FRAMES):
        raise ValueError(f"spectrograms must have shape (B, 1, {BINS}, {FRAMES}), got {tuple(spectrograms.shape)}")
    lo, hi = LOG_RANGE
    mag = ((spectrograms[:, 0].clamp(-1, 1) + 1) / 2 * (hi - lo) + lo).exp()  # (B, BINS, FRAMES)
    full = torch.zeros(len(mag), N_FFT // 2 + 1, N_SAMPLES // HOP + 1, device=mag.device)
    full[:, :BINS, :FRAMES] = mag  # the last frame and the upper bins: silence
    g = torch.Generator(mag.device).manual_seed(seed)
    phase = torch.exp(2j * math.pi * torch.rand(full.shape, generator=g, device=mag.device))
    window = _window(mag.device)
    for _ in range(iterations):
        wave = torch.istft(full * phase, N_FFT, HOP, window=window, length=N_SAMPLES)
        S = torch.stft(wave, N_FFT, HOP, window=window, return_complex=True)
        phase = torch.exp(1j * S.angle())
    return torch.istft(full * phase, N_FFT, HOP, window=window, length=N_SAMPLES)


def dominant_frequency(waves: Tensor) -> Tensor:
    """The frequency (Hz) of the largest peak of each waveform's spectrum, (B,): |FFT| of the whole
    note (Hann-windowed; 1.95 Hz per bin), refined by a parabola through the peak and its neighbours."""
    spectrum = torch.fft.rfft(waves * torch.hann_window(waves.shape[-1], device=waves.device)).abs()  # (B, N/2+1)
    k = spectrum[:, 1:-1].argmax(1) + 1  # (B,), away from the ends
    a, b, c = (spectrum.gather(1, (k + d)[:, None])[:, 0].log() for d in (-1, 0, 1))
    offset = 0.5 * (a - c) / (a - 2 * b + c)  # the parabola's vertex, in bins
    return (k + offset) * SAMPLE_RATE / waves.shape[-1]


def nearest_pitch(frequencies: Tensor) -> Tensor:
    """The index in PITCHES of the pitch nearest to each frequency (Hz), in cents, (B,)."""
    notes = torch.tensor(list(PITCHES.values()), dtype=frequencies.dtype, device=frequencies.device)
    return (1200 * (frequencies[:, None] / notes).log2()).abs().argmin(1)
