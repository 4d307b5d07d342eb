"""The command line: train a recipe, sample from a checkpoint.

    python -m minidiff train --recipe digits --out runs/digits
    python -m minidiff train --recipe digits --out runs/digits --resume      # after an interruption
    python -m minidiff sample --checkpoint runs/digits/model.safetensors --out digits.png
    python -m minidiff sample --checkpoint runs/shapes_text/model.safetensors --prompt "a large red star"
    python -m minidiff sample --checkpoint runs/shapes_latent/model.safetensors --label 3 --vae vae_shapes

`python -m minidiff train --help` lists the recipes; `sample --help` the samplers and options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from minidiff.checkpoint import load_checkpoint
from minidiff.course import default_device
from minidiff.forward import Denoiser
from minidiff.guidance import class_condition, classifier_free_guidance
from minidiff.latent import decode
from minidiff.nn.text import TextUNet
from minidiff.pretrained import load_vae
from minidiff.recipes import RECIPES, train_recipe
from minidiff.samplers import SAMPLERS, sample
from minidiff.train import CHECKPOINT, MODEL, save_samples


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _device(text: str) -> torch.device:
    try:
        return torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected a device such as cpu, cuda, cuda:1 or mps, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minidiff", description="Train diffusion models and sample from them."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    recipes = "\n".join(f"  {r.name:<12} {r.description}" for r in RECIPES.values())
    train = commands.add_parser(
        "train",
        help="train a named recipe",
        description="Train a named recipe. Checkpoints are written atomically to --out, so an\n"
        "interrupted run can be continued with --resume.",
        epilog=f"recipes:\n{recipes}\n\nwritten to --out: {CHECKPOINT} (the run, for --resume), {MODEL} "
        "(the EMA model, at the end), samples_<step>.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--recipe", required=True, choices=RECIPES, metavar="NAME", help="one of: " + ", ".join(RECIPES))
    train.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for checkpoints and samples")
    train.add_argument("--steps", type=_positive_int, help="total steps of the run (default: the recipe's)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--device", type=_device, help="cpu, cuda, mps… (default: a GPU if there is one)")
    train.set_defaults(run=_train)

    sampler = commands.add_parser(
        "sample",
        help="draw samples from a checkpoint into a PNG",
        description="Draw samples from a trained checkpoint and save them as one PNG: a grid of "
        "images, or a scatter plot of 2-D points.",
    )
    sampler.add_argument("--checkpoint", required=True, type=Path, metavar="FILE", help=f"e.g. runs/digits/{MODEL}")
    sampler.add_argument("--sampler", default="ddim", choices=SAMPLERS, help="default: ddim")
    sampler.add_argument("--steps", type=_positive_int, default=50, help="sampling steps (default: 50)")
    sampler.add_argument("--n", type=_positive_int, default=64, help="number of samples (default: 64)")
    sampler.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sampler.add_argument("--out", type=Path, default=Path("samples.png"), help="PNG file (default: samples.png)")
    sampler.add_argument("--label", type=int, help="class to draw, for a class-conditional model (e.g. 3)")
    sampler.add_argument("--prompt", help='caption to draw, for a text-conditional model (e.g. "a large red star")')
    sampler.add_argument(
        "--guidance", type=float, default=3.0, help="guidance scale w with --label or --prompt (default: 3; 1 = none)"
    )
    sampler.add_argument("--vae", metavar="NAME", help="shipped VAE that decodes a latent model's samples (vae_shapes)")
    sampler.add_argument("--device", type=_device, help="cpu, cuda, mps… (default: a GPU if there is one)")
    sampler.set_defaults(run=_sample)
    return parser


def _train(args: argparse.Namespace) -> None:
    result = train_recipe(args.recipe, args.out, steps=args.steps, resume=args.resume, device=args.device)
    step, loss = result.losses[-1]
    print(f"trained {args.recipe} to step {step} (last loss {loss:.4f}); model: {args.out / MODEL}")


def _sample(args: argparse.Namespace) -> None:
    device = args.device or default_device()
    ckpt = load_checkpoint(args.checkpoint, device=device)
    g = torch.Generator(device).manual_seed(args.seed)
    if args.vae is None and len(ckpt.sample_shape) == 3 and ckpt.sample_shape[0] not in (1, 3):
        raise ValueError(
            f"{args.checkpoint} draws {'×'.join(map(str, ckpt.sample_shape))} latents, not images: "
            "name the VAE that decodes them with --vae (e.g. --vae vae_shapes)"
        )
    x_T = torch.randn((args.n, *ckpt.sample_shape), generator=g, device=device)
    x0 = sample(_denoiser(ckpt, args), x_T, ckpt.schedule, args.sampler, args.steps, generator=g)
    if args.vae is not None:
        x0 = decode(load_vae(args.vae, device=device), x0)
    print(f"{args.n} samples ({args.sampler}, {args.steps} steps) → {save_samples(x0, args.out)}")


def _denoiser(ckpt, args: argparse.Namespace) -> Denoiser:
    """The checkpoint's ε-predictor, guided towards --label or --prompt if one is given (a
    conditional model without either draws unconditional samples: its null condition)."""
    if args.label is None and args.prompt is None:
        return ckpt.eps_model
    net = ckpt.model
    if args.prompt is not None and args.label is not None:
        raise ValueError("give --label or --prompt, not both")
    if not getattr(net, "conditional", False):
        raise ValueError(f"--label/--prompt: {args.checkpoint} holds an unconditional model")
    if (args.prompt is not None) != isinstance(net, TextUNet):
        wanted = "--prompt (a text-conditional model)" if isinstance(net, TextUNet) else "--label (a class model)"
        raise ValueError(f"{args.checkpoint} takes {wanted}")
    device = next(net.parameters()).device
    if args.prompt is not None:
        y = net.tokenizer.encode([args.prompt] * args.n).to(device)
    else:
        y = class_condition(net, torch.full((args.n,), args.label, device=device))
    return classifier_free_guidance(ckpt.eps_model, y, net.null_condition(y), args.guidance)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a usage error, 1 for a failed run)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:  # bad arguments, CheckpointError
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"{parser.prog} {args.command}: training failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
