"""Lessons that run anywhere: an "Open in Colab" link and an install cell in every lesson, pointing at
the repository that pyproject.toml names; one line saying which device a lesson uses, and bfloat16
autocast only where it was chosen."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from minidiff import course
from minidiff.nn.unet import UNet, UNetConfig

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REPOSITORY = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
CPU_ONLY = {"01_forward_process.ipynb"}  # a few small tensors: nothing there to put on a GPU


def cells(path: Path, kind: str) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == kind]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_lesson_opens_in_colab_from_the_repository(path):
    colab = f"https://colab.research.google.com/github/{REPOSITORY.removeprefix('https://github.com/')}"
    assert f"[Open in Colab]({colab}/blob/main/notebooks/{path.name})" in cells(path, "markdown")[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_install_cell_does_nothing_in_a_checkout_and_installs_elsewhere(path, monkeypatch):
    install = cells(path, "code")[0]
    requires = json.loads(path.read_text())["metadata"].get("minidiff", {}).get("requires", [])
    extra = f"[{','.join(requires)}]" if requires else ""
    assert f'"minidiff{extra} @ git+{REPOSITORY}"' in install
    calls = []
    monkeypatch.setattr("subprocess.run", lambda *args, **kwargs: calls.append(args[0]))
    exec(install, {})  # here minidiff is installed: nothing runs
    assert calls == []
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # as on a fresh Colab runtime
    exec(install, {})
    assert len(calls) == 1 and calls[0][1:5] == ["-m", "pip", "install", "--quiet"]
    assert calls[0][-1] == f"minidiff{extra} @ git+{REPOSITORY}"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name not in CPU_ONLY], ids=lambda p: p.stem)
def test_every_lesson_says_which_device_it_uses(path):
    code = "\n".join(cells(path, "code"))
    assert code.count("use_device()") == 1 and "default_device()" not in code


def test_use_device_says_which_and_keeps_float32_on_the_cpu(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert course.use_device() == torch.device("cpu")
    threads = torch.get_num_threads()
    assert capsys.readouterr().out == f"device: cpu (float32; {threads} torch thread{'s' * (threads > 1)})\n"
    x = torch.randn(2, 1, 8, 8)
    with course.bf16_autocast(x):
        assert not torch.is_autocast_enabled("cpu")


def test_bf16_autocast_where_chosen_changes_only_the_precision(monkeypatch):
    torch.manual_seed(0)
    net = UNet(UNetConfig(channels=16, channel_mults=(1, 2), blocks_per_level=1, heads=2)).eval()
    torch.nn.init.normal_(net.out[-1].weight, std=0.1)  # not the zero-initialised output
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([1, 10, 100, 900])
    with torch.no_grad():
        full = net(x, t)
        monkeypatch.setattr(course, "_bf16_on", {"cpu"})  # what use_device does for a GPU with bfloat16
        half = net(x, t)
    assert half.dtype == torch.float32 and not torch.equal(half, full)  # computed in bfloat16, returned in x's dtype
    assert (half - full).norm() / full.norm() < 0.02  # bfloat16 keeps 8 bits of mantissa: ~0.4% per operation


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: gpu_check.sh would measure it")
def test_the_gpu_check_says_plainly_that_there_is_no_gpu(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "gpu")],
                          capture_output=True, text=True, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1 and "torch sees no CUDA GPU here" in done.stderr
    assert not (tmp_path / "gpu").exists()  # no half-written results
