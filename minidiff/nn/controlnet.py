"""ControlNet (Zhang et al. 2023, arXiv:2302.05543): steer a trained U-Net with a control image.

The trained U-Net stays frozen. Beside it runs a trainable *copy* of its encoder (the way down
and the middle), started from the same weights, that also sees the control image c (here: where
the shape should be). The copy's features are added to the frozen model's skips through
convolutions whose weights and biases start at zero ("zero convolutions", their §3.1):

    h_c   = copy.encode(x_t + Z_in(E(c)))          E: a small conv net, c → the copy's first width
    skip_i ← skip_i + Z_i(h_c,i)    for every skip of the frozen encoder, and its middle output too
    out   = frozen decoder(skips, middle)

At the start every Z is zero, so the controlled model's output is the frozen model's, bit for
bit: training cannot harm the base, and the copy learns how to use c from a working start. A
zero convolution still receives a gradient (its input is not zero), so it leaves zero on the
first step, and the rest of the branch follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from minidiff._checks import check_fields, check_finite
from minidiff.nn.attention import zero_init
from minidiff.nn.layers import LabelConditioned
from minidiff.nn.unet import UNet, UNetConfig


@dataclass
class ControlNetConfig:
    """A `ControlledUNet`: the frozen U-Net's config and the control image's channels."""

    unet: UNetConfig = field(default_factory=lambda: UNetConfig(in_channels=3))
    control_channels: int = 1  # channels of the control image (1: a mask)
    hint_channels: int = 16  # width of E, the small network that reads the control image

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):  # rebuilt from a checkpoint's JSON
            self.unet = UNetConfig(**self.unet)
        check_fields(self)
        for name in ("control_channels", "hint_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")


class ControlledUNet(LabelConditioned, nn.Module):
    """model(x_t, t, y=None, context=None, context_mask=None, control=None) → the frozen U-Net's
    prediction, steered by `control`, a (B, control_channels, H, W) image in [-1, 1] (for a mask:
    +1 where the shape should be, -1 elsewhere). control=None gives the frozen U-Net's output.

    `base` is the frozen U-Net; `copy` the trainable copy of its encoder; `hint` reads the control
    image (E, ending in Z_in); `zero_skips` / `zero_mid` are the zero convolutions Z_i. Build one
    from a trained U-Net with `ControlledUNet.from_base`.
    """

    def __init__(self, config: ControlNetConfig | None = None):
        super().__init__()
        self.config = c = config or ControlNetConfig()
        self.base = UNet(c.unet).requires_grad_(False)
        self.copy = UNet(c.unet)
        del self.copy.up, self.copy.out  # the copy is an encoder: its way up is never used
        C, widths = c.unet.channels, [c.unet.channels * m for m in c.unet.channel_mults]
        self.hint = nn.Sequential(  # E: control image → features at the copy's first width, then Z_in
            nn.Conv2d(c.control_channels, c.hint_channels, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c.hint_channels, c.hint_channels, 3, padding=1), nn.SiLU(),
            zero_init(nn.Conv2d(c.hint_channels, C, 3, padding=1)),
        )
        skip_widths = [w for w in widths for _ in range(c.unet.blocks_per_level)]  # one skip per down block
        self.zero_skips = nn.ModuleList(zero_init(nn.Conv2d(w, w, 1)) for w in skip_widths)
        self.zero_mid = zero_init(nn.Conv2d(widths[-1], widths[-1], 1))
        if c.unet.channels_last:
            self.to(memory_format=torch.channels_last)

    @classmethod
    def from_base(cls, base: UNet, control_channels: int = 1) -> ControlledUNet:
        """A ControlledUNet around a trained U-Net: its weights frozen in `base`, copied into `copy`;
        the zero convolutions at zero, so the new model's output is exactly the base's."""
        if not isinstance(base, UNet):
            raise TypeError(f"base must be a UNet, got {type(base).__name__}")
        model = cls(ControlNetConfig(base.config, control_channels)).to(next(base.parameters()))
        model.load_base(base)
        return model

    @torch.no_grad()
    def load_base(self, base: UNet) -> None:
        """Put a trained U-Net's weights (of this model's config) into `base` and the copy's encoder."""
        if not isinstance(base, UNet) or base.config != self.config.unet:
            got = base.config if isinstance(base, UNet) else type(base).__name__
            raise ValueError(f"base must be a UNet with config {self.config.unet}, got {got}")
        self.base.load_state_dict(base.state_dict())
        self.copy.load_state_dict({k: v for k, v in base.state_dict().items() if not k.startswith(("up.", "out."))})

    @property
    def label_embedding(self) -> nn.Embedding | None:  # the base's: labels mean what they meant to it
        return self.base.label_embedding

    def forward(
        self,
        x_t: Tensor,
        t: Tensor,
        y: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        control: Tensor | None = None,
    ) -> Tensor:
        if control is None:
            return self.base(x_t, t, y, context, context_mask)
        self.base.check_inputs(x_t, t, y, context, context_mask)
        self.check_control(control, x_t)
        with self.base.autocast(x_t):
            emb = self.base.embed(t, y)  # (B, E)
            h, skips = self.base.encode(x_t, emb, context, context_mask)  # frozen: (B, C_low, …), skips
            hint = self.hint(control.to(x_t.dtype))  # (B, C, H, W); zero at the start (Z_in)
            h_c, skips_c = self.copy.encode(x_t, self.copy.embed(t, y), context, context_mask, hint)
            skips = [s + z(s_c) for s, s_c, z in zip(skips, skips_c, self.zero_skips, strict=True)]
            h = h + self.zero_mid(h_c)
            return self.base.decode(h, skips, emb, context, context_mask).to(x_t.dtype)  # (B, C_out, H, W)

    def check_control(self, control: Tensor, x_t: Tensor) -> None:
        """Raise ValueError unless control is a finite (B, control_channels, H, W) image for x_t."""
        want = (x_t.shape[0], self.config.control_channels, *x_t.shape[2:])
        if not torch.is_tensor(control) or tuple(control.shape) != want:
            got = tuple(control.shape) if torch.is_tensor(control) else type(control).__name__
            raise ValueError(f"control must be a tensor of shape {want} (one control image per sample), got {got}")
        check_finite("control", control)


def with_control(model, control: Tensor):
    """The denoiser (x_t, t, **condition) ↦ model(x_t, t, control=control, **condition) for a
    batch of control images (B, C, H, W); a batch of k·B samples (classifier-free guidance runs
    the unconditional and conditional halves together) gets each control image k times, so both
    predictions are steered alike."""

    def controlled(x_t: Tensor, t: Tensor, **condition: Tensor) -> Tensor:
        if len(x_t) % len(control):
            raise ValueError(f"x_t has a batch of {len(x_t)}, not a multiple of the {len(control)} control images")
        return model(x_t, t, control=control.repeat(len(x_t) // len(control), 1, 1, 1), **condition)

    return controlled
