"""Pictures of diffusion: noise strips, schedule curves, a timestep slider, 2-D trajectories
and animations. Every function returns the matplotlib Figure (or widget) it makes."""

from __future__ import annotations

import base64
import copy
import html
import inspect
import io
import math
import tempfile
import wave
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from pathlib import Path

import ipywidgets as widgets
import matplotlib.image
import matplotlib.pyplot as plt
import torch
from IPython.display import display
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.figure import Figure
from torch import Tensor

from minidiff.data.photo import to_display
from minidiff.data.sounds import BINS, FRAMES, SAMPLE_RATE, to_waveform
from minidiff.files import write_atomic
from minidiff.schedules import NoiseSchedule
from minidiff.trajectory import Trajectory


def _draw(ax, x: Tensor, title: str = "", lim: float = 4, **scatter) -> None:
    """One panel: an image if x is (C, H, W), a scatter plot in [-lim, lim]² if x is (N, 2)."""
    if x.ndim == 3:
        ax.imshow(to_display(x[None])[0].squeeze(-1).numpy(), cmap="gray")
        ax.set_xticks([]), ax.set_yticks([])
    else:
        ax.scatter(*x.detach().cpu().T, **{"s": 2, "alpha": 0.5, **scatter})
        ax.set_aspect("equal")
        ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim)
    ax.set_title(title, fontsize=10)


def noise_strip(x0: Tensor, schedule: NoiseSchedule, ts: Sequence[int], seed: int = 0) -> Figure:
    """x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·ε at the timesteps `ts`, one panel each, with the same ε.

    x0: one image (1, C, H, W) or a cloud of 2-D points (N, 2).
    """
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g).to(x0)
    fig, axes = plt.subplots(1, len(ts), figsize=(2.2 * len(ts), 2.4), squeeze=False)
    for ax, t in zip(axes[0], ts, strict=True):
        t_batch = torch.full((x0.shape[0],), t, dtype=torch.long)
        x_t = schedule.q_sample(x0, t_batch, noise)
        _draw(ax, x_t[0] if x0.ndim == 4 else x_t, f"t = {t}\nᾱ = {schedule.alpha_bar[t]:.3f}")
    fig.tight_layout()
    return fig


def plot_schedules(schedules: Sequence[NoiseSchedule]) -> Figure:
    """ᾱ_t, log SNR_t and β_t against t for several schedules, side by side."""
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.4))
    for s in schedules:
        t = torch.arange(s.T)
        a.plot(t.numpy(), s.alpha_bar.numpy(), label=s.name)
        b.plot(t.numpy(), s.snr.log().numpy(), label=s.name)
        c.plot(t.numpy(), s.betas.numpy(), label=s.name)
    a.set(title="ᾱ_t: signal left", xlabel="t")
    b.set(title="log SNR_t = log ᾱ_t/(1-ᾱ_t)", xlabel="t")
    c.set(title="β_t: noise added per step", xlabel="t", yscale="log")
    a.legend()
    fig.tight_layout()
    return fig


def timestep_panels(x0: Tensor, schedule: NoiseSchedule, t: int, noise: Tensor) -> Figure:
    """What x_t looks like at one t: the sample, its value histogram against N(0, 1), and
    where t sits on the ᾱ_t and SNR curves."""
    x_t = schedule.q_sample(x0, torch.full((x0.shape[0],), t, dtype=torch.long), noise)
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(12, 3.4))
    _draw(a, x_t[0] if x0.ndim == 4 else x_t, f"x_t at t = {t}")
    grid = torch.linspace(-4, 4, 200)
    b.hist(x_t.flatten().cpu().numpy(), bins=60, range=(-4, 4), density=True, alpha=0.6, label="values of x_t")
    b.plot(grid.numpy(), (torch.exp(-(grid**2) / 2) / math.sqrt(2 * math.pi)).numpy(), "k", label="N(0, 1)")
    b.set(title="histogram of x_t", ylim=(0, 1.2))
    b.legend(fontsize=8)
    steps = torch.arange(schedule.T)
    c.plot(steps.numpy(), schedule.alpha_bar.numpy(), color="tab:blue")
    c.set_ylabel("ᾱ_t", color="tab:blue")
    c2 = c.twinx()
    c2.plot(steps.numpy(), schedule.snr.log10().numpy(), color="tab:orange")
    c2.set_ylabel("log₁₀ SNR_t", color="tab:orange")
    c.axvline(t, color="r")
    c.set(title=f"ᾱ_t = {schedule.alpha_bar[t]:.4f}, SNR_t = {schedule.snr[t]:.3g}", xlabel="t")
    fig.tight_layout()
    return fig


class FigureSlider(widgets.interactive):
    """A slider that redraws a figure, `draw(**values) -> Figure`, with a stand-in for pages
    without a kernel.

    Each keyword names a control and the values it offers: the first becomes a slider, the others
    drop-down menus, each starting at `draw`'s default for it (or its first value). With a live
    kernel (JupyterLab) it is an ipywidgets `interactive`. Its display bundle also carries a
    `text/html` stand-in for exported pages and the course website: the figures for `frames`
    values of the slider (spread evenly, the other controls at their start), pre-drawn as PNGs,
    with a slider, step and play buttons of its own in a few lines of JavaScript that need
    nothing else.

        FigureSlider(show, steps=[1, 5, 10, 50], sampler=["ddim", "euler"])
    """

    def __init__(self, draw: Callable[..., Figure], frames: int = 8, **controls: Iterable) -> None:
        defaults = {k: p.default for k, p in inspect.signature(draw).parameters.items()}
        boxes = {}
        for i, (name, values) in enumerate(controls.items()):
            values = list(values)
            value = defaults[name] if defaults.get(name, inspect.Parameter.empty) in values else values[0]
            kind = widgets.SelectionSlider if i == 0 else widgets.Dropdown
            boxes[name] = kind(options=values, value=value, description=name)
        self.draw, self.frames = draw, frames
        super().__init__(self._show, **boxes)
        self.kwargs_widgets[0].continuous_update = False  # redraw when the slider is let go

    def _show(self, **values) -> None:
        fig = self.draw(**values)
        display(fig)
        plt.close(fig)

    def _repr_mimebundle_(self, **kwargs) -> dict:
        return {**super()._repr_mimebundle_(**kwargs), "text/html": self.stand_in}

    @cached_property
    def stand_in(self) -> str:
        """The HTML stand-in: the slider's values drawn once each, shown one at a time."""
        slider, *others = self.kwargs_widgets
        values = list(slider.options)
        step = math.ceil((len(values) - 1) / max(self.frames - 1, 1)) or 1
        picks = [*range(0, len(values) - 1, step), len(values) - 1]  # e.g. t = 0, 100, …, 900, 999
        fixed = {w.description: w.value for w in others}
        images = []
        for k in picks:
            fig = self.draw(**{slider.description: values[k]}, **fixed)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", bbox_inches="tight")  # as the notebook shows it
            plt.close(fig)
            value = f"{values[k]:g}" if isinstance(values[k], float) else values[k]
            label = html.escape(f"{slider.description} = {value}")
            png = base64.b64encode(buffer.getvalue()).decode()
            hidden = " hidden" if images else ""  # the first frame shows even where no script runs
            images.append(f'<img src="data:image/png;base64,{png}" alt="{label}"{hidden} style="max-width: 100%">')
        return _STAND_IN.format(images="\n".join(images), last=len(images) - 1)


# The stand-in's markup: every frame an <img>, one shown at a time; a range input, step and play buttons,
# and the shown frame's alt text as its label. The script finds its own box (document.currentScript).
_STAND_IN = """<div class="minidiff-stand-in">
<div>{images}</div>
<button type="button" title="previous">&#9664;</button>
<input type="range" min="0" max="{last}" value="0" step="1" aria-label="frame" style="width: 16em">
<button type="button" title="next">&#9654;</button>
<button type="button" title="play">play</button>
<output></output>
<script>
(function (box) {{
  var frames = box.querySelectorAll("img"), slider = box.querySelector("input"), label = box.querySelector("output");
  var buttons = box.querySelectorAll("button"), timer = null;
  function show(k) {{
    k = (k + frames.length) % frames.length;
    frames.forEach(function (frame, i) {{ frame.hidden = i !== k; }});
    slider.value = k;
    label.textContent = frames[k].alt;
  }}
  slider.oninput = function () {{ show(+slider.value); }};
  buttons[0].onclick = function () {{ show(+slider.value - 1); }};
  buttons[1].onclick = function () {{ show(+slider.value + 1); }};
  buttons[2].onclick = function () {{
    if (timer) {{ clearInterval(timer); timer = null; buttons[2].textContent = "play"; return; }}
    timer = setInterval(function () {{ show(+slider.value + 1); }}, 700);
    buttons[2].textContent = "pause";
  }};
  show(0);
}})(document.currentScript.parentNode);
</script>
</div>"""


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"  # a widget's output: the view of a live model
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"  # the models' last state, saved in the notebook


def static_outputs(notebook: dict) -> dict:
    """A copy of an executed notebook (nbformat 4, as a dict) as a page without a kernel shows it:
    widget views and the widgets' saved state go (they need a kernel, or a widget manager from the
    web), so each widget shows its stand-in (`FigureSlider`); a progress bar (tqdm's: text, bar,
    text) is drawn as it ended, from the saved state; any other widget shows its text."""
    notebook = copy.deepcopy(notebook)
    state = notebook["metadata"].pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in notebook["cells"]:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).pop(WIDGET_VIEW, None)
            if view and "text/html" not in out["data"] and (bar := _progress_bar(view["model_id"], state)):
                out["data"]["text/html"] = bar
    return notebook


def _progress_bar(model_id: str, state: dict) -> str | None:
    """The HTML for a saved box of HTML texts and progress bars (tqdm.notebook's), or None."""
    box = state.get(model_id, {})
    parts = []
    for child in box.get("state", {}).get("children", []) if box.get("model_name") == "HBoxModel" else []:
        model = state.get(child.removeprefix("IPY_MODEL_"), {})
        values = model.get("state", {})
        if model.get("model_name") == "HTMLModel":
            parts.append(f"<span>{values.get('value', '')}</span>")
        elif model.get("model_name") in ("FloatProgressModel", "IntProgressModel"):
            parts.append(f'<progress value="{values.get("value", 0)}" max="{values.get("max", 100)}"></progress>')
        else:
            return None
    return f'<div class="minidiff-progress">{" ".join(parts)}</div>' if parts else None


def timestep_slider(x0: Tensor, schedule: NoiseSchedule, seed: int = 0, frames: int = 11) -> FigureSlider:
    """A slider over t that redraws `timestep_panels` with the same noise: live in a kernel, and
    in a page without one a stand-in with its own slider over `frames` timesteps from 0 to T-1."""
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0)
    return FigureSlider(lambda t: timestep_panels(x0, schedule, t, noise), frames=frames, t=range(schedule.T))


def plot_trajectories(traj: Trajectory, data: Tensor | None = None, n_paths: int = 30) -> Figure:
    """2-D sampling paths from x_T (grey dots) to the samples (blue), over the data (orange)."""
    xs = traj.xs  # (steps + 1, B, 2)
    fig, ax = plt.subplots(figsize=(5, 5))
    if data is not None:
        ax.scatter(*data.T, s=2, alpha=0.3, color="tab:orange", label="data")
    for k in range(min(n_paths, xs.shape[1])):
        ax.plot(xs[:, k, 0], xs[:, k, 1], lw=0.7, color="k", alpha=0.4)
    ax.scatter(*xs[0, :n_paths].T, s=10, color="grey", label="x_T (noise)")
    ax.scatter(*xs[-1, :n_paths].T, s=10, color="tab:blue", label="x_0 (sample)")
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def x0_prediction_grid(traj: Trajectory, n_cols: int = 6, lim: float = 4) -> Figure:
    """Top row: x_t at a few steps; bottom row: the model's prediction x̂0 made from it."""
    picks = torch.linspace(0, len(traj.steps) - 1, n_cols).round().long().tolist()
    fig, axes = plt.subplots(2, n_cols, figsize=(2.2 * n_cols, 4.6), squeeze=False)
    for col, k in enumerate(picks):
        step = traj.steps[k]
        _draw(axes[0, col], step.x_t if step.x_t.ndim == 2 else step.x_t[0], f"x_t, t = {step.t:.0f}", lim=lim)
        _draw(
            axes[1, col],
            step.x0_hat if step.x_t.ndim == 2 else step.x0_hat[0],
            "x̂0 from it",
            lim=lim,
            color="tab:green",
        )
    fig.tight_layout()
    return fig


def animate_2d(traj: Trajectory, path: str | None = None, fps: int = 12, frames: int = 40, lim: float = 4):
    """A GIF of a 2-D reverse process (x_t on the left, x̂0 on the right).

    Writes the GIF to `path` if given and returns it embedded in an HTML <img> (a data URL),
    so it plays in the notebook and in exported HTML alike.
    """
    from IPython.display import HTML

    picks = torch.linspace(0, len(traj.steps) - 1, frames).round().long().tolist()
    fig, (a, b) = plt.subplots(1, 2, figsize=(7, 3.6))

    def frame(k: int) -> None:
        step = traj.steps[picks[k]]
        a.clear(), b.clear()
        _draw(a, step.x_next, f"x_t after step t = {step.t:.0f}", lim=lim)
        _draw(b, step.x0_hat, "prediction x̂0", lim=lim, color="tab:green")

    anim = FuncAnimation(fig, frame, frames=len(picks))
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "reverse.gif"
        anim.save(target, writer=PillowWriter(fps=fps))
        data = target.read_bytes()
    plt.close(fig)
    if path:
        write_atomic(Path(path), data)
    return HTML(f'<img src="data:image/gif;base64,{base64.b64encode(data).decode()}" alt="reverse process">')


def denoising_grid(traj: Trajectory, n_images: int = 4, n_steps: int = 8) -> Figure:
    """For a few images, x_t (top of each pair of rows) and the prediction x̂0 made from it
    (bottom), at `n_steps` steps spread over a sampling run of images."""
    picks = torch.linspace(0, len(traj.steps) - 1, n_steps).round().long().tolist()
    fig, axes = plt.subplots(2 * n_images, n_steps, figsize=(1.3 * n_steps, 2.6 * n_images), squeeze=False)
    for col, k in enumerate(picks):
        step = traj.steps[k]
        for b in range(n_images):
            _draw(axes[2 * b, col], step.x_t[b], f"t = {step.t:.0f}" if b == 0 else "")
            _draw(axes[2 * b + 1, col], step.x0_hat[b])
    for b in range(n_images):
        axes[2 * b, 0].set_ylabel("x_t", rotation=0, ha="right")
        axes[2 * b + 1, 0].set_ylabel("x̂0", rotation=0, ha="right")
    fig.tight_layout()
    return fig


def image_rows(rows: dict[str, Tensor], nrow: int = 16) -> Figure:
    """One row of images per entry of `rows`, {title: images (B, C, H, W) in [-1, 1]}, each
    tiled `nrow` wide and titled on the left: e.g. the same seeds at several guidance scales."""
    fig, axes = plt.subplots(
        len(rows),
        1,
        figsize=(0.75 * nrow, 0.85 * len(rows) * math.ceil(max(len(x) for x in rows.values()) / nrow)),
        squeeze=False,
    )
    for ax, (title, images) in zip(axes[:, 0], rows.items(), strict=True):
        ax.imshow(image_grid(images.detach().cpu().float(), nrow).squeeze(-1).numpy(), cmap="gray")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=10)
    fig.tight_layout()
    return fig


def image_slider(frames: dict[float, Tensor], description: str = "w", nrow: int = 16) -> FigureSlider:
    """A slider over precomputed image batches, {value: images (B, C, H, W)}: moving it shows the
    batch of that value (e.g. samples at each guidance scale), drawn by `image_rows`. Live in a
    kernel; in a page without one, a stand-in with its own slider over every value."""

    def draw(**value: float) -> Figure:
        return image_rows({f"{description} = {value[description]:g}": frames[value[description]]}, nrow)

    return FigureSlider(draw, frames=len(frames), **{description: list(frames)})


class LiveLoss:
    """A training callback, callback(step, loss, model), that redraws the loss curve in the
    notebook every `every` steps (one figure, updated in place); `ylabel` names what the loss
    is (e.g. "MSE on v" for a v-prediction run)."""

    def __init__(self, every: int = 25, window: int = 50, ylabel: str = "training loss"):
        self.every, self.window, self.ylabel = every, window, ylabel
        self.losses: list[float] = []
        self.handle = None

    def __call__(self, step: int, loss: float, model=None) -> None:
        self.losses.append(loss)
        if step % self.every == 0:
            self.draw()

    def draw(self) -> None:
        from IPython.display import display

        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(self.losses, alpha=0.3, label="loss per batch")
        w = min(self.window, len(self.losses))
        smooth = torch.tensor(self.losses).unfold(0, w, 1).mean(1)
        ax.plot(range(w - 1, len(self.losses)), smooth, label=f"mean of {w}")
        ax.set(xlabel="training step", ylabel=self.ylabel, yscale="log")
        ax.legend()
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 1) -> Tensor:
    """Tile images (B, C, H, W) in [-1, 1] into one (H', W', C) image in [0, 1], nrow per row
    (default: a square), on a white background."""
    B, C, H, W = images.shape
    nrow = nrow or math.ceil(math.sqrt(B))
    rows = math.ceil(B / nrow)
    grid = images.new_ones(C, pad + rows * (H + pad), pad + nrow * (W + pad))  # (C, H', W')
    for i, image in enumerate((images.clamp(-1, 1) + 1) / 2):
        r, c = divmod(i, nrow)
        grid[:, pad + r * (H + pad) : (r + 1) * (H + pad), pad + c * (W + pad) : (c + 1) * (W + pad)] = image
    return grid.permute(1, 2, 0)  # (H', W', C)


def animate_clips(clips: Tensor, nrow: int = 8, fps: int = 4, scale: int = 4, path: str | Path | None = None):
    """Clips (B, F, C, H, W) in [-1, 1] as one looping GIF: frame f shows frame f of every clip, tiled
    nrow per row (`image_grid`), each pixel enlarged `scale` times. Writes it to `path` if given and
    returns it embedded in an HTML <img> (a data URL): it plays in the notebook and in exported HTML."""
    from IPython.display import HTML
    from PIL import Image

    if clips.ndim != 5:
        raise ValueError(f"clips must have shape (B, F, C, H, W), got {tuple(clips.shape)}")
    frames = []
    for f in range(clips.shape[1]):
        grid = image_grid(clips[:, f].detach().float().cpu(), nrow)  # (H', W', C) in [0, 1]
        grid = grid.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
        pixels = (grid.expand(*grid.shape[:2], 3) * 255).round().byte().numpy()
        frames.append(Image.fromarray(pixels))
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=1000 // fps, loop=0)
    if path:
        write_atomic(Path(path), buffer.getvalue())
    return HTML(f'<img src="data:image/gif;base64,{base64.b64encode(buffer.getvalue()).decode()}" alt="clips">')


IMAGE_FORMATS = ("png", "jpg", "jpeg", "pdf", "svg")  # what `save_samples` writes, by the file's extension


def save_sounds(spectrograms: Tensor, path: str | Path, gap: float = 0.1) -> Path:
    """Sound spectrograms (B, 1, BINS, FRAMES) of `minidiff.data.sounds` as one WAV file: each turned
    into a waveform (Griffin-Lim, `to_waveform`), peak-normalised to 0.9, one after another with `gap`
    seconds of silence between them; 16-bit PCM at SAMPLE_RATE. Written atomically; returns the path."""
    if spectrograms.ndim != 4 or tuple(spectrograms.shape[1:]) != (1, BINS, FRAMES):
        got = tuple(spectrograms.shape)
        raise ValueError(f"a WAV file needs sound spectrograms (B, 1, {BINS}, {FRAMES}), got {got}")
    waves = to_waveform(spectrograms.detach().float().cpu())  # (B, N_SAMPLES)
    waves = 0.9 * waves / waves.abs().amax(1, keepdim=True).clamp(min=1e-8)
    silence = torch.zeros(len(waves), round(gap * SAMPLE_RATE))
    pcm = (torch.cat([waves, silence], 1).flatten() * 32767).round().to(torch.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.numpy().tobytes())
    return write_atomic(Path(path), buffer.getvalue())


def save_samples(x: Tensor, path: str | Path) -> Path:
    """Save samples as one picture (PNG by default; the extension picks the format among
    IMAGE_FORMATS): images (B, 1 or 3, H, W) in [-1, 1] as a grid (enlarged to about 512 pixels
    wide), clips (B, F, C, H, W) as a grid with one clip per row, 2-D points (B, 2) as a scatter
    plot; to a .wav file, sound spectrograms as sound (`save_sounds`). Written atomically; returns the path."""
    path = Path(path)
    kind = path.suffix.lower().lstrip(".") or "png"
    if kind == "wav":
        return save_sounds(x, path)
    if kind not in IMAGE_FORMATS:
        raise ValueError(f"{path}: unknown picture format {path.suffix!r}; use one of .{', .'.join(IMAGE_FORMATS)} "
                         "(or .wav for sounds)")
    x = x.detach().float().cpu()
    buffer = io.BytesIO()
    nrow = None
    if x.ndim == 5 and x.shape[2] in (1, 3):  # clips (B, F, C, H, W): one row of frames per clip
        x, nrow = x.flatten(0, 1), x.shape[1]
    if x.ndim == 2 and x.shape[1] == 2:
        fig = Figure(figsize=(4, 4))
        ax = fig.subplots()
        ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.6)
        ax.set_aspect("equal")
        fig.savefig(buffer, format=kind, dpi=100)
    elif x.ndim == 4 and x.shape[1] in (1, 3):
        grid = image_grid(x, nrow)  # (H', W', C)
        scale = max(1, 512 // grid.shape[1])
        grid = grid.repeat_interleave(scale, 0).repeat_interleave(scale, 1)  # nearest-neighbour enlargement
        matplotlib.image.imsave(buffer, grid.squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1, format=kind)
    else:
        raise ValueError(f"x must be images (B, 1 or 3, H, W), clips (B, F, 1 or 3, H, W) or 2-D points (B, 2), "
                         f"got shape {tuple(x.shape)}")
    return write_atomic(path, buffer.getvalue())
