"""The plotting helpers draw what they say (panel counts, titles, data) and the GIF is a GIF."""

import base64
import re

import matplotlib.pyplot as plt
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
    slider = viz.timestep_slider(sample_photo(16), s, frames=3)
    assert list(slider.children[0].options) == list(range(s.T))
    assert re.findall(r'alt="([^"]*)"', slider.stand_in) == ["t = 0", "t = 500", "t = 999"]
    assert viz.timestep_slider(sample_photo(16).double(), s, frames=2).stand_in.count("<img") == 2  # any dtype


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
    assert re.findall(r'alt="([^"]*)"', slider.stand_in) == ["w = 1", "w = 7.5"]  # every batch, in the stand-in


def test_figure_slider_shows_a_widget_in_a_kernel_and_a_stand_in_elsewhere():
    calls = []

    def draw(steps=10, sampler="b", spacing="x"):
        calls.append((steps, sampler, spacing))
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.set_title(f"{sampler}, {steps}")
        return fig

    slider = viz.FigureSlider(draw, frames=4, steps=[1, 2, 5, 10, 20, 50, 100], sampler=["a", "b"], spacing=["y"])
    steps, sampler, spacing = slider.kwargs_widgets
    assert (type(steps).__name__, steps.value, steps.continuous_update) == ("SelectionSlider", 10, False)
    assert (type(sampler).__name__, sampler.value, spacing.value) == ("Dropdown", "b", "y")  # draw's default, or first
    assert calls == [(10, "b", "y")]  # the live view drew once

    bundle = slider._repr_mimebundle_()
    assert {viz.WIDGET_VIEW, "text/html", "text/plain"} <= set(bundle)
    assert bundle[viz.WIDGET_VIEW]["model_id"] == slider.model_id
    assert calls[1:] == [(1, "b", "y"), (5, "b", "y"), (20, "b", "y"), (100, "b", "y")]  # 4 frames, spread evenly
    frames = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]*)"( hidden)?', bundle["text/html"])
    assert [alt for _, alt, _ in frames] == ["steps = 1", "steps = 5", "steps = 20", "steps = 100"]
    assert [hidden for *_, hidden in frames] == ["", " hidden", " hidden", " hidden"]  # the first shows without JS
    assert all(base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n" for png, *_ in frames)
    assert '<input type="range" min="0" max="3"' in bundle["text/html"] and "<script>" in bundle["text/html"]
    slider._repr_mimebundle_()
    assert len(calls) == 5  # the stand-in is drawn once
    steps.value, sampler.value = 50, "a"  # the live view redraws for each change
    assert calls[5:] == [(50, "b", "y"), (50, "a", "y")]


def test_static_outputs_keep_stand_ins_and_draw_progress_bars_as_they_ended():
    def view(model_id):
        return {viz.WIDGET_VIEW: {"model_id": model_id, "version_major": 2, "version_minor": 0}}

    def model(name, **state):
        return {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": state}

    outputs = [
        {"output_type": "display_data", "data": {**view("s"), "text/html": "<div>stand-in</div>", "text/plain": "s"}},
        {"output_type": "display_data", "data": {**view("bar"), "text/plain": "train:   0%|"}},
        {"output_type": "display_data", "data": {**view("other"), "text/plain": "Button()"}},
    ]
    state = {
        "bar": model("HBoxModel", children=["IPY_MODEL_left", "IPY_MODEL_p", "IPY_MODEL_right"]),
        "left": model("HTMLModel", value="train: 100%"),
        "p": model("FloatProgressModel", value=40.0, max=40.0),
        "right": model("HTMLModel", value=" 40/40 [00:02&lt;00:00]"),
        "other": model("ButtonModel"),
    }
    notebook = {"cells": [{"cell_type": "code", "outputs": outputs}],
                "metadata": {"widgets": {viz.WIDGET_STATE: {"state": state}}}}
    static = viz.static_outputs(notebook)
    assert "widgets" not in static["metadata"] and "widgets" in notebook["metadata"]  # a copy
    stand_in, bar, other = (out["data"] for out in static["cells"][0]["outputs"])
    assert not any(viz.WIDGET_VIEW in data for data in (stand_in, bar, other))
    assert stand_in["text/html"] == "<div>stand-in</div>"
    assert bar["text/html"] == ('<div class="minidiff-progress"><span>train: 100%</span> <progress value="40.0" '
                                'max="40.0"></progress> <span> 40/40 [00:02&lt;00:00]</span></div>')
    assert other == {"text/plain": "Button()"}
