"""A small convolutional VAE: the "first stage" of latent diffusion.

Latent diffusion (Rombach et al. 2022, arXiv:2112.10752, §3) trains an autoencoder once,
then runs the whole diffusion model — training, sampling, guidance — on its latents z
instead of on pixels. Their autoencoder is a VAE (Kingma & Welling 2014, arXiv:1312.6114)
with a very light KL penalty: the latent must reconstruct the image well and stay smooth,
so that the decoder turns any point near the latents of real images into a plausible image.

    x (B, 3, 32, 32) ─ encoder ─► q(z|x) = N(μ, σ²) ─ sample z ─ decoder ─► x̂ (B, 3, 32, 32)
                                   μ, log σ² : (B, 4, 8, 8)

Notation (Kingma & Welling 2014):

    x        an image in [-1, 1], (B, C, H, W)
    mean     μ(x), the mean of the posterior q(z|x), (B, c, H/f, W/f) with f the downsampling factor
    logvar   log σ²(x), its log-variance, same shape
    z        a latent, z = μ + σ·ε with ε ~ N(0, I) (the reparameterisation trick, §2.4)
    x_hat    x̂ = decoder(z), the reconstruction
    D        C·H·W, the number of values in one image

Loss (per image, averaged over the batch):

    L = (‖x - x̂‖² + kl_weight · KL(q(z|x) ‖ N(0, I))) / D
    KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ (μ² + σ² - 1 - log σ²)           (Kingma & Welling 2014, App. B)

This is the negative ELBO (times 2s²/D) for a Gaussian decoder p(x|z) = N(x̂, s²I) with
s² = kl_weight/2: kl_weight says how precisely the decoder is asked to reconstruct. The
default 1e-3 is s ≈ 0.022 on the [-1, 1] scale, about 3 grey levels out of 255: finer
detail than that is not worth the latent's information, so the latent stays smooth.
Measured on the shapes (a VAE with channels=16, channel_mults=(1, 2, 4), 300 steps): kl_weight
1e-4, 1e-3 and 1e-2 gave held-out MSE 0.0113, 0.0115 and 0.0123, with posterior noise σ
of 4%, 6% and 21% of the spread of the latent means. 1e-2 already costs reconstruction;
1e-4 buys nothing measurable and leaves the latent less regular.

The latents of a trained VAE do not have unit variance, which the diffusion model's
noise schedule assumes. `scale_factor` (a buffer, saved with the weights) is set after
training to 1/std of the posterior means of the training images, so that scaled latents
scale_factor·μ have unit variance; Stable Diffusion's 0.18215 is the same number for its
VAE (Rombach et al. 2022, §4.3.2 and App. G). `minidiff.latent.encode` / `.decode` apply it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minidiff._checks import check_fields, check_finite
from minidiff.objective import Objective

LOGVAR_RANGE = (-30.0, 20.0)  # log σ² is clamped here, so σ never under- or overflows (as in Stable Diffusion)


@dataclass
class VAEConfig:
    """The architecture of a `VAE` and the weight of its KL term. The defaults (downsampling
    factor 4) turn 3×32×32 images into 4×8×8 latents."""

    in_channels: int = 3  # image channels
    latent_channels: int = 4  # channels c of the latent
    channels: int = 32  # base width C
    channel_mults: tuple[int, ...] = (1, 2, 2)  # level i has width C·mults[i] at H/2^i; factor f = 2^(levels-1)
    blocks_per_level: int = 1  # residual blocks per level, in the encoder and in the decoder
    groups: int = 8  # GroupNorm groups
    kl_weight: float = 1e-3  # weight of KL(q(z|x) ‖ N(0, I)) against ‖x - x̂‖², see the module docstring
    channels_last: bool = False  # NHWC memory format (faster convolutions on some CPUs); weights unchanged

    def __post_init__(self) -> None:
        check_fields(self)
        self.channel_mults = tuple(self.channel_mults)
        for name in ("in_channels", "latent_channels", "channels", "blocks_per_level", "groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise ValueError(f"channel_mults must be a non-empty tuple of positive integers, got {self.channel_mults}")
        if any(self.channels * m % self.groups for m in self.channel_mults):
            raise ValueError(
                f"every width channels·mult must be divisible by groups={self.groups}, got "
                f"{[self.channels * m for m in self.channel_mults]}"
            )
        if not self.kl_weight >= 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight!r}")

    @property
    def factor(self) -> int:
        """f: how many times smaller the latent's height and width are than the image's."""
        return 2 ** (len(self.channel_mults) - 1)


class DiagonalGaussian(NamedTuple):
    """The posterior q(z|x) = N(mean, exp(logvar)), one Gaussian per latent value.

    A named tuple, so `mean, logvar = vae.encode(x)` works too.
    """

    mean: Tensor  # μ, (B, c, h, w)
    logvar: Tensor  # log σ², (B, c, h, w)

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)  # σ

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """z = μ + σ·ε, ε ~ N(0, I): the reparameterisation trick (Kingma & Welling 2014, §2.4)."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps  # (B, c, h, w)

    def kl(self) -> Tensor:
        """KL(q(z|x) ‖ N(0, I)) = ½ Σ (μ² + σ² - 1 - log σ²), summed over each sample's latent: (B,)."""
        kl = 0.5 * (self.mean**2 + self.logvar.exp() - 1 - self.logvar)  # (B, c, h, w), App. B
        return kl.flatten(1).sum(1)  # (B,)


class ResBlock(nn.Module):
    """x → skip(x) + conv₂(SiLU(GN(conv₁(SiLU(GN(x)))))): the U-Net's residual block without
    a time embedding, as in Stable Diffusion's autoencoder."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = self.conv2(F.silu(self.norm2(h)))  # (B, C_out, H, W)
        return self.skip(x) + h


class Upsample(nn.Module):
    """Double H and W (nearest neighbour), then a 3×3 convolution to c_out channels: no
    checkerboard artefacts, unlike a transposed convolution of stride 2."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C_out, 2H, 2W)


class VAE(nn.Module):
    """A KL-regularised convolutional autoencoder (Kingma & Welling 2014; Rombach et al. 2022, §3).

        encoder  x (B, C, H, W) → [ResBlock ×n, stride-2 conv] per level → ResBlock → (μ, log σ²)
        decoder  z (B, c, H/f, W/f) → ResBlock → [ResBlock ×n, upsample] per level → x̂ (B, C, H, W)

    `encode(x)` gives the posterior q(z|x) (a `DiagonalGaussian`), `decode(z)` the image,
    `forward(x)` both, through a sample of z. `scale_factor` is 1 until `set_scale_factor`
    is called after training. Outputs follow the input's device and dtype.
    """

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = c = config or VAEConfig()
        widths = [c.channels * m for m in c.channel_mults]  # C_i
        levels = len(widths)
        self.register_buffer("scale_factor", torch.ones(()))  # 1/std of the latent means, see the module docstring

        # encoder
        self.enc_in = nn.Conv2d(c.in_channels, c.channels, 3, padding=1)
        self.enc_levels = nn.ModuleList()
        w = c.channels
        for i, w_i in enumerate(widths):
            blocks: list[nn.Module] = [ResBlock(w if j == 0 else w_i, w_i, c.groups) for j in range(c.blocks_per_level)]
            if i < levels - 1:
                blocks.append(nn.Conv2d(w_i, w_i, 3, stride=2, padding=1))  # halve H and W
            self.enc_levels.append(nn.Sequential(*blocks))
            w = w_i
        self.enc_mid = ResBlock(w, w, c.groups)
        self.enc_out = nn.Sequential(
            nn.GroupNorm(c.groups, w), nn.SiLU(), nn.Conv2d(w, 2 * c.latent_channels, 3, padding=1)
        )

        # decoder
        self.dec_in = nn.Conv2d(c.latent_channels, w, 3, padding=1)
        self.dec_mid = ResBlock(w, w, c.groups)
        self.dec_levels = nn.ModuleList()
        for i in reversed(range(levels)):
            blocks = [ResBlock(w if j == 0 else widths[i], widths[i], c.groups) for j in range(c.blocks_per_level)]
            w = widths[i]
            if i > 0:
                blocks.append(Upsample(w, widths[i - 1]))  # double H and W
                w = widths[i - 1]
            self.dec_levels.append(nn.Sequential(*blocks))
        self.dec_out = nn.Sequential(nn.GroupNorm(c.groups, w), nn.SiLU(), nn.Conv2d(w, c.in_channels, 3, padding=1))
        if c.channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def factor(self) -> int:
        """f: the latent is H/f × W/f for an H × W image."""
        return self.config.factor

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The shape (c, H/f, W/f) of the latent of one image of shape (C, H, W)."""
        _, H, W = image_shape
        return (self.config.latent_channels, H // self.factor, W // self.factor)

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """The posterior q(z|x) of images x (B, C, H, W) in [-1, 1], H and W divisible by f:
        a `DiagonalGaussian` with mean and logvar of shape (B, c, H/f, W/f)."""
        self._check("x", x, self.config.in_channels, self.factor)
        h = self.enc_in(self._memory_format(x))  # (B, C, H, W)
        for level in self.enc_levels:
            h = level(h)  # (B, C_i, H/2^(i+1), W/2^(i+1)); the last level keeps its resolution
        mean, logvar = self.enc_out(self.enc_mid(h)).chunk(2, dim=1)  # 2 × (B, c, H/f, W/f)
        return DiagonalGaussian(mean.contiguous(), logvar.clamp(*LOGVAR_RANGE).contiguous())

    def decode(self, z: Tensor) -> Tensor:
        """Images x̂ (B, C, H·f, W·f) from latents z (B, c, H, W) (unscaled: divide scaled
        latents by `scale_factor` first, as `minidiff.latent.decode` does)."""
        self._check("z", z, self.config.latent_channels, 1)
        h = self.dec_mid(self.dec_in(self._memory_format(z)))  # (B, C_last, H, W)
        for level in self.dec_levels:
            h = level(h)  # (B, C_(i-1), 2H, 2W) at each level but the last
        return self.dec_out(h).contiguous()  # (B, C, H·f, W·f)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, DiagonalGaussian]:
        """Reconstruct x through a sample z ~ q(z|x): returns (x̂, q(z|x))."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior  # (B, C, H, W), q(z|x)

    @torch.no_grad()
    def set_scale_factor(self, images: Tensor, batch_size: int = 256) -> float:
        """Set `scale_factor` to 1/std of the posterior means μ of `images` (all their values
        pooled), so that scale_factor·μ has unit variance over these images. Returns it."""
        means = torch.cat([self.encode(x).mean for x in images.split(batch_size)])  # (N, c, h, w)
        std = means.double().std().item()
        if not std > 0:
            raise ValueError("the latent means of these images do not vary: cannot scale them to unit variance")
        self.scale_factor.fill_(1 / std)
        return self.scale_factor.item()  # as stored (in the buffer's dtype)

    def _memory_format(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x

    @staticmethod
    def _check(name: str, x: Tensor, channels: int, factor: int) -> None:
        check_finite(name, x)
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"{name} must have shape (B, {channels}, H, W), got {tuple(x.shape)}")
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"{name}'s height and width must be divisible by {factor} (the VAE halves them "
                f"{int(math.log2(factor))} times), got {x.shape[2]}×{x.shape[3]}"
            )


class VAELoss(NamedTuple):
    """The terms of `vae_loss`, each a scalar tensor."""

    loss: Tensor  # (‖x - x̂‖² + kl_weight·KL)/D, averaged over the batch: what is minimised
    reconstruction: Tensor  # ‖x - x̂‖²/D: the mean squared error per image value
    kl: Tensor  # KL(q(z|x) ‖ N(0, I)) per image (summed over its latent), averaged over the batch


def vae_loss(vae: VAE, x: Tensor, generator: torch.Generator | None = None) -> VAELoss:
    """The VAE's training loss on images x (B, C, H, W), with z drawn from q(z|x) by `generator`:

        L = (‖x - x̂‖² + kl_weight · KL(q(z|x) ‖ N(0, I))) / D,   D = C·H·W

    (see the module docstring: the negative ELBO for a decoder of noise s² = kl_weight/2).
    """
    x_hat, posterior = vae(x, generator)  # (B, C, H, W), q(z|x)
    D = x[0].numel()
    reconstruction = F.mse_loss(x_hat, x)  # ‖x - x̂‖²/D, averaged over the batch
    kl = posterior.kl().mean()  # KL per image, averaged over the batch
    return VAELoss(reconstruction + vae.config.kl_weight * kl / D, reconstruction, kl)


class VAEObjective(Objective):
    """`vae_loss` as a training objective for the engine (`minidiff.train.train`), on data (x,)
    of images. It logs the reconstruction and KL terms of each step; when the run ends it sets
    the EMA VAE's `scale_factor` from the training images (scaled latents get unit variance)."""

    def __init__(self) -> None:
        self._terms: dict[str, float] = {}

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...], generator: torch.Generator) -> Tensor:
        (x,) = batch
        terms = vae_loss(model, x, generator)
        self._terms = {"reconstruction": terms.reconstruction.item(), "kl": terms.kl.item()}
        return terms.loss

    def describe(self) -> dict[str, str]:
        return {"objective": "vae"}  # kl_weight is part of the model's config, checked with it

    def check(self, model: nn.Module, data: tuple[Tensor, ...]) -> None:
        if not isinstance(model, VAE):
            raise TypeError(f"model must be a minidiff.nn.vae.VAE, got {type(model).__name__}")
        c = model.config.in_channels
        if len(data) != 1 or data[0].ndim != 4 or data[0].shape[1] != c:
            shapes = [tuple(x.shape) for x in data]
            raise ValueError(f"data must be images (N, {c}, H, W) alone, got tensors of shapes {shapes}")

    def terms(self) -> dict[str, float]:
        return self._terms

    def finish(self, ema: nn.Module, data: tuple[Tensor, ...]) -> dict[str, float]:
        return {"scale_factor": ema.set_scale_factor(data[0])}


@torch.no_grad()
def reconstruction_mse(vae: VAE, images: Tensor, batch_size: int = 256) -> float:
    """Mean squared error, per image value, of decoder(μ(x)) against images x (N, C, H, W) in
    [-1, 1]: the deterministic reconstruction through the posterior mean."""
    device = next(vae.parameters()).device
    total = 0.0
    for x in images.split(batch_size):
        x = x.to(device)
        total += float(((vae.decode(vae.encode(x).mean) - x) ** 2).double().sum())
    return total / images.numel()
