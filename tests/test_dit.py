"""Tests for minidiff.nn.dit: the diffusion transformer, and its place among the denoisers."""

from __future__ import annotations

import pytest
import torch

from minidiff import flow
from minidiff.forward import as_eps_model, is_conditional
from minidiff.guidance import classifier_free_guidance
from minidiff.nn.attention import TokenAttention, record_attention_maps
from minidiff.nn.dit import DiT, DiTConfig, patchify, position_embedding_2d, unpatchify
from minidiff.nn.layers import timestep_embedding
from minidiff.samplers import sample
from minidiff.schedules import NoiseSchedule

TINY = dict(in_channels=1, patch_size=2, width=16, depth=2, heads=2)


def tiny(**overrides) -> DiT:
    return DiT(DiTConfig(**{**TINY, **overrides}))


def perturbed(model: DiT, std: float = 0.05) -> DiT:
    """Move every weight off its initial value, so zero-initialised layers no longer hide the inputs."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn_like(p))
    return model


def inputs(B: int = 3, C: int = 1, H: int = 8, W: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, C, H, W, generator=g), torch.rand(B, generator=g) * 1000


@pytest.mark.parametrize(
    "overrides, shape",
    [
        ({}, (3, 1, 8, 8)),
        (dict(patch_size=4), (2, 1, 16, 16)),
        (dict(in_channels=3, out_channels=6), (2, 3, 8, 8)),  # e.g. ε and a variance
        (dict(patch_size=1, depth=1), (1, 1, 4, 4)),  # every pixel a token
        ({}, (2, 1, 8, 12)),  # not square: a 4×6 grid of tokens
        (dict(num_classes=4, mlp_ratio=2), (3, 1, 8, 8)),
    ],
)
def test_output_shape(overrides, shape):
    model = perturbed(tiny(**overrides))
    x = torch.randn(shape)
    out = model(x, torch.rand(shape[0]) * 1000)
    assert out.shape == (shape[0], model.config.out_channels, *shape[2:])
    assert out.dtype == x.dtype and out.abs().sum() > 0


def test_patchify_cuts_reading_order_patches_and_unpatchify_inverts_it():
    x = torch.randn(2, 3, 8, 12)
    tokens = patchify(x, 4)
    assert tokens.shape == (2, 6, 3 * 16)  # a 2×3 grid of 4×4 patches
    torch.testing.assert_close(tokens[:, 0], x[:, :, :4, :4].flatten(1))  # top-left patch first
    torch.testing.assert_close(tokens[:, 1], x[:, :, :4, 4:8].flatten(1))  # then its right neighbour
    torch.testing.assert_close(tokens[:, 3], x[:, :, 4:, :4].flatten(1))  # the second row starts at 3
    torch.testing.assert_close(unpatchify(tokens, 4, 8, 12), x)


def test_patchify_equals_a_strided_convolution():
    """A linear map of each patch is a convolution with kernel = stride = p (how DiT's code embeds)."""
    x, conv = torch.randn(2, 3, 8, 8), torch.nn.Conv2d(3, 5, 4, stride=4)
    linear = patchify(x, 4) @ conv.weight.flatten(1).T + conv.bias  # (B, N, 5)
    torch.testing.assert_close(linear, conv(x).flatten(2).transpose(1, 2))


def test_position_embedding_halves_embed_row_and_column():
    pos = position_embedding_2d(3, 4, 8)
    assert pos.shape == (12, 8)
    torch.testing.assert_close(pos[5, :4], timestep_embedding(torch.tensor([1]), 4)[0])  # token 5: row 1 …
    torch.testing.assert_close(pos[5, 4:], timestep_embedding(torch.tensor([1]), 4)[0])  # … column 1
    torch.testing.assert_close(pos[6, 4:], timestep_embedding(torch.tensor([2]), 4)[0])
    assert torch.cdist(pos, pos).add(torch.eye(12)).min() > 0.1  # every token's position is told apart


def test_untrained_model_predicts_zero():
    model = tiny(num_classes=3)
    x, t = inputs()
    assert torch.equal(model(x, t, torch.tensor([0, 1, 3])), torch.zeros_like(x))  # adaLN-Zero + zero final layer


def test_zero_init_makes_every_block_the_identity():
    model = tiny()
    x, t = inputs()
    h = torch.randn(3, 16, 16)
    for block in model.blocks:
        assert torch.equal(block(h, torch.randn(3, 16)), h)


def test_every_parameter_learns():
    model = perturbed(tiny(num_classes=3))
    x, t = inputs()
    model(x, t, torch.tensor([0, 1, 3])).pow(2).mean().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not silent


def test_labels_and_the_null_label():
    model = perturbed(tiny(num_classes=3))
    x, t = inputs()
    assert is_conditional(model) and not is_conditional(tiny())
    null = model.null_condition(torch.tensor([0, 1, 2]))
    assert null.tolist() == [3, 3, 3]
    torch.testing.assert_close(model(x, t), model(x, t, null))  # y = None is the null label
    assert not torch.allclose(model(x, t, torch.tensor([0, 0, 0])), model(x, t, torch.tensor([1, 1, 1])))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m(torch.randn(2, 1, 7, 8), torch.zeros(2)), r"divisible by the patch size p=2.*7×8"),
        (lambda m: m(torch.randn(2, 3, 8, 8), torch.zeros(2)), r"x_t must have shape \(B, 1, H, W\)"),
        (lambda m: m(torch.randn(2, 1, 8, 8), torch.zeros(3)), r"t"),
        (lambda m: m(torch.randn(2, 1, 8, 8), torch.zeros(2), torch.tensor([0, 4])), r"labels y must lie in \[0, 3\]"),
        (lambda m: m(torch.randn(2, 1, 8, 8), torch.zeros(2), torch.tensor([0.0, 1.0])), r"integer tensor of shape"),
        (lambda m: m(torch.full((2, 1, 8, 8), float("nan")), torch.zeros(2)), r"x_t"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call(tiny(num_classes=3))


def test_labels_without_a_label_embedding_are_refused():
    with pytest.raises(ValueError, match="this DiT has no label embedding"):
        tiny()(*inputs(), torch.tensor([0, 1, 2]))


@pytest.mark.parametrize(
    "overrides, match",
    [(dict(width=18), "width must be divisible by heads=2 and by 4"), (dict(depth=0), "depth"),
     (dict(num_classes=0), "num_classes"), (dict(patch_size=0), "patch_size")],
)
def test_bad_config(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny(**overrides)


def test_attention_map_is_the_attention_used():
    attn = TokenAttention(8, heads=2)
    x = torch.randn(2, 5, 8)
    weights = attn.attention_map(x)  # (B, N, N), averaged over heads
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5))
    with torch.no_grad():  # one head: the map is exactly the weights the output mixes the values with
        one = TokenAttention(8, heads=1)
        v = one.qkv(x).chunk(3, dim=-1)[2]
        torch.testing.assert_close(one(x), one.proj(one.attention_map(x) @ v))
    model = perturbed(tiny())
    with record_attention_maps(model) as maps:
        model(*inputs())
    assert set(maps) == {"blocks.0.attn", "blocks.1.attn"} and maps["blocks.0.attn"].shape == (3, 16, 16)


def test_bf16_autocast_on_cpu():
    model = perturbed(tiny())
    fast = tiny(bf16=True)
    fast.load_state_dict(model.state_dict())
    x, t = inputs()
    out = fast(x, t)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, model(x, t), rtol=0.05, atol=0.05)


def test_summary(summary_of):
    shapes = summary_of(tiny(num_classes=3), (1, 8, 8))
    assert shapes["embed"] == "(1, 16, 16)"  # 16 tokens of width 16
    assert shapes["blocks.1"] == "(1, 16, 16)"
    assert shapes["final"] == "(1, 16, 4)"  # each token back to a 2×2 patch


def test_a_dit_is_a_drop_in_denoiser_for_samplers_and_guidance():
    """The same network drives DDIM (as an ε-model) and the flow ODE (as a velocity model), guided."""
    model = perturbed(tiny(num_classes=3)).eval()
    y = torch.tensor([0, 1, 2])
    x_T = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        guided = classifier_free_guidance(model, y, model.null_condition(y), 2.0)
        schedule = NoiseSchedule.cosine(100)
        eps = sample(as_eps_model(guided, schedule, "v"), x_T, schedule, "ddim", steps=5)
        v = flow.sample(flow.as_velocity_model(guided), x_T, steps=5)
    assert eps.shape == v.shape == x_T.shape and eps.isfinite().all() and v.isfinite().all()


def test_multiply_adds_counts_layers_and_attention_by_hand():
    from minidiff.nn.attention import CrossAttention
    from minidiff.nn.layers import multiply_adds

    x = torch.randn(3, 5, 8)  # 5 tokens of width 8
    # qkv: 5·8·24, proj: 5·8·8, Q·Kᵀ and weights·V: 2·5²·8
    assert multiply_adds(TokenAttention(8, heads=2), x) == 5 * 8 * 24 + 5 * 8 * 8 + 2 * 25 * 8
    assert multiply_adds(torch.nn.Conv2d(3, 4, 3, padding=1), torch.randn(2, 3, 8, 8)) == 64 * 4 * 27
    # cross-attention from a 4×4 map (N = 16, C = 8) to L = 3 context tokens of width 6
    cross = CrossAttention(8, 6, heads=2, groups=2)
    expected = 16 * 8 * 8 + 3 * 6 * 16 + 16 * 8 * 8 + 2 * 16 * 3 * 8  # q, kv, proj, attention
    assert multiply_adds(cross, torch.randn(2, 8, 4, 4), context=torch.randn(2, 3, 6)) == expected
