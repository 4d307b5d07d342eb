"""Clips and the space-time denoiser: the data moves as specified, the tracker finds it, and the
video U-Net is the image U-Net on every frame until its temporal attention learns something."""

from __future__ import annotations

import pytest
import torch

from minidiff.checkpoint import load_checkpoint, save_checkpoint
from minidiff.data.clips import FRAMES, SIZE, ShapeClips, path_residual, track
from minidiff.metrics import ClipMetric
from minidiff.nn import UNetConfig
from minidiff.nn.video import VideoUNet, VideoUNetConfig, frame_maps, frame_tokens
from minidiff.schedules import NoiseSchedule

TINY = UNetConfig(in_channels=3, channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, heads=2,
                  num_classes=16)


def test_clips_are_deterministic_and_move_in_a_straight_line_at_constant_speed():
    a, b = ShapeClips(64, seed=0), ShapeClips(64, seed=0)
    assert torch.equal(a.clips, b.clips) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.clips, ShapeClips(64, seed=1).clips)
    assert a.clips.shape == (64, FRAMES, 3, SIZE, SIZE) and a.clips.min() >= -1 and a.clips.max() <= 1
    steps = a.centres.diff(dim=1)  # (n, F-1, 2)
    assert torch.allclose(steps, a.velocities[:, None].expand_as(steps), atol=1e-5)  # constant velocity
    assert (a.centres >= 0).all() and (a.centres <= SIZE).all()  # inside the frame throughout
    assert path_residual(a.centres).max() < 1e-4


def test_the_tracker_finds_the_drawn_centres_and_the_residual_separates_shuffled_frames():
    d = ShapeClips(200, seed=2)
    found = track(d.clips)
    assert (found - d.centres).norm(dim=-1).median() < 0.3  # pixels
    assert path_residual(found).median() < 0.3
    mixed = torch.stack([d.clips[(i + torch.arange(FRAMES)) % 200, torch.arange(FRAMES)] for i in range(50)])
    assert path_residual(track(mixed)).median() > 1.0  # frames of different clips do not move on a line


def test_an_untrained_video_unet_is_the_image_unet_on_every_frame():
    torch.manual_seed(0)
    video = VideoUNet(VideoUNetConfig(TINY, frames=4))
    with torch.no_grad():  # a "trained" spatial network; the temporal projections stay at zero
        for name, p in video.named_parameters():
            if "temporal" not in name:
                p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 4, 3, 8, 8)
    t, y = torch.tensor([10, 600]), torch.tensor([3, 16])
    out = video(x, t, y)
    frame_by_frame = torch.stack([video(x[:, [f] * 4], t, y)[:, 0] for f in range(4)], 1)
    assert torch.allclose(out, frame_by_frame, atol=1e-6)  # no frame sees another yet
    out.square().mean().backward()
    temporal = [p.grad for n, p in video.named_parameters() if "temporal.proj.weight" in n]
    assert temporal and all(g is not None and g.abs().sum() > 0 for g in temporal)  # and it can learn to


def test_a_trained_temporal_layer_mixes_the_frames(tmp_path):
    torch.manual_seed(0)
    video = VideoUNet(VideoUNetConfig(TINY, frames=4))
    with torch.no_grad():
        for p in video.parameters():  # the temporal projections too: a trained model
            p.add_(0.05 * torch.randn_like(p))
    x, t, y = torch.randn(2, 4, 3, 8, 8), torch.tensor([10, 600]), torch.tensor([3, 16])
    changed = x.clone()
    changed[:, 3] = torch.randn(2, 3, 8, 8)  # another last frame
    assert not torch.allclose(video(x, t, y)[:, 0], video(changed, t, y)[:, 0])  # frame 0 sees frame 3
    save_checkpoint(tmp_path / "v.safetensors", video, NoiseSchedule.cosine(100), (4, 3, 8, 8), "v")
    loaded = load_checkpoint(tmp_path / "v.safetensors").model
    assert isinstance(loaded, VideoUNet) and torch.equal(loaded(x, t, y), video(x, t, y))


def test_wrong_clip_shapes_are_named():
    video = VideoUNet(VideoUNetConfig(TINY, frames=4))
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 4, 3, H, W\)"):
        video(torch.randn(2, 5, 3, 8, 8), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"x_t must have shape"):
        video(torch.randn(2, 3, 8, 8), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="one timestep per clip"):
        video(torch.randn(2, 4, 3, 8, 8), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="frames must be a positive integer"):
        VideoUNetConfig(TINY, frames=0)


def test_the_clip_metric_tells_real_clips_from_frames_of_different_clips():
    """Real held-out clips: every frame classified right and one class per clip (measured 99.5%, 97%),
    the tracked centre within 0.3 px of a straight line; frames taken from 8 different clips: almost
    never one class, and 2.3 px off any line (measured)."""
    d = ShapeClips(64, seed=1)
    metric = ClipMetric()
    real = metric.evaluate(d.clips, d.labels)
    assert real["accuracy"] > 0.95 and real["same_class"] > 0.85 and real["path_residual"] < 0.3, real
    mixed = torch.stack([d.clips[(i + torch.arange(FRAMES)) % 64, torch.arange(FRAMES)] for i in range(64)])
    shuffled = metric.evaluate(mixed, d.labels)
    assert shuffled["same_class"] < 0.1 and shuffled["path_residual"] > 1.0, shuffled
    assert (metric.predict(d.clips) == d.labels).float().mean() > 0.95  # a clip's class: its frames' majority
    with pytest.raises(ValueError, match=r"clips must have shape \(B, F, 3, H, W\)"):
        metric.evaluate(d.clips[0])


def test_frame_tokens_put_each_pixels_frames_in_one_sequence_and_frame_maps_undo_it():
    B, F, C, H, W = 2, 3, 4, 2, 5
    h = torch.randn(B * F, C, H, W)
    tokens = frame_tokens(h, F)
    assert tokens.shape == (B * H * W, F, C)
    for b, f, y, x in [(0, 0, 0, 0), (1, 2, 1, 4), (0, 1, 1, 3)]:
        assert torch.equal(tokens[b * H * W + y * W + x, f], h[b * F + f, :, y, x])  # clip b, pixel (y, x), frame f
    assert torch.equal(frame_maps(tokens, h.shape), h)
