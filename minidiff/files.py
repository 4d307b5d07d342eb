"""Files the package writes and reads: atomic writes, SHA-256 hashes, weights manifests.

The bottom of the package: it imports nothing from the rest of it, and every module that
writes a file (checkpoints, manifests, PNG grids, GIFs) writes it through `write_atomic`.

A *manifest* is a JSON object in a weights folder, file name → entry, each entry holding at
least the file's "sha256". `verified_bytes` reads a weights file once and checks those bytes
against the manifest, so what is loaded is exactly what was hashed.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import torch

WEIGHTS_DIR = Path(__file__).parent / "weights"  # the shipped weights and their manifests


class WeightsError(ValueError):
    """Shipped weights that are missing from their manifest, corrupt or modified."""


STALE_SECONDS = 3600  # a temporary file older than this was left by a write that was killed


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` so that `path` holds either its old content or all of `data`,
    never a part: write a temporary file `.<name>.<random>.tmp` in the same folder, flush it to
    disk, then rename it over `path` (`os.replace` is atomic on POSIX and Windows). A failed
    write (a full disk…) removes its temporary file; one left by a killed process is removed
    by the next write of the same file once it is STALE_SECONDS old. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # unique: concurrent writers do not clash
    try:
        with open(tmp, "xb") as f:  # (unlike tempfile's, its permissions follow the umask)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _remove_stale_temporaries(path)
    return path


def _remove_stale_temporaries(path: Path) -> None:
    now = time.time()
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if now - stale.stat().st_mtime > STALE_SECONDS:
                stale.unlink()
        except FileNotFoundError:  # another writer removed it first
            pass


def sha256_of(data: bytes) -> str:
    """The SHA-256 digest of data as 64 hex digits, as `sha256sum` prints it."""
    return hashlib.sha256(data).hexdigest()


def read_manifest(weights_dir: str | Path, manifest: str) -> dict[str, dict[str, Any]]:
    """A weights folder's manifest: file name → entry (sha256, recipe, metrics…), checked to
    be a JSON object of objects that each hold a "sha256"; errors name the file and the entry."""
    path = Path(weights_dir) / manifest
    if not path.is_file():
        raise FileNotFoundError(f"no weights manifest at {path}")
    try:
        entries = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise WeightsError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(entries, dict):
        raise WeightsError(f"{path} must hold a JSON object (file name → entry), got {type(entries).__name__}")
    for name, entry in entries.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise WeightsError(f"{path}: the entry of {name!r} must be an object with a 'sha256' string")
    return entries


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A digest of every tensor's name, dtype, shape and bytes, in name order: the identity of a
    set of weights (a checkpoint's checksum, the teacher a student was distilled from, the base
    an adapter belongs to)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def record_in_manifest(weights_dir: str | Path, manifest: str, file_name: str, entry: dict[str, Any]) -> None:
    """Add or replace the manifest entry of one weights file (written atomically)."""
    path = Path(weights_dir) / manifest
    entries = read_manifest(weights_dir, manifest) if path.is_file() else {}
    entries[file_name] = entry
    write_atomic(path, (json.dumps(entries, indent=2, sort_keys=True) + "\n").encode())


def verified_bytes(path: Path, manifest: str, how_to_fix: str) -> bytes:
    """The content of a weights file, read once, after checking its sha256 against the
    manifest of its folder."""
    if not path.is_file():
        raise FileNotFoundError(f"no weights at {path}; {how_to_fix}")
    entry = read_manifest(path.parent, manifest).get(path.name)
    if entry is None:
        raise WeightsError(f"{path.parent / manifest} lists no {path.name}; {how_to_fix}")
    data = path.read_bytes()
    if sha256_of(data) != entry["sha256"]:
        raise WeightsError(f"{path}: sha256 does not match the manifest, the file is corrupt or modified; {how_to_fix}")
    return data


def safetensors_metadata(data: bytes, path: Path) -> dict[str, str]:
    """The "__metadata__" strings of a safetensors file's JSON header (8-byte length, then JSON);
    a ValueError naming `path` if the bytes are not a safetensors header."""
    try:
        (n,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from None
    return metadata


def machine_description() -> str:
    """The CPU (or GPU) and torch build, for a manifest's record of where training ran."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} CPUs{gpu}, torch {torch.__version__}"
