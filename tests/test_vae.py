"""Tests for the VAE of latent diffusion: shapes, the KL term, the scale factor, its file format,
resumable training and shipping."""

from __future__ import annotations

import dataclasses
import math
import re
import shutil

import pytest
import torch

from minidiff.checkpoint import CheckpointError, load_checkpoint, model_from_config, save_checkpoint
from minidiff.data import ShapesDataset
from minidiff.files import WeightsError, record_in_manifest, sha256_of
from minidiff.nn import UNet, UNetConfig
from minidiff.nn.vae import VAE, DiagonalGaussian, VAEConfig, VAEObjective, reconstruction_mse, vae_loss
from minidiff.pretrained import VAE_MANIFEST, list_vaes, load_vae, vae_info
from minidiff.publish import publish_vae
from minidiff.recipes import get_recipe, train_recipe
from minidiff.schedules import NoiseSchedule
from minidiff.train import CHECKPOINT, MODEL, TrainConfig, train

TINY = VAEConfig(channels=8, channel_mults=(1, 2, 2), groups=4)  # factor 4, like the shipped one


def tiny_vae(config: VAEConfig = TINY, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(config)


def images(n: int = 16, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1]: learnable by a tiny VAE in a few steps."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 4, size // 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")


class Crash(Exception):
    pass


def test_encode_decode_shapes_and_the_posterior():
    vae = tiny_vae()
    x = images(2, 32)
    posterior = vae.encode(x)
    mean, logvar = posterior  # a named tuple: unpacks too
    assert mean.shape == logvar.shape == (2, 4, 8, 8) == (2, *vae.latent_shape((3, 32, 32)))
    z = posterior.sample(torch.Generator().manual_seed(0))
    assert torch.equal(z, posterior.sample(torch.Generator().manual_seed(0))) and not torch.equal(z, mean)
    assert vae.decode(z).shape == (2, 3, 32, 32)
    x_hat, q = vae(x)
    assert x_hat.shape == x.shape and torch.equal(q.mean, mean)
    assert vae.encode(images(1, 16)).mean.shape == (1, 4, 4, 4)  # any size divisible by 4
    vae64 = tiny_vae().double()
    assert vae64.decode(vae64.encode(x.double()).mean).dtype == torch.float64  # dtype follows the input


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda v: v.encode(torch.zeros(2, 1, 32, 32)), r"x must have shape \(B, 3, H, W\), got \(2, 1, 32, 32\)"),
        (lambda v: v.encode(torch.zeros(3, 32, 32)), r"x must have shape \(B, 3, H, W\), got \(3, 32, 32\)"),
        (lambda v: v.encode(torch.zeros(2, 3, 30, 32)), r"x's height and width must be divisible by 4.*30×32"),
        (lambda v: v.decode(torch.zeros(2, 3, 8, 8)), r"z must have shape \(B, 4, H, W\), got \(2, 3, 8, 8\)"),
        (lambda v: v.encode(torch.full((1, 3, 8, 8), math.nan)), "x contains NaN"),
    ],
)
def test_wrong_inputs_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call(tiny_vae())


def test_config_errors():
    with pytest.raises(ValueError, match="divisible by groups=8"):
        VAEConfig(channels=12)
    with pytest.raises(ValueError, match="kl_weight must be >= 0"):
        VAEConfig(kl_weight=-1.0)
    assert VAEConfig().factor == 4 and VAEConfig(channel_mults=(1, 2, 2, 2)).factor == 8


def test_kl_matches_the_closed_form_and_the_loss_its_formula():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(DiagonalGaussian(mean, logvar).kl(), expected, atol=1e-5)
    assert torch.allclose(DiagonalGaussian(torch.zeros(1, 4), torch.zeros(1, 4)).kl(), torch.zeros(1))  # q = prior

    vae, x = tiny_vae(dataclasses.replace(TINY, kl_weight=0.3)), images(4)
    terms = vae_loss(vae, x, torch.Generator().manual_seed(1))
    posterior = vae.encode(x)
    x_hat = vae.decode(posterior.sample(torch.Generator().manual_seed(1)))
    reconstruction = ((x - x_hat) ** 2).mean()
    assert torch.allclose(terms.reconstruction, reconstruction) and torch.allclose(terms.kl, posterior.kl().mean())
    # L = (‖x - x̂‖² + kl_weight·KL)/D per image, averaged over the batch
    per_image = ((x - x_hat) ** 2).flatten(1).sum(1) + 0.3 * posterior.kl()
    assert torch.allclose(terms.loss, per_image.mean() / x[0].numel())


def test_scale_factor_gives_unit_variance_and_is_saved_with_the_weights(tmp_path):
    vae, x = tiny_vae(), images(64)
    assert vae.scale_factor.item() == 1.0
    s = vae.set_scale_factor(x, batch_size=16)
    assert s != 1.0 and vae.scale_factor.item() == pytest.approx(s)
    with torch.no_grad():
        scaled = vae.encode(x).mean * vae.scale_factor
    assert scaled.double().std().item() == pytest.approx(1.0, abs=1e-5)
    assert "scale_factor" in vae.state_dict()
    loaded = load_checkpoint(save_checkpoint(tmp_path / "vae.safetensors", vae)).model
    assert loaded.scale_factor.item() == vae.scale_factor.item()


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    vae = tiny_vae()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    vae.scale_factor.fill_(0.7)
    assert type(model_from_config(TINY)) is VAE
    path = save_checkpoint(
        tmp_path / "vae.safetensors", vae, step=7, meta={"note": "hi"}, extra={"state.a": torch.arange(3)}
    )
    saved = load_checkpoint(path)
    assert type(saved.model) is VAE and saved.model.config == TINY and not saved.model.training
    assert (saved.step, saved.meta) == (7, {"note": "hi"}) and torch.equal(saved.extra["state.a"], torch.arange(3))
    assert saved.schedule is None and saved.prediction is None and not saved.is_denoiser  # no noise schedule
    x = images(2)
    with torch.no_grad():
        assert torch.equal(saved.model.encode(x).mean, vae.encode(x).mean)
        assert torch.equal(saved.model.decode(vae.encode(x).mean), vae.decode(vae.encode(x).mean))
    target = tiny_vae(seed=5)
    assert load_checkpoint(path, model=target).model is target and torch.equal(target.scale_factor, vae.scale_factor)


def test_corrupt_files_and_other_models_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "vae.safetensors", tiny_vae())
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path / "cut.safetensors")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="width|another config.*channels: checkpoint 8, model 16"):
        load_checkpoint(path, model=VAE(dataclasses.replace(TINY, channels=16)))
    unet_config = UNetConfig(channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, heads=2)
    with pytest.raises(CheckpointError, match="holds a VAE model, but the model given is a UNet"):
        load_checkpoint(path, model=UNet(unet_config))
    vae_file = load_checkpoint(path)  # a VAE file has no noise schedule: no sampler can take it
    assert not vae_file.is_denoiser
    with pytest.raises(CheckpointError, match="this checkpoint holds a VAE, not a diffusion model"):
        _ = vae_file.eps_model
    diffusion = save_checkpoint(tmp_path / "unet.safetensors", UNet(unet_config), NoiseSchedule.linear(10), (1, 8, 8))
    assert load_checkpoint(diffusion).is_denoiser  # a diffusion model's file is one
    with pytest.raises(CheckpointError, match="holds a UNet model, but the model given is a VAE"):
        load_checkpoint(diffusion, model=tiny_vae())
    weights = tmp_path / "weights"  # a diffusion model listed as a VAE is refused by load_vae
    weights.mkdir()
    (weights / "unet.safetensors").write_bytes(diffusion.read_bytes())
    record_in_manifest(weights, VAE_MANIFEST, "unet.safetensors", {"sha256": sha256_of(diffusion.read_bytes())})
    with pytest.raises(CheckpointError, match="unet.safetensors holds a UNet, not a VAE"):
        load_vae("unet", weights_dir=weights)


def test_training_lowers_the_loss():
    vae, x = tiny_vae(), images(64)
    config = TrainConfig(steps=16, batch_size=8, lr=5e-3, warmup=3, ema_decay=0.8)
    seen = []
    ema, losses = train(vae, x, VAEObjective(), config, callbacks=[lambda *a: seen.append(a)])
    assert [s for s, _ in losses] == list(range(1, 17)) and [(s, l) for s, l, _ in seen] == losses
    first, last = (sum(l for _, l in part) / 5 for part in (losses[:5], losses[-5:]))
    assert last < 0.7 * first
    assert ema is not vae and not ema.training and ema.scale_factor.item() != 1.0  # set at the end
    assert reconstruction_mse(ema, x) < reconstruction_mse(tiny_vae(), x)


def test_an_interrupted_run_resumed_ends_where_an_uninterrupted_one_does(tmp_path):
    x = images(32)
    config = TrainConfig(steps=6, batch_size=8, warmup=2, checkpoint_every=2)
    straight = tiny_vae()
    ema, losses = train(straight, x, VAEObjective(), config, out_dir=tmp_path / "a")

    def crash_at_5(step, loss, ema):
        if step == 5:
            raise Crash  # the last checkpoint is step 4's

    with pytest.raises(Crash):
        train(tiny_vae(), x, VAEObjective(), config, out_dir=tmp_path / "b", callbacks=[crash_at_5])
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT).step == 4
    resumed = tiny_vae(seed=123)  # other initial weights: the checkpoint's must win
    ema_b, losses_b = train(resumed, x, VAEObjective(), config, out_dir=tmp_path / "b", resume=True)
    assert losses_b == losses
    for a, b in [(straight, resumed), (ema, ema_b)]:
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(p, q), name
    final = load_checkpoint(tmp_path / "b" / MODEL)
    assert final.step == 6 and final.model.scale_factor.item() == final.meta["scale_factor"] != 1.0
    assert final.meta["scale_factor"] == ema_b.scale_factor.item()
    kl = final.meta["terms"]["kl"]  # the KL of every step, resumed with the run
    assert len(kl) == 6 and kl == load_checkpoint(tmp_path / "a" / MODEL).meta["terms"]["kl"] and min(kl) > 0
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(tiny_vae(), x, VAEObjective(), config, out_dir=tmp_path / "b")
    with pytest.raises(CheckpointError, match=r"lr: checkpoint 0\.001, now 0\.002.*data: checkpoint"):
        train(
            tiny_vae(),
            x + 0.5,
            VAEObjective(),
            dataclasses.replace(config, lr=2e-3),
            out_dir=tmp_path / "b",
            resume=True,
        )
    with pytest.raises(CheckpointError, match=rf"kl_weight: checkpoint {TINY.kl_weight}, model 0.5"):  # in the config
        train(
            tiny_vae(dataclasses.replace(TINY, kl_weight=0.5)),
            x,
            VAEObjective(),
            config,
            out_dir=tmp_path / "b",
            resume=True,
        )


def test_a_vae_recipe_reports_the_held_out_reconstruction_error(capsys):
    """The held-out MSE (once in model.safetensors' meta) is what `train_recipe` prints at the end of a VAE's run."""
    recipe = dataclasses.replace(
        get_recipe("vae_shapes"),
        n=8,
        model=dataclasses.replace(TINY, channels=4, groups=2),
        training=TrainConfig(steps=2, batch_size=4, warmup=1, checkpoint_every=2),
    )
    ema = train_recipe(recipe, device="cpu").ema
    held = recipe.load_heldout()
    printed = re.search(r"reconstruction MSE on (\d+) held-out images: ([0-9.]+)", capsys.readouterr().out)
    assert printed and int(printed[1]) == len(held)
    assert float(printed[2]) == pytest.approx(reconstruction_mse(ema, held), abs=1e-5)


def test_publish_and_load_a_shipped_vae(tmp_path):
    weights = tmp_path / "weights"
    assert list_vaes(weights) == {}
    with pytest.raises(ValueError, match="unknown VAE 'vae_shapes'; shipped: none.*--recipe vae_shapes"):
        load_vae("vae_shapes", weights_dir=weights)
    config = TrainConfig(steps=2, batch_size=4, warmup=1, checkpoint_every=2)
    vae, x = tiny_vae(dataclasses.replace(TINY, channels=4, groups=2)), images(8, 32)
    train(vae, x, VAEObjective(), config, out_dir=tmp_path / "run")
    with pytest.raises(CheckpointError, match="no scale factor yet"):
        publish_vae(tmp_path / "run" / CHECKPOINT, "tiny", "vae_shapes", "1 s", n_heldout=4, weights_dir=weights)
    entry = publish_vae(tmp_path / "run" / MODEL, "tiny", "vae_shapes", "1 s", n_heldout=4, weights_dir=weights)
    assert "tiny" in list_vaes(weights) and vae_info("tiny", weights) == entry
    assert (
        entry["steps"] == 2
        and entry["training_time"] == "1 s"
        and entry["machine"]
        and entry["latent_shape"] == [4, 8, 8]
    )
    assert entry["command"].startswith("python -m minidiff train --recipe vae_shapes")
    loaded = load_vae("tiny", weights_dir=weights)
    held = ShapesDataset(4, 32, seed=1).images
    assert entry["metric"]["heldout_mse"] == pytest.approx(reconstruction_mse(loaded, held))
    assert (
        loaded.scale_factor.item()
        == entry["scale_factor"]
        == load_checkpoint(tmp_path / "run" / MODEL).meta["scale_factor"]
    )
    copy = tmp_path / "copy"
    shutil.copytree(weights, copy)
    data = bytearray((copy / "tiny.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (copy / "tiny.safetensors").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256 does not match"):
        load_vae("tiny", weights_dir=copy)


@pytest.mark.parametrize(("name", "f"), [("vae_shapes", 4), ("vae_shapes_f8", 8)])
def test_the_vae_recipes_fit_their_data(name, f):
    """f = 8 is Stable Diffusion's compression: 3×32×32 = 3,072 values → 4×4×4 = 64, 48× fewer."""
    recipe = get_recipe(name)
    vae = model_from_config(recipe.model)
    assert isinstance(vae, VAE) and vae.factor == f
    x = dataclasses.replace(recipe, n=2).load_data()[0]
    assert x.shape == (2, 3, 32, 32) and vae.encode(x).mean.shape == (2, 4, 32 // f, 32 // f)
    assert vae.decode(vae.encode(x).mean).shape == x.shape
    assert recipe.load_heldout(3).shape == (3, 3, 32, 32)
    assert not torch.equal(recipe.load_heldout(2), x)  # another seed
