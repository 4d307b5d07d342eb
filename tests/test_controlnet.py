"""ControlNet: at the start the controlled model is its base exactly; only the control branch
trains; the base is never touched; control images are checked; the mask and IoU that measure
adherence are right on images whose answer is known."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from minidiff.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from minidiff.data import shape_mask
from minidiff.forward import DiffusionObjective
from minidiff.generate import generate
from minidiff.metrics import mask_iou
from minidiff.nn import UNet, UNetConfig
from minidiff.nn.controlnet import ControlledUNet, with_control
from minidiff.schedules import NoiseSchedule
from minidiff.train import TrainConfig, train

TINY = UNetConfig(in_channels=3, channels=8, channel_mults=(1, 2), blocks_per_level=2, groups=4, heads=2,
                  num_classes=3)
SCHEDULE = NoiseSchedule.cosine(100)


def trained_base(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    net = UNet(TINY).eval()
    with torch.no_grad():  # a "trained" base: no zero-initialised output layers
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def inputs(batch: int = 3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 8, 8, generator=g)
    control = (torch.rand(batch, 1, 8, 8, generator=g) > 0.5).float() * 2 - 1
    return x, torch.tensor([5.0, 50.0, 99.0])[:batch], torch.tensor([0, 2, 3])[:batch], control


def test_at_the_start_the_controlled_model_is_its_base_exactly():
    base = trained_base()
    model = ControlledUNet.from_base(base)
    x, t, y, control = inputs()
    assert torch.equal(model(x, t, y, control=control), base(x, t, y))  # every zero convolution is zero
    assert torch.equal(model(x, t, y), base(x, t, y))  # no control: the base alone
    other = ControlledUNet.from_base(trained_base(seed=1))
    assert not torch.equal(other(x, t, y, control=control), base(x, t, y))  # (the check can fail)


def test_gradients_reach_only_the_control_branch_and_the_zero_convolutions_leave_zero():
    model = ControlledUNet.from_base(trained_base())
    x, t, y, control = inputs()
    model(x, t, y, control=control).square().mean().backward()
    assert all(p.grad is None for p in model.base.parameters())
    assert all(not p.requires_grad for p in model.base.parameters())
    zero_grads = [p.grad for z in [*model.zero_skips, model.zero_mid] for p in z.parameters()]
    assert all(g is not None for g in zero_grads) and all(g.abs().sum() > 0 for g in zero_grads)


def test_training_moves_the_control_branch_and_never_the_base():
    base = trained_base()
    model = ControlledUNet.from_base(base)
    x0 = torch.rand(16, 3, 8, 8) * 2 - 1
    data = (x0, torch.randint(0, 3, (16,)), (torch.rand(16, 1, 8, 8) > 0.5).float() * 2 - 1)
    ema, _ = train(model, data, DiffusionObjective(SCHEDULE, "v", p_uncond=0.2),
                   TrainConfig(steps=5, batch_size=8, warmup=1, ema_decay=0.0))
    for name, p in base.state_dict().items():
        assert torch.equal(model.base.state_dict()[name], p), name
    x, t, y, control = inputs()
    assert not torch.equal(model(x, t, y, control=control), base(x, t, y))
    assert torch.equal(model(x, t, y), base(x, t, y))


def test_a_controlled_model_round_trips_through_a_checkpoint(tmp_path):
    model = ControlledUNet.from_base(trained_base())
    with torch.no_grad():
        for z in model.zero_skips:
            z.weight.normal_(0, 0.1)
    save_checkpoint(tmp_path / "c.safetensors", model, SCHEDULE, (3, 8, 8), "v")
    loaded = load_checkpoint(tmp_path / "c.safetensors")
    assert isinstance(loaded.model, ControlledUNet) and loaded.model.config == model.config
    x, t, y, control = inputs()
    assert torch.equal(loaded.model(x, t, y, control=control), model(x, t, y, control=control))


def test_control_images_are_checked_with_clear_errors():
    model = ControlledUNet.from_base(trained_base())
    x, t, y, control = inputs()
    with pytest.raises(ValueError, match=r"control must be a tensor of shape \(3, 1, 8, 8\)"):
        model(x, t, y, control=control[:2])
    with pytest.raises(ValueError, match="control"):
        model(x, t, y, control=control.expand(3, 2, 8, 8))
    with pytest.raises(ValueError, match="NaN|finite"):
        model(x, t, y, control=torch.full_like(control, float("nan")))
    with pytest.raises(ValueError, match="not a multiple of the 2 control images"):
        with_control(model, control[:2])(x, t, y=y)
    ckpt = Checkpoint(model, SCHEDULE, "v", (3, 8, 8), 0, {}, {})
    with pytest.raises(ValueError, match="control"):
        generate(ckpt, 2, steps=2, label=0, control=torch.zeros(2, 3, 8, 8))
    plain = Checkpoint(trained_base(), SCHEDULE, "v", (3, 8, 8), 0, {}, {})
    with pytest.raises(ValueError, match="takes none"):
        generate(plain, 2, steps=2, label=0, control=torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="base must be a UNet with config"):
        model.load_base(UNet(dataclasses.replace(TINY, channels=16)))


def test_generate_steers_both_halves_of_guidance_alike():
    model = ControlledUNet.from_base(trained_base())
    with torch.no_grad():
        model.zero_mid.bias.fill_(0.3)  # a control branch that changes the output
    ckpt = Checkpoint(model, SCHEDULE, "v", (3, 8, 8), 0, {}, {})
    mask = torch.rand(1, 8, 8) > 0.5
    one = generate(ckpt, 2, steps=3, label=1, guidance=2.0, control=mask)  # one mask for all, as a bool
    each = generate(ckpt, 2, steps=3, label=1, guidance=2.0, control=mask.float().expand(2, 1, 8, 8) * 2 - 1)
    assert torch.equal(one, each)
    assert not torch.equal(one, generate(ckpt, 2, steps=3, label=1, guidance=2.0))


def test_the_shape_mask_finds_a_saturated_shape_on_a_grey_background():
    image = torch.full((1, 3, 8, 8), 0.2)  # grey, in [-1, 1]
    image[0, :, 2:5, 3:7] = torch.tensor([0.8, -0.8, -0.8])[:, None, None]  # a red rectangle
    image[0, :, 6, 0] = torch.tensor([0.1, 0.3, 0.5])  # a slightly tinted pixel: still background
    truth = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    truth[0, 0, 2:5, 3:7] = True
    assert torch.equal(shape_mask(image), truth)
    with pytest.raises(ValueError, match="images must have shape"):
        shape_mask(torch.zeros(1, 1, 8, 8))


def test_mask_iou_against_counted_areas():
    a = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
    b = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
    a[0, 0, :2], b[0, 0, 1:3] = True, True  # 8 and 8 cells sharing 4: 4 / 12
    a[1, 0] = True
    b[1, 0, 0] = True  # 4 of 16
    assert torch.allclose(mask_iou(a, b), torch.tensor([4 / 12, 4 / 16, 1.0]))  # both empty: 1
    with pytest.raises(ValueError, match="bool masks of one shape"):
        mask_iou(a.float(), b)
