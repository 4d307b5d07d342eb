"""Procedural sounds: deterministic from a seed, labels that match the signal (the pitch by an FFT,
the timbre by its harmonics and envelope), spectrograms the image U-Net takes, and an inversion
back to sound that keeps the pitch."""

from __future__ import annotations

import pytest
import torch

from minidiff.data.sounds import (
    BINS,
    FRAMES,
    N_SAMPLES,
    PITCHES,
    SAMPLE_RATE,
    SOUND_CLASSES,
    TIMBRES,
    SoundsDataset,
    dominant_frequency,
    nearest_pitch,
    note,
    to_spectrogram,
    to_waveform,
)
from minidiff.nn import UNet, UNetConfig


def test_the_same_seed_gives_the_same_sounds_and_another_seed_others():
    a, b, c = SoundsDataset(32, seed=0), SoundsDataset(32, seed=0), SoundsDataset(32, seed=1)
    assert torch.equal(a.waveforms, b.waveforms) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.waveforms, c.waveforms)
    assert a.images.shape == (32, 1, BINS, FRAMES) and a.images.min() >= -1 and a.images.max() <= 1
    assert set(a.labels.tolist()) <= set(range(len(SOUND_CLASSES)))


def test_every_label_is_the_pitch_an_fft_hears():
    d = SoundsDataset(200, seed=3)
    heard = dominant_frequency(d.waveforms)
    cents = 1200 * (heard / d.frequencies).log2()
    assert cents.abs().max() < 5  # the detuned frequency itself, within 5 cents
    assert torch.equal(nearest_pitch(heard), d.labels % len(PITCHES))


def test_the_timbres_differ_where_they_should():
    f = PITCHES["C4"]
    sine, organ, pluck = (note(t, f) for t in TIMBRES)
    spectrum = [torch.fft.rfft(w.double()).abs() for w in (sine, organ)]
    k2 = round(2 * f * N_SAMPLES / SAMPLE_RATE)  # the second harmonic's bin
    assert spectrum[0][k2 - 2 : k2 + 3].max() < 0.01 * spectrum[0].max()  # a sine has none
    assert spectrum[1][k2 - 2 : k2 + 3].max() > 0.2 * spectrum[1].max()  # the organ has it at about 1/2
    late = slice(int(0.35 * SAMPLE_RATE), int(0.45 * SAMPLE_RATE))
    assert pluck[late].abs().max() < 0.2 * organ[late].abs().max()  # the pluck has died away, the organ holds


def test_griffin_lim_turns_a_spectrogram_back_into_the_same_pitch():
    d = SoundsDataset(48, seed=4)
    waves = to_waveform(d.images)
    assert waves.shape == (48, N_SAMPLES) and torch.isfinite(waves).all()
    assert (nearest_pitch(dominant_frequency(waves)) == d.labels % len(PITCHES)).float().mean() >= 0.95
    assert (to_spectrogram(waves) - d.images).abs().mean() < 0.1  # its spectrogram is the one asked for


def test_the_image_unet_takes_spectrograms_unchanged():
    d = SoundsDataset(2, seed=0)
    net = UNet(UNetConfig(in_channels=1, channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, heads=2,
                          num_classes=len(SOUND_CLASSES)))
    assert net(d.images, torch.tensor([3, 700]), d.labels).shape == d.images.shape


def test_wrong_shapes_are_named():
    with pytest.raises(ValueError, match=rf"waves must have shape \(B, {N_SAMPLES}\)"):
        to_spectrogram(torch.zeros(2, 100))
    with pytest.raises(ValueError, match=rf"spectrograms must have shape \(B, 1, {BINS}, {FRAMES}\)"):
        to_waveform(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        SoundsDataset(0)
