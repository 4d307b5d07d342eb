"""Fault class 7: a malformed manifest is refused by its one validating reader with an error
naming the file and the entry, by every loader that reads one (shipped models, VAEs,
classifiers), never a raw KeyError / JSONDecodeError."""

from __future__ import annotations

import shutil

import pytest

from minidiff.classifier import load_classifier
from minidiff.files import WEIGHTS_DIR, WeightsError, read_manifest, record_in_manifest
from minidiff.pretrained import list_pretrained, load_pretrained, load_vae

CASES = [
    ("not json {", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"digits.safetensors": {"description": "no hash"}}', "the entry of 'digits.safetensors' must be an object"),
    ('{"digits.safetensors": "abc"}', "the entry of 'digits.safetensors' must be an object"),
    ('{"digits.safetensors": {"sha256": 5}}', "with a 'sha256' string"),
    ("\udcff".encode("utf-8", "surrogateescape").decode("latin-1"), "is not valid JSON"),
]


@pytest.mark.parametrize("text, message", CASES)
def test_the_reader_names_the_file_and_the_entry(tmp_path, text, message):
    (tmp_path / "pretrained.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(WeightsError, match=message) as error:
        read_manifest(tmp_path, "pretrained.json")
    assert str(tmp_path / "pretrained.json") in str(error.value)


@pytest.mark.parametrize("text, message", CASES[:3])
def test_every_loader_reads_manifests_through_it(tmp_path, text, message):
    for name in ("digits.safetensors", "vae_shapes.safetensors", "classifier_digits.safetensors"):
        shutil.copy(WEIGHTS_DIR / name, tmp_path / name)
    for manifest in ("pretrained.json", "vaes.json", "classifiers.json"):
        (tmp_path / manifest).write_text(text.replace("digits.safetensors", "x"))
    for load in (
        lambda: list_pretrained(tmp_path),
        lambda: load_pretrained("digits", weights_dir=tmp_path),
        lambda: load_vae("vae_shapes", weights_dir=tmp_path),
        lambda: load_classifier("digits", tmp_path),
    ):
        with pytest.raises(WeightsError, match=message.replace("'digits.safetensors'", "'x'")):
            load()


def test_recording_into_a_malformed_manifest_refuses_instead_of_overwriting(tmp_path):
    path = tmp_path / "pretrained.json"
    path.write_text("[]")
    with pytest.raises(WeightsError, match="must hold a JSON object"):
        record_in_manifest(tmp_path, "pretrained.json", "m.safetensors", {"sha256": "0" * 64})
    assert path.read_text() == "[]"  # the broken file is left for a person to look at, not silently replaced
