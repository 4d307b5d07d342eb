"""The plotting helpers draw what they say (panel counts, titles, data) and the GIF is a GIF."""

import base64

import pytest
import torch

from minidiff import NoiseSchedule, Trajectory, ddpm, eight_gaussians, make_toy, noise_levels, viz
from minidiff.data.photo import sample_photo, to_display


def test_sample_photo_ships_offline():
    img = sample_photo(32)
    assert img.shape == (1, 3, 32, 32) and -1 <= img.min() and img.max() <= 1
    shown = to_display(img)
    assert shown.shape == (1, 32, 32, 3) and 0 <= shown.min() and shown.max() <= 1
    with pytest.raises(ValueError, match="size must be an integer >= 8"):
        sample_photo(4)


def test_noise_strip_titles_and_panels():
    s = NoiseSchedule.linear()
    fig = viz.noise_strip(sample_photo(16), s, [0, 500, 999])
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 3 and titles[0].startswith("t = 0") and "ᾱ = 0.000" in titles[2]
    fig = viz.noise_strip(make_toy("two_moons", 100), s, [0, 999])
    assert len(fig.axes[0].collections[0].get_offsets()) == 100


def test_schedule_plot_has_a_line_per_schedule():
    fig = viz.plot_schedules([NoiseSchedule.linear(), NoiseSchedule.cosine()])
    assert [len(ax.lines) for ax in fig.axes] == [2, 2, 2]


def test_timestep_panels_and_slider():
    s = NoiseSchedule.cosine()
    fig = viz.timestep_panels(sample_photo(16), s, 250, torch.randn(1, 3, 16, 16))
    assert "t = 250" in fig.axes[0].get_title()
    assert fig.axes[2].lines[-1].get_xdata()[0] == 250  # the marker sits at t
    slider = viz.timestep_slider(sample_photo(16), s)
    assert slider.children[0].max == s.T - 1


def test_trajectory_plots_and_gif(tmp_path):
    s = NoiseSchedule.linear(T=100)
    traj = Trajectory()
    ddpm(eight_gaussians().eps_model(s), torch.randn(40, 2), s, noise_levels(s, 10), callback=traj)
    assert viz.plot_trajectories(traj, make_toy("eight_gaussians", 100)).axes
    assert len(viz.x0_prediction_grid(traj, n_cols=4).axes) == 8
    path = tmp_path / "reverse.gif"
    image = viz.animate_2d(traj, str(path), frames=5)
    gif = path.read_bytes()
    assert gif[:6] == b"GIF89a"
    # the same GIF, embedded in an <img> as a data URL (plays in the notebook and in exported HTML)
    assert image.data.startswith('<img src="data:image/gif;base64,')
    assert base64.b64decode(image.data.split("base64,")[1].split('"')[0]) == gif


def test_image_rows_and_slider_show_each_batch():
    frames = {1.0: -torch.ones(4, 3, 8, 8), 7.5: torch.ones(4, 3, 8, 8)}
    fig = viz.image_rows({f"w = {w}": x for w, x in frames.items()}, nrow=4)
    assert [ax.get_ylabel() for ax in fig.axes] == ["w = 1.0", "w = 7.5"]
    shown = [ax.images[0].get_array() for ax in fig.axes]
    assert shown[0][1:-1, 1:-1].min() == 0 and shown[1].min() == 1  # black images, then white ones
    slider = viz.image_slider(frames)
    assert list(slider.children[0].options) == [1.0, 7.5]
