"""Adapting a trained model (lesson 13): full fine-tuning against LoRA, an adapter on the wrong base.

    python benchmarks/bench_adapting.py                  # both parts (about 15 min on one thread)
    python benchmarks/bench_adapting.py --part fine_tune
    python benchmarks/bench_adapting.py --part base      # needs runs/green_stars_lora4 (part fine_tune)

Part 1, fine_tune: the shipped text model `shapes_text` never saw a green star (they were held out
of its data). Each recipe green_stars_full / _lora1 / _lora4 / _lora16 / _lora4_conv (the last
adapts the convolutions too) teaches it the concept from the same 32 held-out images (400 steps of
batch 16, runs/<recipe>). Per recipe: the parameters trained, the process's CPU minutes (run it with
OMP_NUM_THREADS=1: one thread), the size of what must be shipped (the float16 model for full
fine-tuning, the adapter file for LoRA), and at guidance 1.5 and 3 (DDIM, 25 steps, seed 1): the
accuracy on green stars (64 samples) and on the 15 classes it knew (8 samples each: what it forgot),
next to the base model's.

Part 2, base: the rank-4 adapter on the base it was trained on, on `shapes_text_seed1` (the same
architecture and data, trained from another seed: `load_adapter(..., allow_other_base=True)`),
and that base alone; and the refusal on a base of another architecture (`shapes_class`).

Prints Markdown tables and writes benchmarks/results/adapting.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from minidiff import load_pretrained
from minidiff.checkpoint import load_checkpoint, save_checkpoint
from minidiff.data.images import SHAPE_CLASSES
from minidiff.metrics import class_accuracy
from minidiff.nn.lora import adapters, load_adapter, save_adapter
from minidiff.recipes import train_recipe
from minidiff.train import MODEL

BASE, OTHER_SEED, OTHER_ARCHITECTURE = "shapes_text", "shapes_text_seed1", "shapes_class"
RECIPES = ("green_stars_full", "green_stars_lora1", "green_stars_lora4", "green_stars_lora16",
           "green_stars_lora4_conv")
CONCEPT, OTHERS = ("green star",), [c for c in SHAPE_CLASSES if c != "green star"]
GUIDANCES = (1.5, 3.0)
RUNS, RESULTS = Path("runs"), Path(__file__).parent / "results" / "adapting.json"


def accuracies(ckpt) -> dict:
    """Accuracy on the concept (64 samples) and on the other classes (8 each), at each guidance scale."""
    return {str(w): {"concept": class_accuracy(ckpt, CONCEPT, 64, w, seed=1),
                     "others": class_accuracy(ckpt, OTHERS, 8, w, seed=1)} for w in GUIDANCES}


def shipped_bytes(model: torch.nn.Module, ckpt) -> int:
    """What one would ship: the adapter file for LoRA, else the whole model in float16."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.safetensors"
        if adapters(model):
            save_adapter(model, path)
        else:
            save_checkpoint(path, model, ckpt.schedule, ckpt.sample_shape, ckpt.prediction,
                            weights_dtype=torch.float16)
        return path.stat().st_size


def fine_tune(previous: list[dict]) -> list[dict]:
    """A row per recipe; a run already finished in runs/<recipe> is not trained again (its CPU
    minutes are the previous results' for it)."""
    timed = {row["recipe"]: row["cpu_minutes"] for row in previous}
    rows = [{"recipe": BASE + " (before)", "trained": 0, "cpu_minutes": 0.0, "bytes": 0,
             **accuracies(load_pretrained(BASE))}]
    for recipe in RECIPES:
        out = RUNS / recipe
        if (out / MODEL).exists() and recipe in timed:
            minutes = timed[recipe]
        else:
            start = time.process_time()
            train_recipe(recipe, out, device="cpu", resume=(out / "last.safetensors").exists())
            minutes = (time.process_time() - start) / 60
        ckpt = load_checkpoint(out / MODEL)
        trained = sum(m.A.weight.numel() + m.B.weight.numel() for m in adapters(ckpt.model).values()) or sum(
            p.numel() for p in ckpt.model.parameters())
        rows.append({"recipe": recipe, "trained": trained, "cpu_minutes": minutes,
                     "bytes": shipped_bytes(ckpt.model, ckpt), **accuracies(ckpt)})
        print(rows[-1], flush=True)
    return rows


def other_bases() -> dict:
    adapter = Path(tempfile.mkdtemp()) / "green_stars_lora4.safetensors"
    save_adapter(load_checkpoint(RUNS / "green_stars_lora4" / MODEL).model, adapter)
    result = {}
    for base in (BASE, OTHER_SEED):
        alone = load_pretrained(base)
        result[f"{base} alone"] = accuracies(alone)
        load_adapter(alone.model, adapter, allow_other_base=base != BASE)
        result[f"{base} + adapter"] = accuracies(alone)
    try:
        load_adapter(load_pretrained(OTHER_ARCHITECTURE).model, adapter, allow_other_base=True)
        result["refused"] = None
    except ValueError as error:
        result["refused"] = str(error)
    return result


def table(rows: list[dict]) -> str:
    head = "| run | trained parameters | CPU min | file | " + " | ".join(
        f"green stars w={w} | other classes w={w}" for w in GUIDANCES) + " |"
    lines = [head, "|" + "---|" * (4 + 2 * len(GUIDANCES))]
    for r in rows:
        cells = [f"{r[str(w)]['concept']:.0%} | {r[str(w)]['others']:.0%}" for w in GUIDANCES]
        lines.append(f"| {r['recipe']} | {r['trained']:,} | {r['cpu_minutes']:.1f} | {r['bytes'] / 1e3:,.0f} kB | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("fine_tune", "base", "both"), default="both")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.part in ("fine_tune", "both"):
        results["fine_tune"] = fine_tune(results.get("fine_tune", []))
        print(table(results["fine_tune"]))
    if args.part in ("base", "both"):
        results["base"] = other_bases()
        for name, acc in results["base"].items():
            print(name, acc)
    results["threads"] = torch.get_num_threads()
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
