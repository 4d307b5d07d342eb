"""Text conditioning: the tokenizer's contract, the encoder's padding, the text U-Net's
null prompt and attention maps, and its checkpoints."""

import pytest
import torch

from minidiff import UNetConfig, load_checkpoint, save_checkpoint
from minidiff.data.images import CAPTION_WORDS, ShapesDataset, class_captions
from minidiff.nn import record_attention_maps
from minidiff.nn.text import TextConfig, TextEncoder, TextUNet, TextUNetConfig, Tokenizer
from minidiff.schedules import NoiseSchedule


def tiny_text_unet() -> TextUNet:
    torch.manual_seed(0)
    unet = UNetConfig(in_channels=3, channels=16, channel_mults=(1, 2), blocks_per_level=1, heads=2, context_dim=32)
    net = TextUNet(TextUNetConfig(unet, TextConfig(dim=32, layers=1)))
    for p in net.parameters():  # zero-initialised layers would hide the prompt
        if not p.any():
            torch.nn.init.normal_(p, std=0.1)
    return net.eval()


def test_tokenizer_round_trip_and_padding():
    tok = Tokenizer(CAPTION_WORDS, max_len=6)
    ids = tok.encode(["a small red circle", "A  Large BLUE star"])
    assert ids.shape == (2, 6) and ids.dtype == torch.long
    assert ids[0].tolist() == [1, 2, 4, 8, 0, 0]  # "a"=1, "small"=2, "red"=4, "circle"=8, padding 0
    assert tok.decode(ids) == ["a small red circle", "a large blue star"]
    assert tok.encode("a star").shape == (1, 6)
    assert tok.decode(tok.null(3)) == ["", "", ""]


def test_every_shapes_caption_tokenizes():
    captions = ShapesDataset(200, 32, seed=3).captions
    tok = Tokenizer(CAPTION_WORDS)
    assert tok.decode(tok.encode(captions)) == captions
    assert class_captions(torch.tensor([0, 15])) == ["a small red circle", "a large yellow star"]


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a purple star", r"unknown word\(s\) \['purple'\] in prompt 'a purple star'; the vocabulary is: a, small"),
        ("", "prompt is empty; for the unconditional \\(null\\) prompt of guidance use tokenizer.null"),
        ("   ", "prompt is empty"),
        ("a a a a a a a a a", "has 9 words, more than max_len=8"),
        ("a <pad>", "unknown word"),
    ],
)
def test_bad_prompts_are_named(prompt, message):
    with pytest.raises(ValueError, match=message):
        Tokenizer(CAPTION_WORDS).encode([prompt])


def test_bad_token_ids_and_configs_are_named():
    enc = TextEncoder(TextConfig(dim=32, layers=1))
    with pytest.raises(ValueError, match=r"token ids must be an integer tensor of shape \(2, 8\)"):
        enc(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 11\]"):
        enc(torch.full((1, 8), 12))
    with pytest.raises(ValueError, match="heads=4 must divide dim=30"):
        TextConfig(dim=30)
    with pytest.raises(ValueError, match="must equal text.dim"):
        TextUNetConfig(UNetConfig(context_dim=16), TextConfig(dim=32))


def test_padding_never_changes_the_real_tokens_or_the_image():
    """Keys at padding positions get no attention: changing what a padding token embeds to
    must leave the encoder's real-token outputs and the U-Net's prediction unchanged."""
    net = tiny_text_unet()
    y = net.tokenizer.encode(["a red star", "a large green circle"])
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([20, 700])
    with torch.no_grad():
        context, mask = net.text(y)
        out = net(x, t, y)
        net.text.token.weight[0] += 5 * torch.randn(32)
        context2, _ = net.text(y)
        torch.testing.assert_close(context2[mask], context[mask])
        torch.testing.assert_close(net(x, t, y), out)


def test_null_prompt_is_finite_and_equals_no_prompt():
    net = tiny_text_unet()
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([0, 500, 999])
    with torch.no_grad():
        null = net(x, t, net.tokenizer.null(3))
        assert torch.isfinite(null).all()
        torch.testing.assert_close(null, net(x, t))


def test_attention_maps_per_word():
    net = tiny_text_unet()
    y = net.tokenizer.encode(["a small red circle"])
    with torch.no_grad(), record_attention_maps(net) as maps:
        net(torch.randn(1, 3, 8, 8), torch.tensor([300]), y)
    assert maps, "no cross-attention block ran"
    for m in maps.values():
        assert m.shape[:2] == (1, 8)
        torch.testing.assert_close(m.sum(1), torch.ones_like(m.sum(1)))  # each pixel's weights over words sum to 1
        assert (m[:, 4:] == 0).all()  # padding gets none


def test_text_unet_checkpoint_round_trip(tmp_path):
    net = tiny_text_unet()
    schedule = NoiseSchedule.cosine(1000)
    save_checkpoint(tmp_path / "m.safetensors", net, schedule, (3, 8, 8), "v", 5)
    ckpt = load_checkpoint(tmp_path / "m.safetensors")
    assert isinstance(ckpt.model, TextUNet) and ckpt.model.config == net.config
    y = net.tokenizer.encode(["a blue square"])
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([400])
    with torch.no_grad():
        assert torch.equal(ckpt.model(x, t, y), net(x, t, y))
