"""`minidiff.generate`, the one path from a model to pictures: the command line gives the same
bytes, the chain written out by hand gives the same tensors, and misuse is named."""

from __future__ import annotations

import pytest
import torch

from minidiff import load_pretrained, load_vae, noise_levels
from minidiff.__main__ import main
from minidiff.checkpoint import CheckpointError, load_checkpoint
from minidiff.files import WEIGHTS_DIR
from minidiff.generate import condition, generate
from minidiff.guidance import classifier_free_guidance
from minidiff.latent import decode
from minidiff.samplers import SAMPLERS
from minidiff.viz import save_samples


@pytest.mark.parametrize(
    "name, args, kwargs",
    [
        ("shapes_class", ["--label", "3", "--guidance", "4"], {"label": 3, "guidance": 4.0}),
        ("shapes_text", ["--prompt", "a large red star"], {"prompt": "a large red star"}),
        ("shapes_latent", ["--label", "5", "--sampler", "ddpm"], {"label": 5, "sampler": "ddpm"}),
        ("digits", ["--sampler", "euler_ancestral", "--seed", "7"], {"sampler": "euler_ancestral", "seed": 7}),
    ],
)
def test_generate_gives_the_same_bytes_as_the_command_line(tmp_path, name, args, kwargs):
    cli = tmp_path / "cli.png"
    common = ["--n", "3", "--steps", "4", "--device", "cpu", "--out", str(cli)]
    assert main(["sample", "--checkpoint", str(WEIGHTS_DIR / f"{name}.safetensors"), *common, *args]) == 0
    images = generate(name, 3, steps=4, **kwargs)
    assert save_samples(images, tmp_path / "api.png").read_bytes() == cli.read_bytes()


def test_generate_is_the_chain_written_out():
    """noise → condition → guidance → sampler → decode, by hand, gives generate's tensors."""
    ckpt = load_pretrained("shapes_latent")
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn((4, *ckpt.sample_shape), generator=g)
    y = torch.tensor([0, 1, 2, 3])
    guided = classifier_free_guidance(ckpt.eps_model, y, ckpt.model.null_condition(y), 2.0)
    z = SAMPLERS["ddim"](guided, x_T, ckpt.schedule, noise_levels(ckpt.schedule, 5), generator=g)
    by_hand = decode(load_vae("vae_shapes"), z).clamp(-1, 1)
    assert ckpt.vae == "vae_shapes" and by_hand.shape == (4, 3, 32, 32)
    assert torch.equal(generate(ckpt, 4, steps=5, label=y, guidance=2.0), by_hand)


def test_seeds_and_batches():
    ckpt = load_pretrained("digits")
    a, b = generate(ckpt, 5, steps=3, seed=1), generate(ckpt, 5, steps=3, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, generate(ckpt, 5, steps=3, seed=2))
    torch.testing.assert_close(generate(ckpt, 5, steps=3, seed=1, batch_size=2), a)  # DDIM: batching changes nothing
    assert a.min() >= -1 and a.max() <= 1


def test_a_negative_replaces_the_null_condition_and_a_text_model_takes_labels_as_captions():
    ckpt = load_pretrained("shapes_class")
    y = condition(ckpt.model, 2, label=4)
    assert torch.equal(y, torch.tensor([4, 4]))
    with_negative = generate(ckpt, 2, steps=3, label=4, negative=7, guidance=3.0)
    plain = generate(ckpt, 2, steps=3, label=4, guidance=3.0)
    assert not torch.equal(with_negative, plain)
    text = load_pretrained("shapes_text")
    assert text.model.tokenizer.decode(condition(text.model, 2, label=[0, 5])) == [
        "a small red circle",
        "a large green square",
    ]


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("digits", {"label": 3}, "is unconditional"),
        ("digits", {"guidance": 2.0}, "need a label or a prompt"),
        ("digits", {"negative": 3}, "need a label or a prompt"),
        ("shapes_class", {"label": 16}, "null label"),
        ("shapes_class", {"label": 2.5}, "label must be an integer"),
        ("shapes_class", {"label": [1, 2]}, "one class or 3 of them"),
        ("shapes_class", {"prompt": "a red star"}, "it takes a label"),
        ("shapes_class", {"label": 1, "prompt": "a red star"}, "not both"),
        ("shapes_text", {"prompt": ["a red star"]}, "one caption or 3"),
        ("digits", {"seed": -1}, "seed must be an integer"),
        ("digits", {"sampler": "magic"}, "unknown sampler 'magic'"),
    ],
)
def test_misuse_is_named(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(name, 3, steps=2, **kwargs)


def test_only_diffusion_models_generate(tmp_path):
    with pytest.raises(CheckpointError, match="generate needs a diffusion model"):
        generate(load_checkpoint(WEIGHTS_DIR / "vae_shapes.safetensors"), 2)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        generate("digits", 0)


def test_optimised_spacing_uses_the_levels_stored_with_the_model():
    ckpt = load_pretrained("digits")
    levels = [ckpt.schedule.sigmas[-1].item(), 3.0, 0.4, 0.05, 0.0]
    ckpt.meta = ckpt.meta | {"optimised_sigmas": {"dpmpp_2m": {"levels": {"4": levels}}}}
    by_hand = SAMPLERS["dpmpp_2m"](ckpt.eps_model, torch.randn((2, *ckpt.sample_shape), generator=torch.Generator()
                                   .manual_seed(0)), ckpt.schedule, levels).clamp(-1, 1)
    torch.testing.assert_close(generate(ckpt, 2, sampler="dpmpp_2m", steps=4, spacing="optimised"), by_hand)
    with pytest.raises(ValueError, match="it has dpmpp_2m with 4 steps"):
        generate(ckpt, 2, sampler="dpmpp_2m", steps=5, spacing="optimised")
    with pytest.raises(ValueError, match="it has none"):
        generate("digits", 2, sampler="unipc", steps=5, spacing="optimised")


def test_a_consistency_model_is_not_guided_unless_asked():
    from minidiff.generate import DEFAULT_GUIDANCE, default_guidance

    ckpt = load_pretrained("shapes_class")
    assert default_guidance(ckpt) == DEFAULT_GUIDANCE
    ckpt.prediction = "consistency"
    assert default_guidance(ckpt) == 1.0
