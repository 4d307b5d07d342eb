"""Flow matching on the straight path x_t = (1-t)·x0 + t·ε, checked against closed forms: the exact
velocity of Gaussian data, the exact ε of a Gaussian mixture (the bridge to diffusion), the exact
solution of the flow ODE for Gaussian data (convergence orders), and a mixture's moments."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from minidiff import flow
from minidiff.checkpoint import load_checkpoint, model_from_config
from minidiff.data import GaussianMixture, make_toy, three_gaussians
from minidiff.flow import FlowObjective
from minidiff.generate import generate
from minidiff.guidance import classifier_free_guidance
from minidiff.metrics import sliced_wasserstein
from minidiff.nn import MLPConfig, UNetConfig
from minidiff.recipes import get_recipe, train_recipe
from minidiff.samplers import ddim, noise_levels
from minidiff.schedules import NoiseSchedule
from minidiff.train import TrainConfig, train
from minidiff.trajectory import Trajectory

MIXTURE = three_gaussians()


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor, mu: float, s: float) -> torch.Tensor:
    """E[ε - x0 | x_t] for 1-D data N(mu, s²), written out by hand: x_t ~ N(a·mu, a²s² + b²),
    a = 1 - t, b = t, so v = ((b - a·s²)·(x - a·mu))/(a²s² + b²) - mu."""
    a, b = 1 - t[:, None], t[:, None]
    return (b - a * s**2) * (x - a * mu) / (a**2 * s**2 + b**2) - mu


def test_the_path_its_ends_and_its_velocity():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    t = torch.rand(5, generator=g, dtype=torch.float64)
    assert torch.equal(flow.interpolate(x0, eps, torch.zeros(5)), x0)
    assert torch.equal(flow.interpolate(x0, eps, torch.ones(5)), eps)
    h = 1e-6  # dx_t/dt by central differences is the target ε - x0
    slope = (flow.interpolate(x0, eps, t + h) - flow.interpolate(x0, eps, t - h)) / (2 * h)
    assert torch.allclose(slope, flow.velocity_target(x0, eps), atol=1e-8)
    x_t, v = flow.interpolate(x0, eps, t), flow.velocity_target(x0, eps)
    assert torch.allclose(flow.x0_from_velocity(x_t, v, t), x0, atol=1e-12)
    assert torch.allclose(flow.eps_from_velocity(x_t, v, t), eps, atol=1e-12)
    assert torch.allclose(flow.velocity_from_eps(x_t, flow.eps_from_velocity(x_t, v, t), t), v, atol=1e-9)


def test_the_exact_mixture_velocity_matches_the_gaussian_formula():
    one = GaussianMixture(torch.tensor([[0.7]]), torch.tensor([[[0.3**2]]]), torch.ones(1))
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)[:, None]
    for t_value in (0.0, 0.2, 0.5, 0.9, 1.0):
        t = torch.full((13,), t_value, dtype=torch.float64)
        assert torch.allclose(one.velocity_model()(x, t), gaussian_velocity(x, t, 0.7, 0.3), atol=1e-10)


def test_the_exact_velocity_is_the_regression_target():
    """The exact field is E[ε - x0 | x_t]: its flow-matching loss is the smallest, and adding
    any field to it raises the loss by that field's mean square (Monte Carlo, 200k pairs)."""
    g = torch.Generator().manual_seed(0)
    x0 = MIXTURE.sample(200_000, g).double()
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.rand(len(x0), generator=g, dtype=torch.float64)
    x_t, target = flow.interpolate(x0, eps, t), flow.velocity_target(x0, eps)
    v = MIXTURE.velocity_model()(x_t, t)
    best = (v - target).pow(2).sum(1).mean().item()
    bump = 0.3 * torch.sin(x_t)  # any other field
    assert (v + bump - target).pow(2).sum(1).mean().item() == pytest.approx(best + bump.pow(2).sum(1).mean().item(),
                                                                          rel=2e-3)


def test_the_bridge_turns_the_exact_velocity_into_the_exact_eps_and_back():
    """Two independent closed forms agree: the mixture's ε by Tweedie's formula on the VP
    process, and its flow velocity by Gaussian conditioning on the straight path."""
    schedule = NoiseSchedule.cosine(1000)
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    tau = torch.randint(0, 1000, (64,), generator=g).double()
    eps_bridge = flow.eps_model_from_velocity(MIXTURE.velocity_model(), schedule)(x, tau)
    assert torch.allclose(eps_bridge, MIXTURE.eps_model(schedule)(x, tau), atol=1e-6)
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.98 + 0.01
    v_bridge = flow.velocity_model_from_eps(MIXTURE.eps_model(schedule), schedule)(x, t)
    assert torch.allclose(v_bridge, MIXTURE.velocity_model()(x, t), atol=1e-6)


@pytest.mark.parametrize(("solver", "order"), [("euler", 1), ("heun", 2), ("midpoint", 3)])
def test_solvers_converge_at_their_order_on_the_gaussian_closed_form(solver, order):
    """For data N(mu, s²) the flow ODE carries x1 to exactly mu + s·x1 (the path keeps the
    standardised coordinate). The error at 8 … 64 steps falls with the expected slope. On this
    problem the midpoint rule's second-order error term vanishes (measured: 3.0); on a nonlinear
    field it is second order, as the next test shows."""
    mu, s = 0.7, 0.3
    x1 = torch.linspace(-2.5, 2.5, 11, dtype=torch.float64)[:, None]
    errors = []
    for steps in (8, 16, 32, 64):
        x0 = flow.sample(lambda x, t: gaussian_velocity(x, t, mu, s), x1, steps, solver)
        errors.append((x0 - (mu + s * x1)).abs().max().item())
    slopes = [math.log2(a / b) for a, b in pairwise(errors)]
    assert all(abs(p - order) < 0.3 for p in slopes), (errors, slopes)


@pytest.mark.parametrize(("solver", "order"), [("euler", 1), ("heun", 2), ("midpoint", 2)])
def test_solvers_converge_at_their_order_on_a_nonlinear_field(solver, order):
    """dx/dt = -x²/2 + sin 3t from t = 1 to 0, against Heun with 4,096 steps (its own error
    about 1e-9, far below the errors measured here)."""
    field = lambda x, t: -(x**2) / 2 + torch.sin(3 * t[:, None])  # noqa: E731
    x1 = torch.linspace(-1, 1, 5, dtype=torch.float64)[:, None]
    reference = flow.sample(field, x1, 4096, "heun")
    errors = [(flow.sample(field, x1, steps, solver) - reference).abs().max().item() for steps in (8, 16, 32, 64)]
    slopes = [math.log2(a / b) for a, b in pairwise(errors)]
    assert all(abs(p - order) < 0.2 for p in slopes), (errors, slopes)


@pytest.mark.parametrize("solver", ["euler", "heun", "midpoint"])
def test_each_solver_recovers_the_mixture(solver):
    """6,000 samples with the exact velocity: weights within 0.025, means within 0.05,
    covariances within 0.05 of the mixture's (about 4 standard errors), as tests/test_ddpm.py."""
    g = torch.Generator().manual_seed(0)
    steps = {"euler": 200, "heun": 50, "midpoint": 50}[solver]
    x = flow.sample(MIXTURE.velocity_model(), torch.randn(6000, 2, generator=g, dtype=torch.float64), steps, solver)
    k = MIXTURE.responsibilities(x).argmax(1)
    weights = torch.bincount(k, minlength=3).double() / len(x)
    assert (weights - MIXTURE.weights).abs().max() < 0.025
    for j in range(3):
        assert (x[k == j].mean(0) - MIXTURE.means[j]).abs().max() < 0.05
        assert (torch.cov(x[k == j].T) - MIXTURE.covs[j]).abs().max() < 0.05


def test_flow_ode_and_ddim_land_on_the_same_samples_as_steps_grow():
    """The same noise, two coordinates: the flow ODE (Heun on the exact velocity) and DDIM
    (on the exact ε) give the same samples, up to a discretisation error that shrinks with steps."""
    schedule = NoiseSchedule.cosine(1000)
    x1 = torch.randn(500, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    reference = flow.sample(MIXTURE.velocity_model(), x1, 400, "heun")
    gaps = [(ddim(MIXTURE.eps_model(schedule), x1, schedule, noise_levels(schedule, n)) - reference).abs().mean()
            for n in (10, 50, 250)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.01, gaps
    via_flow = ddim(flow.eps_model_from_velocity(MIXTURE.velocity_model(), schedule), x1, schedule,
                    noise_levels(schedule, 50))
    assert torch.allclose(via_flow, ddim(MIXTURE.eps_model(schedule), x1, schedule, noise_levels(schedule, 50)),
                          atol=1e-5)


def test_time_sampling_and_the_shift():
    g = torch.Generator().manual_seed(0)
    t = flow.sample_t(200_000, "logit_normal", g, m=0.5, s=0.8)
    u = torch.logit(t.double())
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.std() - 0.8) < 0.01
    assert 0 <= flow.sample_t(1000, "uniform", g).min() and flow.sample_t(1000, "uniform", g).max() <= 1
    ends = flow.shift_t(torch.tensor([0.0, 0.5, 1.0]), 3.0)
    assert torch.allclose(ends, torch.tensor([0.0, 0.75, 1.0]))  # 3·0.5/(1 + 2·0.5)
    grid = flow.time_grid(4, shift=3.0)
    assert grid[0] == 1.0 and grid[-1] == 0.0 and all(a > b for a, b in pairwise(grid))
    assert grid[2] == pytest.approx(0.75)


def test_guidance_wraps_a_velocity_model_as_it_wraps_an_eps_model():
    """Per class, the exact velocity of that component; w = 1 gives the conditional field, w = 0
    the unconditional, and in between the SD convention's straight line."""
    fields = [MIXTURE.component(k).velocity_model() for k in range(3)] + [MIXTURE.velocity_model()]

    def v_model(x, t, y):
        return torch.stack([fields[k](x[i : i + 1], t[i : i + 1])[0] for i, k in enumerate(y.tolist())])

    x, t = torch.randn(6, 2, dtype=torch.float64), torch.full((6,), 0.6, dtype=torch.float64)
    y, null = torch.tensor([0, 1, 2, 0, 1, 2]), torch.full((6,), 3)
    cond, uncond = v_model(x, t, y), v_model(x, t, null)
    for w in (0.0, 1.0, 3.0):
        guided = classifier_free_guidance(v_model, y, null, w)(x, t)
        assert torch.allclose(guided, uncond + w * (cond - uncond), atol=1e-12)
    trajectory = Trajectory()
    flow.sample(classifier_free_guidance(v_model, y, null, 3.0), x, 4, "euler", callback=trajectory)
    assert trajectory.xs.shape == (5, 6, 2) and trajectory.ts == [1.0, 0.75, 0.5, 0.25]


def test_bad_arguments_are_named():
    v = MIXTURE.velocity_model()
    x = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown solver 'rk4'"):
        flow.sample(v, x, 10, "rk4")
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        flow.sample(v, x, 0)
    with pytest.raises(ValueError, match="strictly decreasing values in \\[0, 1\\]"):
        flow.euler(v, x, [1.0, 0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="shift must be a positive number"):
        flow.time_grid(10, shift=0.0)
    with pytest.raises(FloatingPointError, match="NaN or inf at t = 1"):
        flow.sample(lambda x, t: x * float("nan"), x, 3)
    with pytest.raises(ValueError, match="x_t must be \\(B, 2\\)"):
        v(torch.randn(4, 3), torch.rand(4))
    with pytest.raises(ValueError, match="timesteps"):
        FlowObjective(timesteps="cosine")
    with pytest.raises(ValueError, match="p_uncond"):
        FlowObjective(p_uncond=1.0)
    with pytest.raises(ValueError, match="unknown coupling 'sinkhorn'"):
        FlowObjective(coupling="sinkhorn")
    net = model_from_config(MLPConfig(hidden=8, layers=1, time_dim=4))
    with pytest.raises(ValueError, match=r"reflow trains on pairs: data must be \(x0, x1\[, y\]\)"):
        FlowObjective(coupling="reflow").check(net, (x.float(),))


def test_the_engine_trains_a_flow_model_that_learns_the_mixture():
    """FlowObjective on the one engine: an MLP trained for 1,500 steps on 2-D mixture data comes
    close to the exact velocity (its error a fraction of the field's own size), and Euler with
    it gives samples whose means match the data's."""
    torch.manual_seed(0)
    data = MIXTURE.sample(5000, torch.Generator().manual_seed(0))
    net = model_from_config(MLPConfig(hidden=64, layers=3, time_dim=16))
    ema = train(net, (data,), FlowObjective(), TrainConfig(steps=1500, batch_size=256, lr=2e-3, warmup=50,
                                                           ema_decay=0.99)).ema
    v_net = flow.as_velocity_model(ema)
    g = torch.Generator().manual_seed(1)
    x, t = MIXTURE.sample(2000, g), torch.rand(2000, generator=g)
    x_t = flow.interpolate(x, torch.randn(x.shape, generator=g), t)
    with torch.no_grad():
        exact = MIXTURE.velocity_model()(x_t, t)
        error = (v_net(x_t, t) - exact).pow(2).mean() / exact.pow(2).mean()
        samples = flow.sample(v_net, torch.randn(4000, 2, generator=g), 50, "heun")
    assert error < 0.1, error
    assert (samples.mean(0) - data.mean(0)).abs().max() < 0.15


def test_a_toy_set_trains_with_labels_dropped(tmp_path):
    """Conditional flow training with p_uncond; the checkpoint records the flow objective."""
    images = make_toy("two_moons", 16).repeat(1, 32)[:, :64].reshape(16, 1, 8, 8)
    labels = torch.arange(16) % 2
    net = model_from_config(UNetConfig(channels=8, channel_mults=(1, 2), blocks_per_level=1, groups=4, heads=2,
                                       num_classes=2))
    train(net, (images, labels), FlowObjective(p_uncond=0.2, timesteps="logit_normal"),
          TrainConfig(steps=3, batch_size=4, warmup=1, checkpoint_every=3), out_dir=tmp_path)
    meta = load_checkpoint(tmp_path / "model.safetensors").meta
    assert meta["objective"] == {"objective": "flow", "path": "straight", "p_uncond": 0.2,
                                 "timesteps": "logit_normal", "shift": 1.0, "coupling": "independent",
                                 "time_scale": 1000.0}


def test_a_flow_checkpoint_samples_through_generate_with_either_kind_of_sampler(tmp_path):
    """A flow model's checkpoint records prediction "flow"; `generate` runs its velocity through a
    flow solver (the same as `flow.sample` by hand) or, through the bridge, through DDIM."""
    recipe = get_recipe("toy_flow")
    assert isinstance(recipe.objective(), FlowObjective) and recipe.objective().timesteps == "logit_normal"
    train_recipe(recipe, tmp_path, steps=20)
    ckpt = load_checkpoint(tmp_path / "model.safetensors")
    assert ckpt.prediction == "flow" and ckpt.schedule.name == "cosine"
    x1 = torch.randn((8, 2), generator=torch.Generator().manual_seed(5))
    by_hand = flow.sample(ckpt.velocity_model, x1, 6, "heun")
    assert torch.equal(generate(ckpt, 8, sampler="flow_heun", steps=6, seed=5), by_hand)
    bridged = ddim(ckpt.eps_model, x1, ckpt.schedule, noise_levels(ckpt.schedule, 200))
    assert (bridged - flow.sample(ckpt.velocity_model, x1, 200, "heun")).abs().max() < 0.05  # one ODE, two solvers
    with pytest.raises(ValueError, match="unknown sampler 'flow_rk4'.*flow_euler"):
        generate(ckpt, 2, sampler="flow_rk4")


def test_ot_pair_finds_the_least_cost_permutation():
    """Against brute force over all 720 pairings of 6 points."""
    from itertools import permutations

    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    paired = flow.ot_pair(x0, eps)
    best = min((x0 - eps[list(p)]).pow(2).sum().item() for p in permutations(range(6)))
    assert (x0 - paired).pow(2).sum().item() == pytest.approx(best, rel=1e-6)
    assert torch.equal(paired[paired[:, 0].argsort()], eps[eps[:, 0].argsort()])  # the same noise, reordered


def test_ot_pair_in_one_dimension_pairs_by_rank():
    """For a convex cost on the line, the optimal plan is the monotone one: i-th smallest to i-th smallest."""
    g = torch.Generator().manual_seed(1)
    x0, eps = 3 + torch.randn(200, 1, generator=g), torch.randn(200, 1, generator=g)
    paired = flow.ot_pair(x0, eps)
    assert torch.equal(paired[x0[:, 0].argsort(), 0], eps[:, 0].sort().values)


def test_straightness_is_zero_for_straight_paths_and_not_for_the_mixture():
    mu = torch.tensor([0.5, -1.0], dtype=torch.float64)
    to_a_point = lambda x, t: (x - mu) / t[:, None]  # noqa: E731  data = the point mu: every path is a line
    x1 = torch.randn(500, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert flow.straightness(to_a_point, x1) < 1e-20
    assert flow.straightness(MIXTURE.velocity_model(), x1) > 0.05


def test_reflow_and_ot_coupling_straighten_the_paths():
    """Reflow of the *exact* mixture flow (the best plain flow matching can do) gives a model with
    straighter paths and better one-step samples than the exact field; OT-coupled training bends
    less than independent coupling at the same budget."""
    g = torch.Generator().manual_seed(3)
    v_star = MIXTURE.velocity_model()
    x1 = torch.randn(4000, 2, generator=g)
    pairs = flow.reflow_data(v_star, x1, steps=50)
    assert len(pairs) == 2 and torch.equal(pairs[1], x1)
    config = TrainConfig(steps=1000, batch_size=256, lr=2e-3, warmup=50, ema_decay=0.99)
    data = MIXTURE.sample(4000, g)

    def trained(data: tuple[torch.Tensor, ...], coupling: str):
        torch.manual_seed(0)
        net = model_from_config(MLPConfig(hidden=64, layers=3, time_dim=16))
        return flow.as_velocity_model(train(net, data, FlowObjective(coupling=coupling), config).ema)

    v_reflow, v_ot, v_indep = trained(pairs, "reflow"), trained((data,), "ot"), trained((data,), "independent")
    probe = torch.randn(2000, 2, generator=g)
    with torch.no_grad():
        s = {name: flow.straightness(v, probe) for name, v in
             dict(exact=v_star, reflow=v_reflow, ot=v_ot, independent=v_indep).items()}
        truth = MIXTURE.sample(2000, g)
        one_step = {name: sliced_wasserstein(flow.sample(v, probe, 1), truth) for name, v in
                    dict(exact=v_star, reflow=v_reflow).items()}
    assert s["reflow"] < 0.1 * s["exact"], s
    assert s["ot"] < 0.1 * s["independent"], s
    assert one_step["reflow"] < 0.25 * one_step["exact"], one_step
