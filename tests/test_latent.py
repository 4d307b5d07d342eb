"""Tests for minidiff.latent: scaled encode/decode, masks on the latent grid, latent recipes and
latent inpainting."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import minidiff.pretrained
import minidiff.recipes
from minidiff.checkpoint import model_from_config
from minidiff.latent import decode, encode, inpaint_latent, latent_mask
from minidiff.nn import UNet, UNetConfig
from minidiff.nn.vae import VAE, VAEConfig
from minidiff.recipes import get_recipe
from minidiff.schedules import NoiseSchedule

TINY = VAEConfig(channels=8, channel_mults=(1, 2, 2), groups=4)


def tiny_vae(scale: float = 0.6) -> VAE:
    torch.manual_seed(0)
    vae = VAE(TINY).eval()
    vae.scale_factor.fill_(scale)
    return vae


def test_encode_scales_the_posterior_mean_and_decode_unscales():
    vae, x = tiny_vae(), torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = encode(vae, x, batch_size=2)
    with torch.no_grad():
        assert torch.allclose(z, vae.encode(x).mean * 0.6, atol=1e-5) and z.shape == (5, 4, 4, 4)
        assert torch.allclose(decode(vae, z, batch_size=2), vae.decode(z / 0.6), atol=1e-5)
    assert encode(vae, x.double()).dtype == torch.float64  # returned in the input's dtype
    with pytest.raises(ValueError, match=r"z must have shape \(B, 4, H, W\)"):
        decode(vae, torch.zeros(1, 3, 4, 4))


def test_scaled_latents_have_unit_variance_after_set_scale_factor():
    vae, x = tiny_vae(1.0), torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    vae.set_scale_factor(x)
    assert encode(vae, x).double().std().item() == pytest.approx(1.0, abs=1e-5)


def test_latent_mask_keeps_a_cell_only_if_all_its_pixels_are_known():
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, :4, :4] = 1  # one whole 4×4 block known
    mask[0, :, 4:, 4:] = 1
    mask[0, :, 7, 7] = 0  # … but one pixel of it unknown
    mask[1] = 1
    small = latent_mask(mask, tiny_vae())
    assert small.shape == (2, 1, 2, 2) and small.dtype == mask.dtype
    assert small[0, 0].tolist() == [[1, 0], [0, 0]] and small[1].eq(1).all()
    assert torch.equal(latent_mask(mask.bool(), 4), small.bool())  # bool in, bool out; the factor alone works
    assert latent_mask(torch.ones(1, 1, 32, 32), 8).shape == (1, 1, 4, 4)  # Stable Diffusion's factor


@pytest.mark.parametrize(
    "mask, message",
    [
        (torch.ones(2, 3, 8, 8), r"mask must have shape \(B, 1, H, W\), one value per pixel, got \(2, 3, 8, 8\)"),
        (torch.ones(8, 8), r"got \(8, 8\)"),
        (torch.ones(1, 1, 8, 6), r"divisible by the VAE's factor 4, got 8×6"),
        (torch.full((1, 1, 8, 8), 0.5), "mask must hold only 0 and 1"),
        (torch.full((1, 1, 8, 8), -1.0), "mask must hold only 0 and 1"),
        ("mask", "mask must have shape"),
    ],
)
def test_bad_masks_are_named(mask, message):
    with pytest.raises(ValueError, match=message):
        latent_mask(mask, tiny_vae())


def test_latent_inpainting_keeps_the_known_pixels_exactly():
    vae = tiny_vae()
    torch.manual_seed(1)
    net = UNet(UNetConfig(in_channels=4, channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, heads=2))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :, :6] = 1  # the left 6 columns: one and a half latent cells
    out = inpaint_latent(net.eval(), vae, images, mask, NoiseSchedule.cosine(100), steps=4, generator=torch.Generator())
    known = mask.bool().expand_as(images)
    assert out.shape == images.shape and torch.equal(out[known], images[known])
    assert not torch.equal(out[~known], images[~known])


@pytest.mark.parametrize(("name", "vae_name", "side"), [("shapes_latent", "vae_shapes", 8),
                                                       ("shapes_latent_f8", "vae_shapes_f8", 4)])
def test_the_latent_recipes_train_on_the_latents_of_their_vae(monkeypatch, name, vae_name, side):
    recipe = dataclasses.replace(get_recipe(name), n=4)
    assert recipe.latent == vae_name and recipe.condition == "label"
    shipped = model_from_config(get_recipe(vae_name).model).eval()
    shipped.scale_factor.fill_(0.5)
    asked = []
    monkeypatch.setattr(minidiff.recipes, "load_vae", lambda name: asked.append(name) or shipped)  # the shipped VAE
    z, y = recipe.load_data()
    images, labels = dataclasses.replace(recipe, latent=None).load_data()
    assert asked == [vae_name] and z.shape == (4, 4, side, side) and torch.equal(y, labels)
    assert torch.allclose(z, encode(shipped, images))
    net = model_from_config(recipe.model)
    assert net(z[:2], torch.tensor([0, recipe.T - 1]), y[:2]).shape == (2, 4, side, side)


def test_a_latent_recipe_without_its_shipped_vae_says_how_to_make_it(tmp_path):
    with pytest.raises(ValueError, match="unknown VAE 'vae_shapes'; shipped: none.*publish_vae"):
        minidiff.pretrained.load_vae("vae_shapes", weights_dir=tmp_path)
