"""Image datasets: scikit-learn digits, procedural shapes, the IDX reader and the MNIST download."""

import functools
import gzip
import hashlib
import http.server
import re
import socket
import struct
import threading
from collections import defaultdict

import numpy as np
import pytest
import torch

from minidiff.data import (
    COLOUR_RGB,
    COLOURS,
    MNIST_MD5,
    SHAPES,
    DigitsDataset,
    ShapesDataset,
    load_mnist,
    read_idx,
)

IDX_CODES = {
    np.dtype("u1"): 0x08,
    np.dtype("i1"): 0x09,
    np.dtype("i2"): 0x0B,
    np.dtype("i4"): 0x0C,
    np.dtype("f4"): 0x0D,
    np.dtype("f8"): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file written independently of the reader: header, then big-endian values."""
    header = struct.pack(f">2xBB{array.ndim}I", IDX_CODES[array.dtype], array.ndim, *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist(folder, split="train", n=5, seed=0):
    """Tiny gzipped MNIST-format files in folder; returns {file name: its gzipped bytes}."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[0, 0, :2] = (0, 255)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    files = {
        f"{prefix}-images-idx3-ubyte.gz": gzip.compress(idx_bytes(images)),
        f"{prefix}-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(labels)),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


# --- digits ---


@pytest.fixture(scope="module")
def digits():
    return DigitsDataset()


def test_digits_shape_range_and_labels(digits):
    assert digits.images.shape == (1797, 1, 16, 16) and digits.images.dtype == torch.float32
    assert digits.images.min() == -1 and digits.images.max() == 1
    assert digits.labels.dtype == torch.int64 and set(digits.labels.tolist()) == set(range(10))
    image, label = digits[3]
    assert image.shape == (1, 16, 16) and label == 3 and digits.class_names[label] == "3"
    assert DigitsDataset(size=8).images.shape == (1797, 1, 8, 8)


def test_digits_split_is_fixed_disjoint_and_complete(digits):
    train, test = DigitsDataset(split="train"), DigitsDataset(split="test")
    assert len(train) + len(test) == len(digits) and abs(len(test) / len(digits) - 0.2) < 0.01
    as_rows = lambda ds: {tuple(row) for row in ds.images.flatten(1).tolist()}  # noqa: E731
    assert as_rows(train).isdisjoint(as_rows(test))
    assert as_rows(train) | as_rows(test) == as_rows(digits)
    assert set(test.labels.tolist()) == set(range(10))
    assert torch.equal(DigitsDataset(split="test").images, test.images)


def test_to_display_is_the_inverse_transform(digits):
    shown = digits.to_display(digits.images[:2])  # (2, 16, 16, 1) in [0, 1]
    assert shown.shape == (2, 16, 16, 1)
    assert torch.allclose(shown * 2 - 1, digits.images[:2].permute(0, 2, 3, 1), atol=1e-6)


# --- shapes ---


@pytest.fixture(scope="module")
def shapes():
    return ShapesDataset(n=400, seed=0)


def test_shapes_deterministic_by_seed(shapes):
    again = ShapesDataset(n=400, seed=0)
    assert torch.equal(again.images, shapes.images) and torch.equal(again.labels, shapes.labels)
    assert again.captions == shapes.captions
    assert not torch.equal(ShapesDataset(n=400, seed=1).images, shapes.images)


def test_shapes_shape_range_and_items(shapes):
    assert shapes.images.shape == (400, 3, 32, 32) and shapes.images.dtype == torch.float32
    assert shapes.images.min() >= -1 and shapes.images.max() <= 1
    assert len(shapes) == len(shapes.captions) == 400
    image, label, caption = shapes[0]
    assert image.shape == (3, 32, 32) and isinstance(label, int) and isinstance(caption, str)
    assert set(shapes.labels.tolist()) == set(range(len(SHAPES) * len(COLOURS))) == set(range(len(shapes.class_names)))
    assert ShapesDataset(n=3, size=48).images.shape == (3, 3, 48, 48)


def test_captions_match_labels_and_pixels(shapes):
    """The caption names the label's shape and colour, and the pixels show that colour at that size."""
    palette = torch.tensor([COLOUR_RGB[c] for c in COLOURS])  # (4, 3)
    pixels = (shapes.images + 1) / 2  # (N, 3, H, W) in [0, 1]
    hue_match = torch.cosine_similarity(pixels[:, None], palette[None, :, :, None, None], dim=2) > 0.98  # (N, 4, H, W)
    area = defaultdict(list)
    for matches, label, caption in zip(hue_match, shapes.labels.tolist(), shapes.captions, strict=True):
        size, colour, shape = re.fullmatch(r"a (\w+) (\w+) (\w+)", caption).groups()
        assert shapes.class_names[label] == f"{colour} {shape}"
        assert label == SHAPES.index(shape) * len(COLOURS) + COLOURS.index(colour)
        painted = matches[COLOURS.index(colour)].sum().item()  # pixels of the named colour, at any brightness
        assert painted >= 10, caption
        area[shape, size].append(painted)
    for shape in SHAPES:
        assert min(area[shape, "large"]) > max(area[shape, "small"]), shape


# --- bad arguments ---


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: DigitsDataset(size=4), "size must be an integer >= 8"),
        (lambda: DigitsDataset(split="valid"), "unknown split 'valid'"),
        (lambda: ShapesDataset(size=16), "size must be an integer >= 32"),
        (lambda: ShapesDataset(n=0), "n must be a positive integer"),
        (lambda: load_mnist("/nowhere", kind="kmnist"), "unknown kind 'kmnist'"),
        (lambda: load_mnist("/nowhere", split="val"), "unknown split 'val'"),
    ],
)
def test_bad_arguments_say_what_was_expected(make, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        make()


# --- IDX reader ---


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, compress):
    array = np.arange(24).reshape(2, 3, 4) - (0 if dtype == "u1" else 12)
    array = (array / 4 if dtype.startswith("f") else array).astype(dtype)
    data = idx_bytes(array)
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(data) if compress else data)
    read = read_idx(path)
    assert read.dtype == torch.from_numpy(array).dtype
    np.testing.assert_array_equal(read.numpy(), array)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (idx_bytes(np.zeros((3, 4), np.uint8))[:-1], "truncated or corrupt"),
        (idx_bytes(np.zeros((3, 4), np.uint8)) + b"\0", "truncated or corrupt"),
        (idx_bytes(np.zeros((3, 4), np.uint8))[:7], "header is truncated"),
        (b"\x01\x02\x08\x01\0\0\0\0", "not an IDX file"),
        (b"\0\0\x07\x01\0\0\0\0", "unknown IDX dtype code 0x07"),
        (gzip.compress(idx_bytes(np.zeros((30, 4), np.uint8)))[:-6], "damaged gzip"),
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path, data, words):
    path = tmp_path / "bad.gz"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=re.escape(words)) as error:
        read_idx(path)
    assert str(path) in str(error.value)


# --- MNIST from a folder, and the download ---


def test_load_mnist_from_a_local_folder(tmp_path):
    write_mnist(tmp_path / "fashion_mnist", split="test", n=5)
    ds = load_mnist(tmp_path, kind="fashion_mnist", split="test")
    assert ds.images.shape == (5, 1, 28, 28) and ds.images.dtype == torch.float32
    assert ds.images[0, 0, 0, :2].tolist() == [-1, 1] and ds.images.abs().max() <= 1
    assert ds.class_names[9] == "Ankle boot" and len(ds) == 5 and isinstance(ds[0][1], int)


def test_load_mnist_reads_uncompressed_files(tmp_path):
    for name, data in write_mnist(tmp_path / "mnist", n=4).items():
        (tmp_path / "mnist" / name).unlink()
        (tmp_path / "mnist" / name.removesuffix(".gz")).write_bytes(gzip.decompress(data))
    assert len(load_mnist(tmp_path)) == 4


def test_load_mnist_mismatched_files(tmp_path):
    write_mnist(tmp_path / "mnist", n=5)
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8))))
    with pytest.raises(ValueError, match="expected uint8 images"):
        load_mnist(tmp_path)


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_mnist(tmp_path, kind="mnist", split="train")
    message = str(error.value)
    assert str(tmp_path / "mnist") in message and "train-images-idx3-ubyte.gz" in message
    assert "download=True" in message


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class TruncatingHandler(QuietHandler):
    """Announces the whole file, sends half of it and hangs up: an interrupted download."""

    def copyfile(self, source, outputfile):
        data = source.read()
        outputfile.write(data[: len(data) // 2])
        self.close_connection = True


@pytest.fixture
def server(request, tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving tiny MNIST files; yields (base URL, {name: bytes}).
    Parametrize it indirectly with another handler class to change how it answers."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    files = write_mnist(tmp_path / "served", n=6)
    handler = functools.partial(getattr(request, "param", QuietHandler), directory=str(tmp_path / "served"))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", files
        httpd.shutdown()
        thread.join()


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_download_verifies_and_saves(tmp_path, server, algorithm):
    base_url, files = server
    checksums = {name: hashlib.new(algorithm, data).hexdigest() for name, data in files.items()}
    ds = load_mnist(tmp_path / "data", download=True, base_url=base_url, checksums=checksums)
    assert len(ds) == 6
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(files)  # no temporary left
    for name, data in files.items():
        assert (tmp_path / "data" / "mnist" / name).read_bytes() == data


def test_download_with_wrong_checksum_keeps_nothing(tmp_path, server):
    base_url, files = server
    checksums = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    checksums["train-labels-idx1-ubyte.gz"] = "0" * 32
    with pytest.raises(ValueError, match="checksum mismatch for .*train-labels"):
        load_mnist(tmp_path / "data", download=True, base_url=base_url, checksums=checksums)
    assert [p.name for p in (tmp_path / "data" / "mnist").iterdir()] == ["train-images-idx3-ubyte.gz"]


@pytest.mark.parametrize("server", [TruncatingHandler], indirect=True)
def test_interrupted_download_keeps_nothing(tmp_path, server):
    base_url, files = server
    checksums = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_mnist(tmp_path / "data", download=True, base_url=base_url, checksums=checksums)
    assert not list((tmp_path / "data").glob("mnist/*"))  # nothing written, not even a partial file


def test_download_of_a_missing_file_fails_clearly(tmp_path, server):
    base_url, _ = server
    with pytest.raises(ConnectionError, match="404"):
        load_mnist(tmp_path / "data", split="test", download=True, base_url=base_url)
    assert not list((tmp_path / "data").glob("mnist/*"))  # nothing written, not even a partial file


def test_download_offline_says_so_and_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with socket.socket() as unused:  # bound but not listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{unused.getsockname()[1]}/"
        with pytest.raises(ConnectionError, match="offline") as error:
            load_mnist(tmp_path, download=True, base_url=base_url)
    assert "refused" in str(error.value) and str(tmp_path / "mnist") in str(error.value)
    assert not list(tmp_path.glob("mnist/*"))


def test_download_needs_a_checksum_per_file_before_fetching_any(tmp_path):
    checksums = {"train-images-idx3-ubyte.gz": "0" * 64}  # nothing for the labels
    with pytest.raises(ValueError, match=re.escape("checksums['train-labels-idx1-ubyte.gz'] must be an MD5")):
        load_mnist(tmp_path, download=True, base_url="http://127.0.0.1:9/", checksums=checksums)


def test_published_checksums_are_md5_digests():
    for table in MNIST_MD5.values():
        assert len(table) == 4 and all(re.fullmatch(r"[0-9a-f]{32}", digest) for digest in table.values())
