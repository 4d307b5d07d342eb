"""Fault class 2: nothing the package writes is left half-written. Every file goes through
`minidiff.files.write_atomic`; a write that fails (a full disk, for real on a small tmpfs,
or a writer that fails mid-way) keeps the earlier good file and leaves no temporary; a write
killed mid-way leaves a temporary that the next write of that file removes."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import torch

from minidiff import files
from minidiff.checkpoint import load_checkpoint, save_checkpoint
from minidiff.files import write_atomic
from minidiff.nn import MLPConfig, MLPDenoiser
from minidiff.schedules import NoiseSchedule
from minidiff.viz import save_samples

MLP = MLPConfig(hidden=16, layers=1, time_dim=8)


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs, for a real ENOSPC; skipped where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip() or 'not root'})")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_full_disk_keeps_the_earlier_file_and_no_temporary(full_disk):
    good = save_samples(torch.zeros(4, 1, 8, 8), full_disk / "samples.png")
    before = good.read_bytes()
    with pytest.raises(OSError) as error:
        write_atomic(full_disk / "samples.png", os.urandom(200_000))  # more than the disk holds
    assert error.value.errno == errno.ENOSPC
    assert good.read_bytes() == before and leftovers(full_disk) == []
    model = MLPDenoiser(MLP)
    path = save_checkpoint(full_disk / "model.safetensors", model, NoiseSchedule.linear(10), (2,))
    with pytest.raises(OSError):
        save_checkpoint(path, model, NoiseSchedule.linear(10), (2,), extra={"big": torch.randn(50_000)})
    assert load_checkpoint(path).step == 0 and leftovers(full_disk) == []


class FailingFile:
    """A file whose write stops half-way with ENOSPC."""

    def __init__(self, real):
        self.real = real

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()

    def write(self, data):
        self.real.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("what", ["png", "checkpoint", "gif", "manifest"])
def test_every_writer_goes_through_the_atomic_writer(tmp_path, monkeypatch, what):
    """The same patched failure hits PNG grids, checkpoints, GIFs and manifests alike: each
    earlier file survives intact, no temporary remains."""
    from minidiff import viz
    from minidiff.files import record_in_manifest
    from minidiff.samplers import sample
    from minidiff.trajectory import Trajectory

    def write(path: Path):
        if what == "png":
            return save_samples(torch.rand(4, 3, 8, 8) * 2 - 1, path)
        if what == "checkpoint":
            return save_checkpoint(path, MLPDenoiser(MLP), NoiseSchedule.linear(10), (2,))
        if what == "gif":
            traj = Trajectory()
            s = NoiseSchedule.linear(10)
            sample(lambda x, t: torch.zeros_like(x), torch.randn(8, 2), s, "ddim", 3, callback=traj)
            viz.animate_2d(traj, path=path, frames=2)
            return path
        record_in_manifest(path.parent, path.name, "w.safetensors", {"sha256": uuid.uuid4().hex})
        return path

    path = write(tmp_path / f"out.{'json' if what == 'manifest' else 'gif' if what == 'gif' else what}")
    before = path.read_bytes()
    real_open = open
    monkeypatch.setattr(files, "open", lambda p, mode: FailingFile(real_open(p, mode)), raising=False)
    with pytest.raises(OSError, match="No space left"):
        write(path)
    assert path.read_bytes() == before and leftovers(tmp_path) == []


def test_a_write_killed_mid_way_leaves_the_old_file_and_the_next_write_cleans_up(tmp_path):
    target = tmp_path / "last.safetensors"
    write_atomic(target, b"good")
    script = textwrap.dedent(
        f"""
        import os, time
        from minidiff import files
        os.replace = lambda *a: time.sleep(60)   # killed before the rename
        files.write_atomic({str(target)!r}, b"x" * 1000)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not leftovers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # the temporary is written and flushed; the process sleeps in place of the rename
    proc.kill()
    proc.wait()
    [stale] = leftovers(tmp_path)
    assert target.read_bytes() == b"good"  # the killed write changed nothing
    write_atomic(target, b"newer")  # a fresh temporary is left alone…
    assert leftovers(tmp_path) == [stale]
    old = time.time() - files.STALE_SECONDS - 1
    os.utime(tmp_path / stale, (old, old))
    write_atomic(target, b"newest")  # …a stale one is removed by the next write of the file
    assert leftovers(tmp_path) == [] and target.read_bytes() == b"newest"
