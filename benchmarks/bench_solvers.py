"""Samplers on the exact problem: every deterministic minidiff sampler and spacing, optimised noise
levels (`minidiff.optimise_steps`) and diffusers' schedulers, by their distance to the converged answer.

    python benchmarks/bench_solvers.py                       # cosine schedule, T = 1000 (the shipped models')
    python benchmarks/bench_solvers.py --schedule linear
    python benchmarks/bench_solvers.py --n 8000 --fit 2000   # more noises (slower)

The problem, no training: the lessons' eight Gaussians (`minidiff.data.eight_gaussians()`, std 0.1 on a
circle of radius 2) and their exact ε-predictor, so the only error is the solver's. Every solver starts
from the same `--n` noises x_T (seed 0) and is scored by the RMS distance √(mean_j ‖x0_j - x0*_j‖²) to the
converged answer x0* from the same x_T (`reference_solution`: UniPC-3 over T log-SNR steps; how far it
moves from half as many steps is printed, a bound on its own error), at 5, 10, 20 and 50 model calls.
Calls are counted by wrapping the model: each solver gets the most steps whose calls fit the budget
(Heun: 2·steps - 1; the others one per step).

minidiff: every sampler of SAMPLERS whose output does not depend on the random generator (ancestral
and SDE samplers draw fresh noise, so from one x_T there is no single answer to converge to), with
`order` 2 and 3 for a sampler that takes it, × every spacing of SIGMA_SPACINGS, and "optimised":
`optimise_sigmas` fitted on `--fit` other noises (seed 1) from the spacing that does best on those,
with the effort of EFFORT, then judged on the `--n` noises like the rest.

diffusers: DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler (2M, data prediction) and
UniPCMultistepScheduler (orders 2 and 3), with `timestep_spacing` trailing, leading and linspace, and
with each of `use_karras_sigmas`, `use_exponential_sigmas` and `use_lu_lambdas` (uniform log-SNR) that
the scheduler takes. All get prediction_type="epsilon" and our β's as `trained_betas` (diffusers keeps
β in float32, so its own "squaredcos_cap_v2" cannot match ours to 1e-9; the difference is printed);
DDIM gets clip_sample=False (by default it clips x̂0 to [-1, 1], and these data reach radius 2.1), and
every scheduler `set_begin_index(0)`, as diffusers' pipelines do (without it, rounded timesteps that
repeat the first one make the Karras and exponential multistep runs fail). The model is called at the
scheduler's own timesteps with its own input scaling. Prints Markdown tables, writes
benchmarks/results/solvers_<schedule>.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from minidiff.data import eight_gaussians
from minidiff.optimise_steps import is_deterministic, optimise_sigmas, reference_solution
from minidiff.samplers import SAMPLERS, SIGMA_SPACINGS, noise_levels
from minidiff.schedules import NoiseSchedule

RESULTS = Path(__file__).parent / "results"
CALLS = (5, 10, 20, 50)
OPTIONS = {"order": (2, 3)}  # sampler keywords worth a row each, where a sampler takes them
EFFORT = {5: (3, 10), 10: (3, 10), 20: (2, 8), 50: (1, 6)}  # calls → (sweeps, evaluations) of optimise_sigmas
DIFFUSERS = {  # label → (scheduler class, its fixed settings)
    "DDIM": ("DDIMScheduler", {"clip_sample": False}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "DPM-Solver++(2M)": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "UniPC-2": ("UniPCMultistepScheduler", {"solver_order": 2}),
    "UniPC-3": ("UniPCMultistepScheduler", {"solver_order": 3}),
}
DIFFUSERS_SPACINGS = {  # label → settings
    **{name: {"timestep_spacing": name} for name in ("trailing", "leading", "linspace")},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "lu_lambdas": {"use_lu_lambdas": True},
}


class Counted:
    """A denoiser that counts its calls."""

    def __init__(self, model: Callable[[Tensor, Tensor], Tensor]):
        self.model, self.calls = model, 0

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        return self.model(x_t, t)


def round_mixture_eps(means: Tensor, std: float, schedule: NoiseSchedule) -> Callable[[Tensor, Tensor], Tensor]:
    """The exact ε-predictor of equal-weight round Gaussians N(μ_k, std²·I): what
    `GaussianMixture.eps_model` computes, in the closed form that needs no matrix solves (2.5× faster).
    Noised, component k is N(√ᾱ·μ_k, v·I) with v = ᾱ·std² + 1 - ᾱ, so by Tweedie's formula
    ε̂ = √(1-ᾱ)·(x_t - Σ_k r_k·√ᾱ·μ_k)/v, r = softmax_k(-‖x_t - √ᾱ·μ_k‖²/(2v))."""

    def eps(x_t: Tensor, t: Tensor) -> Tensor:
        alpha_bar = schedule.alpha_bar_at(t).to(x_t)[:, None]  # (B, 1)
        m = alpha_bar.sqrt()[:, :, None] * means.to(x_t)  # (B, K, d)
        v = alpha_bar * std**2 + 1 - alpha_bar  # (B, 1)
        r = (-(x_t[:, None, :] - m).pow(2).sum(-1) / (2 * v)).softmax(-1)  # (B, K)
        return (1 - alpha_bar).sqrt() * (x_t - (r[..., None] * m).sum(1)) / v

    return eps


def rms(x0: Tensor, reference: Tensor) -> float:
    return (x0 - reference).pow(2).sum(1).mean().sqrt().item()


def noises(n: int, seed: int) -> Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----- minidiff -----------------------------------------------------------------------------------
def minidiff_samplers(model, schedule: NoiseSchedule) -> tuple[dict[str, tuple[str, dict]], list[str]]:
    """label → (sampler, keywords) for each deterministic sampler (and `order` choice); the others' names."""
    x_T, sigmas = noises(2, 2), noise_levels(schedule, 3)
    variants, stochastic = {}, []
    for name, sampler in SAMPLERS.items():
        options = [o for o in OPTIONS if o in inspect.signature(sampler).parameters]
        for kwargs in [{o: v} for o in options for v in OPTIONS[o]] or [{}]:
            if not is_deterministic(model, x_T, schedule, name, sigmas, **kwargs):
                stochastic.append(name)
                break
            variants[name + "".join(f" ({k} {v})" for k, v in kwargs.items())] = (name, kwargs)
    return variants, stochastic


def steps_for(model, schedule: NoiseSchedule, sampler: str, kwargs: dict, calls: int) -> tuple[int, int]:
    """The most steps whose model calls fit `calls`, and their calls, counted on one noise."""
    for steps in range(calls, 0, -1):
        counted = Counted(model)
        SAMPLERS[sampler](counted, noises(1, 3), schedule, noise_levels(schedule, steps, "trailing"), **kwargs)
        if counted.calls <= calls:
            return steps, counted.calls
    raise ValueError(f"{sampler} cannot run within {calls} model calls")


def minidiff_table(model, schedule: NoiseSchedule, problem: dict, variants: dict) -> dict:
    """{label: {spacing: {calls: (rms, calls used, start of the optimised levels or None)}}}."""
    x_T, reference, x_fit, fit_reference = problem["x_T"], problem["reference"], problem["x_fit"], problem["fit_ref"]
    sigma_max = schedule.sigmas[-1].item()
    table = {}
    for label, (sampler, kwargs) in variants.items():
        rows = {spacing: {} for spacing in (*SIGMA_SPACINGS, "optimised")}
        for calls in CALLS:
            steps, used = steps_for(model, schedule, sampler, kwargs, calls)
            run = SAMPLERS[sampler]
            for spacing in SIGMA_SPACINGS:
                rows[spacing][calls] = (rms(run(model, x_T, schedule, noise_levels(schedule, steps, spacing), **kwargs),
                                            reference), used, None)
            if steps < 2:
                continue
            starts = [s for s in SIGMA_SPACINGS
                      if math.isclose(noise_levels(schedule, steps, s)[0], sigma_max, rel_tol=1e-9)]
            fit_error = {s: rms(run(model, x_fit, schedule, noise_levels(schedule, steps, s), **kwargs), fit_reference)
                         for s in starts}
            start = min(fit_error, key=fit_error.get)
            sweeps, evaluations = EFFORT[calls]
            sigmas = optimise_sigmas(model, x_fit, schedule, sampler, steps, start, reference=fit_reference,
                                     sweeps=sweeps, evaluations=evaluations, **kwargs)
            rows["optimised"][calls] = (rms(run(model, x_T, schedule, sigmas, **kwargs), reference), used, start)
        table[label] = rows
        print(f"  minidiff {label}: done", flush=True)
    return table


# ----- diffusers ----------------------------------------------------------------------------------
def diffusers_table(model, schedule: NoiseSchedule, problem: dict) -> dict:
    """{label: {spacing: {calls: (rms, calls used, None)}}}; a run that fails is recorded as its error."""
    import diffusers

    from minidiff.diffusers_bridge import scheduler_sample  # diffusers' sampling loop, as its pipelines run it

    table = {}
    for label, (class_name, fixed) in DIFFUSERS.items():
        cls = getattr(diffusers, class_name)
        takes = inspect.signature(cls.__init__).parameters
        rows = {}
        for spacing, settings in DIFFUSERS_SPACINGS.items():
            if not all(k in takes for k in settings):
                continue
            rows[spacing] = {}
            for calls in CALLS:
                scheduler = cls(num_train_timesteps=schedule.T, trained_betas=schedule.betas.numpy(),
                                prediction_type="epsilon", **fixed, **settings)
                counted = Counted(model)
                try:
                    x0 = scheduler_sample(scheduler, counted, problem["x_T"], calls)
                    rows[spacing][calls] = (rms(x0, problem["reference"]), counted.calls, None)
                except Exception as error:  # a scheduler that breaks is a result too
                    rows[spacing][calls] = (f"fails: {type(error).__name__}", counted.calls, None)
        table[label] = rows
    return table


def beta_check(schedule: NoiseSchedule) -> str:
    """How close diffusers' own cosine β's and its float32 copy of ours come to our float64 schedule."""
    from diffusers import DDIMScheduler

    line = []
    if schedule.name == "cosine":
        named = DDIMScheduler(num_train_timesteps=schedule.T, beta_schedule="squaredcos_cap_v2").betas.double()
        gap = (named - schedule.betas).abs().max()
        line.append(f"diffusers' squaredcos_cap_v2 β differ from ours by up to {gap:.1e}")
    alpha_bar = DDIMScheduler(num_train_timesteps=schedule.T, trained_betas=schedule.betas.numpy()).alphas_cumprod
    gap = ((alpha_bar.double() - schedule.alpha_bar) / schedule.alpha_bar).abs().max()
    line.append(f"with trained_betas (float32) its ᾱ is within {gap:.1e} of ours (relative)")
    return "; ".join(line)


# ----- tables -------------------------------------------------------------------------------------
def cell(entry: tuple, calls: int) -> str:
    value, used, start = entry
    text = f"{value:.4f}" if isinstance(value, float) else value
    notes = [f"{used} calls"] if used != calls else []
    notes += [f"from {start}"] if start else []
    return f"{text} ({', '.join(notes)})" if notes else text


def markdown(table: dict, first: str) -> str:
    lines = [f"| {first} | spacing | " + " | ".join(f"{c} calls" for c in CALLS) + " |",
             "|---|---|" + "---:|" * len(CALLS)]
    for label, rows in table.items():
        for spacing, cells in rows.items():
            values = " | ".join(cell(cells[c], c) if c in cells else "—" for c in CALLS)
            lines.append(f"| {label} | {spacing} | {values} |")
    return "\n".join(lines)


def best(table: dict, calls: int, optimised: bool = True) -> tuple[float, str]:
    """The lowest RMS at `calls` and which row has it (leaving out the optimised levels if asked)."""
    found = [(cells[calls][0], f"{label}, {spacing}")
             for label, rows in table.items() for spacing, cells in rows.items()
             if calls in cells and isinstance(cells[calls][0], float) and (optimised or spacing != "optimised")]
    return min(found)


def summary(mine: dict, theirs: dict | None) -> tuple[str, list[dict]]:
    """Per budget: minidiff's best, its best with a fixed spacing, diffusers' best, and the ratios."""
    lines = ["| calls | minidiff's best | RMS | diffusers' best | RMS | ratio "
             "| minidiff's best fixed spacing | RMS | ratio |", "|---:|---|---:|---|---:|---:|---|---:|---:|"]
    rows = []
    for calls in CALLS:
        (ours, what), (fixed, fixed_what) = best(mine, calls), best(mine, calls, optimised=False)
        other, other_what = best(theirs, calls) if theirs else (None, "—")
        rows.append({"calls": calls, "minidiff": what, "minidiff_rms": ours, "diffusers": other_what,
                     "diffusers_rms": other, "ratio": ours / other if other else None, "minidiff_fixed": fixed_what,
                     "minidiff_fixed_rms": fixed, "fixed_ratio": fixed / other if other else None})
        theirs_cells = f"{other:.4f} | {ours / other:.2f}" if other else "— | —"
        fixed_ratio = f"{fixed / other:.2f}" if other else "—"
        lines.append(f"| {calls} | {what} | {ours:.4f} | {other_what} | {theirs_cells} "
                     f"| {fixed_what} | {fixed:.4f} | {fixed_ratio} |")
    return "\n".join(lines), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedule", choices=["cosine", "linear"], default="cosine")
    parser.add_argument("--n", type=int, default=4000, help="noises the solvers are judged on (default 4000)")
    parser.add_argument("--fit", type=int, default=1000,
                        help="other noises the optimised levels are fitted to (default 1000)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start_time = time.perf_counter()
    schedule = NoiseSchedule.from_name(args.schedule, T=1000)
    mixture = eight_gaussians()
    model = round_mixture_eps(mixture.means, 0.1, schedule)
    check = noises(256, 4) * 3
    t = torch.linspace(0, schedule.T - 1, 256, dtype=torch.float64)
    gap = (model(check, t) - mixture.eps_model(schedule)(check, t)).abs().max().item()
    have_diffusers = importlib.util.find_spec("diffusers") is not None
    versions = f"torch {torch.__version__}"
    if have_diffusers:
        import diffusers

        versions += f", diffusers {diffusers.__version__}"
    print(f"{args.schedule} schedule, T = {schedule.T}; eight Gaussians (std 0.1, radius 2), exact ε "
          f"(within {gap:.0e} of GaussianMixture.eps_model); {args.n} noises judged, {args.fit} to fit; "
          f"{torch.get_num_threads()} thread(s); {versions}")
    x_T, x_fit = noises(args.n, 0), noises(args.fit, 1)
    reference = reference_solution(model, x_T, schedule, order=3)
    moved = rms(reference_solution(model, x_T, schedule, schedule.T // 2, order=3), reference)
    fit_reference = reference_solution(model, x_fit, schedule, order=3)
    problem = {"x_T": x_T, "reference": reference, "x_fit": x_fit, "fit_ref": fit_reference}
    print(f"reference: UniPC-3 over {schedule.T} log-SNR steps; {schedule.T // 2} steps land {moved:.1e} RMS away\n")

    variants, stochastic = minidiff_samplers(model, schedule)
    print(f"minidiff samplers: {', '.join(variants)}; left out (they draw fresh noise): {', '.join(stochastic)}")
    mine = minidiff_table(model, schedule, problem, variants)
    theirs, betas = None, None
    if have_diffusers:
        betas = beta_check(schedule)
        theirs = diffusers_table(model, schedule, problem)
    else:
        print('diffusers is not installed: measuring minidiff alone. For the comparison: pip install -e ".[bench]"')
    seconds = time.perf_counter() - start_time

    print(f"\nRMS distance to the converged answer, {args.n} noises ({args.schedule} schedule)\n")
    print(markdown(mine, "minidiff sampler") + "\n")
    if theirs:
        print(f"{betas}\n")
        print(markdown(theirs, "diffusers scheduler") + "\n")
    text, rows = summary(mine, theirs)
    print(text + "\n")
    if theirs:
        missed = [r["calls"] for r in rows if r["ratio"] > (0.75 if r["calls"] <= 10 else 1.0)]
        verdict = "met" if not missed else f"not met at {', '.join(map(str, missed))} calls"
        print(f"aim (ratio ≤ 1 at every count, ≤ 0.75 at 5 and 10 calls): {verdict}")
    print(f"{seconds:.0f} s in all")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"solvers_{args.schedule}.json"
    results = {"schedule": args.schedule, "n": args.n, "fit": args.fit, "threads": torch.get_num_threads(),
               "versions": versions, "reference_moved": moved, "betas": betas, "seconds": seconds,
               "minidiff": mine, "diffusers": theirs, "summary": rows}
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
