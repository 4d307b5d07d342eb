"""Classifier-free guidance: the formula's fixed points, batching, every sampler, and the exact
class-conditional Gaussian-mixture model as the independent truth."""

import pytest
import torch

from minidiff import SAMPLERS, NoiseSchedule, UNet, UNetConfig, sample
from minidiff.data import GaussianMixture
from minidiff.generate import condition
from minidiff.guidance import classifier_free_guidance
from minidiff.nn.text import TextConfig, TextUNet, TextUNetConfig

SCHEDULE = NoiseSchedule.linear(1000)
MIXTURE = GaussianMixture(
    means=torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]]),
    covs=torch.eye(2).repeat(3, 1, 1) * 0.25,
    weights=torch.tensor([0.5, 0.3, 0.2]),
)


def randomized(net: torch.nn.Module) -> torch.nn.Module:
    """The network with its zero-initialised layers made random: at init they hide every condition."""
    torch.manual_seed(0)
    for p in net.parameters():
        if not p.any():
            torch.nn.init.normal_(p, std=0.1)
    return net.eval()


def labelled_unet() -> UNet:
    return randomized(UNet(UNetConfig(channels=16, channel_mults=(1, 2), blocks_per_level=1, heads=2, num_classes=4)))


def test_w1_is_the_conditional_and_w0_the_unconditional_prediction_exactly():
    net = labelled_unet()
    x, t, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 10, 200, 500, 999]), torch.tensor([0, 1, 2, 3, 1])
    null = net.null_condition(y)
    with torch.no_grad():
        cond, uncond = net(x, t, y), net(x, t, null)
        assert not torch.allclose(cond, uncond)  # the label matters, so the checks below can fail
        assert torch.equal(classifier_free_guidance(net, y, null, w=1.0, batched=False)(x, t), cond)
        assert torch.equal(classifier_free_guidance(net, y, null, w=0.0, batched=False)(x, t), uncond)
        w = 7.5
        expected = uncond + w * (cond - uncond)
        torch.testing.assert_close(classifier_free_guidance(net, y, null, w, batched=False)(x, t), expected)


def test_batched_and_unbatched_guidance_agree():
    net = labelled_unet()
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([5, 300, 900]), torch.tensor([2, 0, 1])
    with torch.no_grad():
        one = classifier_free_guidance(net, y, net.null_condition(y), w=4.0, batched=True)(x, t)
        two = classifier_free_guidance(net, y, net.null_condition(y), w=4.0, batched=False)(x, t)
    torch.testing.assert_close(one, two, atol=1e-5, rtol=1e-5)


def test_a_negative_condition_replaces_the_unconditional_branch():
    net = labelled_unet()
    x, t, y, negative = torch.randn(2, 1, 8, 8), torch.tensor([100, 700]), torch.tensor([0, 1]), torch.tensor([3, 3])
    with torch.no_grad():
        cond, neg = net(x, t, y), net(x, t, negative)
        torch.testing.assert_close(classifier_free_guidance(net, y, negative, w=3.0)(x, t), neg + 3.0 * (cond - neg))


def test_exact_mixture_model_w1_samples_each_class_and_w0_the_mixture():
    """With the exact ε of each component (class) and of the whole mixture (∅), w = 1 must give
    class k's Gaussian and w = 0 the mixture, through every sampler."""
    model = MIXTURE.class_eps_model(SCHEDULE)
    g = torch.Generator().manual_seed(0)
    n = 2000
    y = torch.full((n,), 1)
    for name in [s for s in SAMPLERS if s != "consistency"]:  # (which samples a consistency model, not this ε)
        x_T = torch.randn(n, 2, generator=g, dtype=torch.float64)
        x = sample(classifier_free_guidance(model, y, torch.full_like(y, 3), w=1.0), x_T, SCHEDULE, name, steps=100)
        assert (x.mean(0) - MIXTURE.means[1]).abs().max() < 0.06, name
        assert (x.var(0) - 0.25).abs().max() < 0.05, name
    x_T = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x = sample(classifier_free_guidance(model, y, torch.full_like(y, 3), w=0.0), x_T, SCHEDULE, "ddim", steps=50)
    nearest = torch.cdist(x, MIXTURE.means).argmin(1)
    shares = torch.bincount(nearest, minlength=3) / n
    assert (shares - MIXTURE.weights).abs().max() < 0.03, shares


def test_stronger_guidance_moves_samples_away_from_the_other_classes():
    """Guidance sharpens p(y|x): the share of samples that land nearest their class's mean, and
    their distance past it from the unconditional mean, grow with w."""
    model = MIXTURE.class_eps_model(SCHEDULE)
    n = 2000
    y = torch.arange(n) % 3
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    spread = []
    for w in (1.0, 3.0, 7.5):
        x = sample(classifier_free_guidance(model, y, torch.full_like(y, 3), w), x_T, SCHEDULE, "ddim", 50)
        assert (torch.cdist(x, MIXTURE.means).argmin(1) == y).double().mean() > 0.97
        spread.append((x - MIXTURE.means[y]).norm(dim=1).mean().item())
    centre = (MIXTURE.weights[:, None] * MIXTURE.means).sum(0)
    assert (x - centre).norm(dim=1).mean() > (MIXTURE.means[y] - centre).norm(dim=1).mean()  # pushed past the means
    assert spread[0] < spread[2], spread  # w = 7.5 leaves the class's own Gaussian behind


def test_text_model_guidance_uses_prompts_and_the_null_prompt():
    unet = UNetConfig(in_channels=3, channels=16, channel_mults=(1, 2), heads=2, context_dim=32)
    net = randomized(TextUNet(TextUNetConfig(unet, TextConfig(dim=32, layers=1))))
    y = condition(net, 2, label=torch.tensor([0, 5]))
    assert net.tokenizer.decode(y) == ["a small red circle", "a large green square"]
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 600])
    with torch.no_grad():
        null = net.null_condition(y)
        torch.testing.assert_close(net(x, t, null), net(x, t))  # all padding = no prompt
        assert not torch.allclose(net(x, t, y), net(x, t))  # the prompt matters
        assert torch.equal(classifier_free_guidance(net, y, null, w=1.0, batched=False)(x, t), net(x, t, y))


def test_bad_guidance_arguments_are_named():
    net = labelled_unet()
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="w \\(the guidance scale\\) must be a finite number"):
        classifier_free_guidance(net, y, net.null_condition(y), w="7.5")
    for w in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="must be a finite number"):
            classifier_free_guidance(net, y, net.null_condition(y), w=w)
    with pytest.raises(ValueError, match="same shape"):
        classifier_free_guidance(net, y, torch.tensor([4]))
    guided = classifier_free_guidance(net, y, net.null_condition(y), w=2.0)
    with pytest.raises(ValueError, match="y holds 2 conditions, but x_t has a batch of 3"):
        guided(torch.randn(3, 1, 8, 8), torch.zeros(3))
    with pytest.raises(ValueError, match=r"label must be a class from 0 to 3 \(this UNet has 4 classes\)"):
        condition(net, 2, label=torch.tensor([0, 7]))
