"""LoRA adapters: they start as the identity change, train alone, merge exactly, and stay tied
to the base they were trained on."""

from __future__ import annotations

import json

import pytest
import torch

from minidiff.checkpoint import load_checkpoint, save_checkpoint
from minidiff.forward import DiffusionObjective
from minidiff.nn import UNet, UNetConfig
from minidiff.nn.lora import LoRA, adapters, add_lora, base_identity, load_adapter, merge, save_adapter, unmerge
from minidiff.schedules import NoiseSchedule
from minidiff.train import MODEL, TrainConfig, train

TINY = UNetConfig(channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, heads=2, num_classes=3)


def unet(config: UNetConfig = TINY, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    net = UNet(config).eval()
    with torch.no_grad():  # a "trained" base: no zero-initialised output layers
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 1, 8, 8, generator=g), torch.tensor([10.0, 500.0]), torch.tensor([0, 2])


def randomise_adapters(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in adapters(model).values():
            m.B.weight.normal_(0, 0.1)


def test_a_new_adapter_leaves_the_output_unchanged_and_only_it_trains():
    net = unet()
    x, t, y = inputs()
    before = net(x, t, y)
    names = add_lora(net, rank=2)
    assert names and all(n.endswith(("qkv", "proj", ".q", ".kv")) for n in names)
    assert torch.equal(net(x, t, y), before)  # B = 0
    net(x, t, y).square().mean().backward()
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".A.weight", ".B.weight")) for n in trainable)
    assert all(p.grad is None for n, p in net.named_parameters() if n not in trainable)
    B_grads = [p.grad for n, p in net.named_parameters() if n.endswith(".B.weight")]
    assert any(g is not None and g.abs().sum() > 0 for g in B_grads)


@pytest.mark.parametrize("targets", [("*qkv", "*proj"), ("*conv*",)])
def test_merged_outputs_equal_unmerged_and_unmerge_restores_the_base(targets):
    net = unet()
    x, t, y = inputs()
    base_weights = {k: v.clone() for k, v in net.state_dict().items()}
    add_lora(net, rank=3, alpha=6.0, targets=targets)
    randomise_adapters(net)
    adapted = net(x, t, y)
    assert not torch.allclose(adapted, unet()(x, t, y))
    identity = base_identity(net)
    merge(net)
    torch.testing.assert_close(net(x, t, y), adapted, atol=1e-5, rtol=1e-5)
    assert base_identity(net) == identity  # the merged change is not taken for the base's own weights
    unmerge(net)
    for name, m in adapters(net).items():
        assert torch.equal(m.base.weight, base_weights[f"{name}.weight"]), name  # exactly: W is kept, not recomputed


def test_an_adapter_round_trips_through_its_file_and_holds_no_pickle(tmp_path):
    net = unet()
    x, t, y = inputs()
    add_lora(net, rank=2)
    randomise_adapters(net)
    path = save_adapter(net, tmp_path / "adapter.safetensors")
    assert path.stat().st_size < 50_000
    data = path.read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    tensors = json.loads(data[8 : 8 + header_length])
    tensor_bytes = sum(e["data_offsets"][1] - e["data_offsets"][0] for k, e in tensors.items() if k != "__metadata__")
    assert len(data) == 8 + header_length + tensor_bytes  # a JSON header and raw tensors, nothing else
    fresh = unet()
    assert base_identity(fresh) == base_identity(net)  # the adapters and the wrapping are not part of the base
    load_adapter(fresh, path)
    torch.testing.assert_close(fresh(x, t, y), net(x, t, y))


def test_an_adapter_is_refused_on_another_base(tmp_path):
    net = unet()
    add_lora(net, rank=2)
    path = save_adapter(net, tmp_path / "adapter.safetensors")
    with pytest.raises(ValueError, match="tied to its base's weights"):
        load_adapter(unet(seed=1), path)  # same architecture, other weights
    assert load_adapter(unet(seed=1), path, allow_other_base=True)
    wider = UNetConfig(**{**vars(TINY), "channels": 16})
    with pytest.raises(ValueError, match="tied to its base's architecture"):
        load_adapter(unet(wider), path, allow_other_base=True)


def test_misuse_is_named(tmp_path):
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        LoRA(torch.nn.Linear(4, 4), rank=0, alpha=1.0)
    with pytest.raises(ValueError, match="matches targets"):
        add_lora(unet(), targets=("*nothing_here",))
    with pytest.raises(ValueError, match="no LoRA adapters to save"):
        save_adapter(unet(), tmp_path / "a.safetensors")


def test_fine_tuning_an_adapter_through_the_engine_leaves_the_base_and_reloads_as_saved(tmp_path):
    net = unet()
    with torch.no_grad():  # a shipped float16 base holds negative zeros: the EMA must not turn them into +0.0
        next(iter(net.parameters())).view(-1)[:3] = -0.0
    base = {k: v.clone() for k, v in net.state_dict().items()}
    identity = base_identity(net)
    add_lora(net, rank=2)
    x0 = torch.rand(16, 1, 8, 8) * 2 - 1
    config = TrainConfig(steps=12, batch_size=8, warmup=1, checkpoint_every=6)  # (by step 12 the EMA's weight < ½)
    ema, _ = train(net, (x0, torch.randint(0, 3, (16,))), DiffusionObjective(NoiseSchedule.cosine(100), "v"), config,
                   out_dir=tmp_path)
    frozen = {k.replace(".base.", "."): v for k, v in net.state_dict().items()
              if not k.endswith((".A.weight", ".B.weight"))}
    assert frozen.keys() == base.keys() and all(torch.equal(frozen[k], base[k]) for k in base)
    assert any(m.B.weight.abs().sum() > 0 for m in adapters(net).values())  # the adapters trained
    loaded = load_checkpoint(tmp_path / MODEL).model  # the checkpoint records the adapters: rebuilt without help
    assert base_identity(loaded) == base_identity(ema) == identity  # still the same base, bit for bit
    assert set(adapters(loaded)) == set(adapters(net))
    x, t, y = inputs()
    assert torch.equal(loaded(x, t, y), ema(x, t, y))
    merge(net)
    with pytest.raises(ValueError, match="unmerge them before saving"):
        save_checkpoint(tmp_path / "merged.safetensors", net)


def test_a_corrupt_adapter_file_is_named(tmp_path):
    net = unet()
    add_lora(net, rank=2)
    path = save_adapter(net, tmp_path / "adapter.safetensors")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="adapter.safetensors is not a readable safetensors file"):
        load_adapter(unet(), path)
