"""MNIST-format (IDX) files: a reader, and MNIST / Fashion-MNIST from a local folder with an
opt-in download that verifies checksums.

IDX layout (big-endian): two zero bytes, a dtype code, the number of dimensions n, n uint32
sizes, then the values in C order. The files usually come gzipped; both forms are read.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from minidiff._checks import check_choice
from minidiff.data.images import LabelledImages
from minidiff.files import write_atomic

_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

MNIST_KINDS = ("mnist", "fashion_mnist")
MNIST_URLS = {  # public mirrors of the original files
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion_mnist": "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
}
MNIST_MD5 = {  # the published MD5 digests of the official files (the ones torchvision checks)
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
_SPLIT_FILES = {  # (images, labels)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_CLASS_NAMES = {
    "mnist": tuple("0123456789"),
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}
_TIMEOUT = 60  # seconds without an answer before a download gives up
DOWNLOAD_DEADLINE = 600  # seconds for a whole file, however slowly the bytes come


def read_idx(path: str | os.PathLike) -> Tensor:
    """The array stored in an IDX file (gzipped or raw) as a tensor of its own dtype,
    e.g. (N, 28, 28) uint8 for MNIST images, (N,) uint8 for labels."""
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip magic
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path} is a damaged gzip file (truncated download?): {e}") from e
    return _parse_idx(data, path)


def _parse_idx(data: bytes, path: Path) -> Tensor:
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise ValueError(f"{path} is not an IDX file: expected two zero bytes, a dtype code and a dimension count")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02x}; expected one of {known}")
    start = 4 + 4 * ndim
    if len(data) < start:
        raise ValueError(f"{path}: IDX header is truncated ({len(data)} bytes for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", data[4:start])
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = start + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path}: the header announces shape {shape} of {dtype.name}, {expected} bytes in all, "
            f"but the file holds {len(data)} bytes (truncated or corrupt)"
        )
    values = np.frombuffer(data, dtype, offset=start).reshape(shape)
    return torch.from_numpy(values.astype(dtype.newbyteorder("=")))  # native byte order, writable copy


def load_mnist(
    root: str | os.PathLike,
    kind: str = "mnist",
    split: str = "train",
    download: bool = False,
    base_url: str | None = None,
    checksums: dict[str, str] | None = None,
) -> LabelledImages:
    """MNIST or Fashion-MNIST from the folder root/kind/ holding the four official files
    (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-…; gzipped or not).

    Returns images (N, 1, 28, 28) float32 in [-1, 1] with labels (N,) and class names.
    Nothing is downloaded unless download=True: then missing files are fetched from
    base_url (default MNIST_URLS[kind]), checked against `checksums` (file name → MD5 or
    SHA-256 hex digest; default MNIST_MD5[kind], the published digests), and moved into
    place only once complete and verified.
    """
    check_choice("kind", kind, MNIST_KINDS)
    check_choice("split", split, tuple(_SPLIT_FILES))
    folder = Path(root).expanduser() / kind
    base_url = MNIST_URLS[kind] if base_url is None else base_url
    names = _SPLIT_FILES[split]
    missing = [name for name in names if _local_file(folder, name) is None]
    if missing and not download:
        raise FileNotFoundError(
            f"{kind} {split} files not found in {folder}: missing {', '.join(missing)}. "
            f"Pass download=True to fetch them from {base_url}, or copy them into that folder by hand."
        )
    table = MNIST_MD5[kind] if checksums is None else checksums
    digests = {name: _digest_for(table, name) for name in missing}  # all checked before any download
    for name, digest in digests.items():
        _download(base_url.rstrip("/") + "/" + name, folder / name, digest)
    images, labels = (read_idx(_local_file(folder, name)) for name in names)
    if images.ndim != 3 or images.dtype != torch.uint8 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{folder}: expected uint8 images (N, H, W) and labels (N,), "
            f"got images {tuple(images.shape)} {images.dtype} and labels {tuple(labels.shape)}"
        )
    return LabelledImages(images[:, None].float() / 127.5 - 1, labels.long(), _CLASS_NAMES[kind])


def _local_file(folder: Path, name: str) -> Path | None:
    """folder/name, or its uncompressed twin without .gz, whichever exists first."""
    return next((p for p in (folder / name, folder / name.removesuffix(".gz")) if p.is_file()), None)


def _digest_for(checksums: dict[str, str], name: str) -> str:
    digest = checksums.get(name, "")
    if len(digest) not in (32, 64):
        raise ValueError(
            f"checksums[{name!r}] must be an MD5 (32 hex digits) or SHA-256 (64 hex digits) digest, got {digest!r}"
        )
    return digest.lower()


def _download(url: str, dest: Path, digest: str) -> None:
    """Fetch url into memory within DOWNLOAD_DEADLINE seconds in all (a server that trickles
    bytes cannot hold it forever), and write it to dest (atomically: `write_atomic`) only if
    its MD5 / SHA-256 matches `digest`; never leaves a partial file."""
    hasher = hashlib.new("md5" if len(digest) == 32 else "sha256")
    chunks = []
    deadline = time.monotonic() + DOWNLOAD_DEADLINE
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
            while chunk := response.read1(1 << 16):  # whatever has arrived, so the deadline is checked often
                hasher.update(chunk)
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not complete after {DOWNLOAD_DEADLINE:g} s")
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
        reason = e if isinstance(e, (urllib.error.HTTPError, TimeoutError)) else getattr(e, "reason", e)
        raise ConnectionError(
            f"could not download {url} ({reason}). Are you offline, or is the server "
            f"down? Try again later, pass another base_url, or copy the file into {dest.parent} by hand."
        ) from e
    if hasher.hexdigest() != digest:
        raise ValueError(
            f"checksum mismatch for {url}: expected {digest}, got {hasher.hexdigest()}; the file was not "
            f"kept. The download was corrupted or the server holds a different file."
        )
    write_atomic(dest, b"".join(chunks))
