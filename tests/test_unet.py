"""Tests for minidiff.nn.unet and minidiff.nn.attention."""

from __future__ import annotations

import io

import pytest
import torch

from minidiff.nn.attention import CrossAttention, record_attention_maps
from minidiff.nn.unet import UNet, UNetConfig

# A tiny model with every optional part: two levels, attention at the lowest, labels, context.
TINY = dict(channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, heads=2)


def tiny(**overrides) -> UNet:
    return UNet(UNetConfig(**{**TINY, **overrides}))


def perturbed(model: UNet, std: float = 0.05) -> UNet:
    """Move every weight off its initial value, so zero-initialised layers no longer hide
    the effect of the inputs on the output."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn_like(p))
    return model


def inputs(B: int = 3, C: int = 1, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, C, size, size, generator=g), torch.randint(0, 1000, (B,), generator=g)


@pytest.mark.parametrize(
    "config, shape, t",
    [
        (UNetConfig(), (1, 1, 16, 16), torch.tensor([7])),  # the default, batch of one, integer t
        (UNetConfig(), (3, 1, 16, 16), torch.tensor([0.0, 12.5, 999.0])),  # fractional t
        (UNetConfig(in_channels=3), (3, 3, 32, 32), torch.tensor([1, 500, 999])),  # RGB 32×32
        (UNetConfig(**TINY, in_channels=3, out_channels=6), (2, 3, 8, 12), torch.tensor([3.0, 4.0])),
        (UNetConfig(**TINY, attention_levels=()), (1, 1, 4, 4), torch.tensor([0])),
    ],
)
def test_output_shape(config, shape, t):
    out = UNet(config)(torch.randn(shape), t)
    assert out.shape == (shape[0], config.out_channels, *shape[2:])
    assert out.dtype == torch.float32


def test_untrained_model_predicts_zero():
    # the output conv is zero-initialised (and so is the last conv of every residual block)
    x, t = inputs()
    assert torch.equal(UNet()(x, t), torch.zeros_like(x))


def test_every_parameter_learns():
    # With zero-initialised output layers, gradients reach the whole network only after the
    # first steps have moved those layers off zero: after two AdamW steps, every parameter
    # must get a gradient.
    torch.manual_seed(0)
    model = tiny(num_classes=3, context_dim=5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, t = inputs(B=4)
    y = torch.tensor([0, 1, 2, 3])  # 3 = null label
    context, mask = torch.randn(4, 6, 5), torch.rand(4, 6) > 0.3
    for _ in range(3):
        opt.zero_grad()
        loss = (model(x, t, y, context, mask) - torch.randn_like(x)).pow(2).mean()
        loss.backward()
        opt.step()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, f"no gradient reached {silent}"


def test_null_label():
    model = perturbed(tiny(num_classes=4))
    x, t = inputs()
    null = model(x, t, y=torch.full((3,), 4))
    assert torch.equal(model(x, t), null)  # y=None is the null label
    cond = model(x, t, y=torch.tensor([0, 1, 4]))
    assert not torch.allclose(cond[:2], null[:2])  # labels change the output
    torch.testing.assert_close(cond[2], null[2])  # cond and uncond rows can share a batch


@pytest.mark.parametrize(
    "y, match",
    [
        (torch.tensor([0, 5, 1]), r"\[0, 4\]"),
        (torch.tensor([-1, 0, 1]), r"\[0, 4\]"),
        (torch.tensor([0.0, 1.0, 2.0]), "integer"),
        (torch.tensor([0, 1]), r"shape \(3,\)"),
    ],
)
def test_bad_labels(y, match):
    x, t = inputs()
    with pytest.raises(ValueError, match=match):
        tiny(num_classes=4)(x, t, y=y)


def test_bad_inputs():
    model = tiny()
    x, t = inputs()
    with pytest.raises(ValueError, match="no label embedding"):
        model(x, t, y=torch.tensor([0, 0, 0]))
    with pytest.raises(ValueError, match="no cross-attention"):
        model(x, t, context=torch.randn(3, 2, 5))
    with pytest.raises(ValueError, match="context_mask given without context"):
        tiny(context_dim=5)(x, t, context_mask=torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"shape \(B, 1, H, W\)"):
        model(torch.randn(3, 3, 16, 16), t)
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet()(torch.randn(3, 1, 18, 18), t)
    with pytest.raises(ValueError, match=r"t must be a tensor of shape \(3,\)"):
        model(x, t[:2])
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full_like(x, float("nan")), t)
    with pytest.raises(ValueError, match=r"context must have shape \(3, L, 5\)"):
        tiny(context_dim=5)(x, t, context=torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="context_mask must be a bool tensor"):
        tiny(context_dim=5)(x, t, context=torch.randn(3, 2, 5), context_mask=torch.ones(3, 2))


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(groups=3), "divisible by groups"),
        (dict(attention_levels=(2,)), "attention_levels"),
        (dict(heads=3), "heads"),
        (dict(channel_mults=()), "channel_mults"),
        (dict(dropout=1.0), "dropout"),
        (dict(num_classes=0), "num_classes"),
        (dict(context_dim=4, attention_levels=()), "context_dim"),
    ],
)
def test_bad_config(overrides, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig(**{**TINY, **overrides})


def test_padding_tokens_get_no_attention():
    model = perturbed(tiny(context_dim=5))
    x, t = inputs()
    context = torch.randn(3, 4, 5)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True], [True, False, False, False]])
    with record_attention_maps(model) as maps:
        out = model(x, t, context=context, context_mask=mask)
    assert set(maps) == {"down.1.blocks.0.cross", "mid.0.cross", "up.0.blocks.0.cross"}
    for attn in maps.values():
        assert attn.shape == (3, 4, 8, 8)  # (B, L, H, W) at the lowest level of a 16×16 input
        assert torch.all(attn[~mask] == 0)  # padding: exactly zero weight
        torch.testing.assert_close(attn.sum(dim=1), torch.ones(3, 8, 8))  # each position sums to 1
    changed = torch.where(mask[..., None], context, 100 * torch.randn_like(context))
    torch.testing.assert_close(model(x, t, context=changed, context_mask=mask), out, rtol=0, atol=1e-6)
    assert not torch.allclose(model(x, t, context=context), out)  # without the mask, padding counts


def test_empty_context_is_unconditional():
    model = perturbed(tiny(context_dim=5))
    x, t = inputs()
    context, mask = torch.randn(3, 4, 5), torch.ones(3, 4, dtype=torch.bool)
    mask[1] = False  # sample 1 has an empty prompt
    out = model(x, t, context=context, context_mask=mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1], model(x, t)[1])  # same as no context at all
    assert not torch.allclose(out[0], model(x, t)[0])


def test_attention_map_is_the_attention_used():
    # with one head, forward must equal x + proj(weights @ V) computed from attention_map
    torch.manual_seed(0)
    block = CrossAttention(channels=8, context_dim=5, heads=1, groups=4)
    torch.nn.init.normal_(block.proj.weight)
    x, context = torch.randn(2, 8, 3, 4), torch.randn(2, 6, 5)
    mask = torch.tensor([[True] * 6, [True, True, False, False, False, True]])
    weights = block.attention_map(x, context, mask).flatten(2).transpose(1, 2)  # (B, N, L)
    v = block.kv(context).chunk(2, dim=-1)[1]  # (B, L, C)
    expected = x + block.proj(weights @ v).transpose(1, 2).reshape(x.shape)
    torch.testing.assert_close(block(x, context, mask), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("how", ["enclosing autocast", "config.bf16"])
def test_bf16_autocast_on_cpu(how):
    model = perturbed(tiny(num_classes=3, context_dim=5))
    x, t = inputs()
    args = (x, t, torch.tensor([0, 1, 3]), torch.randn(3, 4, 5))
    reference = model(*args)
    if how == "config.bf16":
        model.config.bf16 = True
        out = model(*args)
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(*args)
    assert out.dtype == torch.float32  # the output comes back in x_t's dtype
    assert (out - reference).norm() / reference.norm() < 0.05  # bf16 keeps ~3 significant digits
    assert not torch.equal(out, reference)  # bf16 really ran


def test_channels_last_gives_the_same_output():
    model = perturbed(UNet())
    fast = UNet(UNetConfig(channels_last=True))
    fast.load_state_dict(model.state_dict())
    assert fast.inp.weight.is_contiguous(memory_format=torch.channels_last)
    x, t = inputs()
    torch.testing.assert_close(fast(x, t), model(x, t), rtol=1e-4, atol=1e-5)


def test_dtype_follows_the_model_and_input():
    model = tiny().double()
    x, t = inputs()
    assert model(x.double(), t).dtype == torch.float64


def test_summary(summary_of):
    shapes = summary_of(tiny(num_classes=3, context_dim=5), (1, 16, 16))
    assert shapes["inp"] == "(1, 8, 16, 16)"
    assert shapes["mid.0"] == "(1, 16, 8, 8)"
    assert shapes["out"] == "(1, 1, 16, 16)"


def test_state_dict_round_trip():
    model = perturbed(tiny(num_classes=3, context_dim=5))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    loaded = tiny(num_classes=3, context_dim=5)
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    x, t = inputs()
    args = (x, t, torch.tensor([0, 2, 3]), torch.randn(3, 4, 5), torch.rand(3, 4) > 0.5)
    assert torch.equal(loaded(*args), model(*args))
