"""The command line: train a recipe, sample from a checkpoint, train the metrics' classifiers.

    python -m minidiff train --recipe digits --out runs/digits
    python -m minidiff train --recipe digits --out runs/digits --resume      # after an interruption
    python -m minidiff sample --checkpoint runs/digits/model.safetensors --out digits.png
    python -m minidiff sample --checkpoint runs/shapes_text/model.safetensors --prompt "a large red star"
    python -m minidiff sample --checkpoint runs/shapes_latent/model.safetensors --label 3   # decoded by its VAE
    python -m minidiff classifier digits                                      # re-train a shipped classifier

`python -m minidiff train --help` lists the recipes; `sample --help` the samplers and options.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

import matplotlib.image
import torch

from minidiff.checkpoint import load_checkpoint
from minidiff.classifier import CLASSIFIER_RECIPES, train_and_save
from minidiff.course import default_device
from minidiff.files import WEIGHTS_DIR
from minidiff.forward import is_controlled
from minidiff.generate import DEFAULT_GUIDANCE, FLOW_SOLVERS, SampleGrids, generate
from minidiff.recipes import RECIPES, get_recipe, train_recipe
from minidiff.samplers import SAMPLERS
from minidiff.train import CHECKPOINT, MODEL, init_distributed
from minidiff.viz import IMAGE_FORMATS, save_samples


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _seed(text: str) -> int:
    if not text.isdigit() or int(text) >= 2**63:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**63), got {text!r}")
    return int(text)


def _device(text: str) -> torch.device:
    """A device that this machine has: cpu, cuda[:i] with a GPU and a CUDA build, mps on a Mac."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected a device such as cpu, cuda, cuda:1 or mps, got {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this PyTorch build sees no CUDA GPU; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text!r}: there are only {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: Apple's MPS is not available here; use --device cpu")
    return device


def _check_out_dir(path: Path) -> None:
    """Before training: --out must be (or become) a writable folder, so that the first
    checkpoint, minutes later, cannot fail on it."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"--out {path} is a file; name a folder for the run's checkpoints")
    path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {path}: the folder is not writable; choose another one")


def _check_out_file(path: Path) -> None:
    """Before sampling: --out must name a picture (or WAV) file of a known format in a writable folder."""
    if path.is_dir():
        raise IsADirectoryError(f"--out {path} is a folder; name the picture file to write, e.g. {path}/samples.png")
    if path.suffix.lower().lstrip(".") not in (*IMAGE_FORMATS, "wav"):
        raise ValueError(f"--out {path}: unknown picture format {path.suffix!r}; use .{', .'.join(IMAGE_FORMATS)} "
                         "(or .wav for a sound model)")
    _check_out_dir(path.parent)


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
    train.add_argument("--shards", type=_positive_int, metavar="K",
                       help="split each batch in K shards, each with its own noise: one process accumulates them, "
                            "K processes under torchrun take one each, and the two runs match (default: the "
                            "number of processes)")
    train.add_argument("--device", type=_device, help="cpu, cuda, mps… (default: a GPU if there is one)")
    train.set_defaults(run=_train)

    sampler = commands.add_parser(
        "sample",
        help="draw samples from a checkpoint into a PNG (or a WAV for sounds)",
        description="Draw samples from a trained checkpoint and save them as one PNG: a grid of "
        "images (clips: one row each), or a scatter plot of 2-D points; or, to a .wav file, a sound model's "
        "notes one after another.",
    )
    sampler.add_argument("--checkpoint", required=True, type=Path, metavar="FILE", help=f"e.g. runs/digits/{MODEL}")
    sampler.add_argument("--sampler", default="ddim", choices=[*SAMPLERS, *FLOW_SOLVERS],
                         help="default: ddim; flow_*: the straight path's ODE (minidiff.flow)")
    sampler.add_argument("--steps", type=_positive_int, default=50, help="sampling steps (default: 50)")
    sampler.add_argument("--n", type=_positive_int, default=64, help="number of samples (default: 64)")
    sampler.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    sampler.add_argument(
        "--out", type=Path, default=Path("runs/samples.png"),
        help="picture file, or .wav for a sound model (default: runs/samples.png)"
    )
    sampler.add_argument("--label", type=int, help="class to draw, for a class-conditional model (e.g. 3)")
    sampler.add_argument("--prompt", help='caption to draw, for a text-conditional model (e.g. "a large red star")')
    sampler.add_argument(
        "--guidance",
        type=float,
        help=f"guidance scale w with --label or --prompt (default: {DEFAULT_GUIDANCE:g}, or 1 for a consistency "
        "model, whose guidance is distilled in; 1 = none)",
    )
    sampler.add_argument(
        "--control", type=Path, metavar="PNG",
        help="for a ControlNet: a mask image (white where the shape goes, any size: it is scaled to the model's), "
        "the same for every sample",
    )
    sampler.add_argument("--device", type=_device, help="cpu, cuda, mps… (default: a GPU if there is one)")
    sampler.set_defaults(run=_sample)

    classifier = commands.add_parser(
        "classifier",
        help="train a dataset's classifier (the metrics' feature extractor) and ship it",
        description="Train the classifier of a dataset on the CPU with its recipe, score it on the test "
        "split and write it, with its manifest entry, into the weights folder.",
    )
    classifier.add_argument("dataset", choices=CLASSIFIER_RECIPES)
    classifier.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="weights folder (default: the package's)")
    classifier.set_defaults(run=_classifier)
    return parser


def _train(args: argparse.Namespace) -> None:
    """Train a recipe; under `torchrun --nproc-per-node N`, on N processes (process 0 writes and prints)."""
    init_distributed()
    _check_out_dir(args.out)
    recipe = get_recipe(args.recipe)
    callbacks = []
    if recipe.sample_every:
        objective, shape = recipe.objective(), recipe.sample_shape()
        callbacks.append(SampleGrids(args.out, objective, shape, recipe.sample_every, recipe.n_samples))
    result = train_recipe(
        recipe, args.out, steps=args.steps, shards=args.shards, resume=args.resume, device=args.device,
        callbacks=callbacks,
    )
    step, loss = result.losses[-1]
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
        if int(os.environ["RANK"]) > 0:
            return
    print(f"trained {args.recipe} to step {step} (last loss {loss:.4f}); model: {args.out / MODEL}")


def _sample(args: argparse.Namespace) -> None:
    _check_out_file(args.out)
    _check_finished(args.checkpoint)
    ckpt = load_checkpoint(args.checkpoint, device=args.device or default_device())
    control = None if args.control is None else _mask(args.control, ckpt.sample_shape[-2:])
    if control is None and is_controlled(ckpt.model):
        print("no --control: a ControlNet without its control image samples as its base model")
    images = generate(
        ckpt, args.n, sampler=args.sampler, steps=args.steps, label=args.label, prompt=args.prompt,
        guidance=args.guidance, seed=args.seed, control=control,
    )
    print(f"{args.n} samples ({args.sampler}, {args.steps} steps) → {save_samples(images, args.out)}")


def _mask(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """A picture file as a mask (1, H, W) of the model's size: bright (> 0.5 in grey) is True."""
    try:
        picture = torch.as_tensor(matplotlib.image.imread(path), dtype=torch.float32)  # (h, w) or (h, w, channels)
    except (OSError, ValueError, SyntaxError) as error:  # Pillow's errors for a file that is not a picture
        raise ValueError(f"--control: cannot read {path} as a picture ({error})") from None
    grey = picture[..., :3].mean(-1) if picture.ndim == 3 else picture  # (h, w); alpha is ignored
    grey = grey / 255 if grey.max() > 1 else grey  # 8-bit JPEGs come as 0…255
    scaled = torch.nn.functional.interpolate(grey[None, None], size=tuple(size), mode="area")  # (1, 1, H, W)
    return scaled[0] > 0.5


def _check_finished(checkpoint: Path) -> None:
    """A run's model.safetensors is written when it ends; name what to do if only its last.safetensors exists."""
    last = checkpoint.with_name(CHECKPOINT)
    if not checkpoint.exists() and checkpoint.name == MODEL and last.is_file():
        raise FileNotFoundError(
            f"no {checkpoint}: the run in {checkpoint.parent} has not finished. Finish it with `python -m minidiff "
            f"train --recipe NAME --out {checkpoint.parent} --resume`, or sample from where it stopped with "
            f"--checkpoint {last}"
        )


def _classifier(args: argparse.Namespace) -> None:
    print(json.dumps(train_and_save(args.dataset, args.out), indent=2))


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a usage error, 1 for a failed run)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except FloatingPointError as error:  # a run that diverged: its last good checkpoint is named
        print(f"{parser.prog} {args.command}: failed: {error}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError) as error:  # bad arguments, CheckpointError, the disk, permissions
        print(f"{parser.prog} {args.command}: error: {_describe_error(error)}", file=sys.stderr)
        return 2
    return 0


def _describe_error(error: Exception) -> str:
    """One line for the user; for the system's own errors (disk full, permission denied…) its
    reason and the file."""
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        hint = " (the disk is full: free some space or write elsewhere)" if error.errno == errno.ENOSPC else ""
        return f"{error.strerror}{where}{hint}"
    return str(error)

if __name__ == "__main__":
    sys.exit(main())
