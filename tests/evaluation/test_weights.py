"""The weights manager: catalogue, status (size, SHA-256), require, fetch (offline, file:// URLs)."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path

import pytest

from cfbench.core.errors import WeightsNotFoundError
from cfbench.core.hashing import hash_cache_path
from cfbench.evaluation import weights
from cfbench.evaluation.weights import WeightsFile

XRV_FOLDER = Path(".torchxrayvision") / "models_data"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    fake = tmp_path / "home"
    fake.mkdir()
    monkeypatch.setenv("HOME", str(fake))
    assert os.path.expanduser("~") == str(fake)
    return fake


@pytest.fixture
def catalogue(monkeypatch):
    """The catalogue, restored after the test (tests add entries)."""
    monkeypatch.setattr(weights, "CATALOGUE", dict(weights.CATALOGUE))
    return weights.CATALOGUE


def test_catalogue_matches_installed_torchxrayvision():
    from cfbench.evaluation.xrv import _import_xrv

    xrv = _import_xrv()
    for entry in weights.CATALOGUE.values():
        assert entry.url == weights.XRV_RELEASE + entry.filename
        assert entry.url.rsplit("/", 1)[1] == entry.filename
        if entry.xrv_weights:
            assert xrv.models.model_urls[entry.xrv_weights]["weights_url"] == entry.url
    sources = {"xrv-race": xrv.baseline_models.emory_hiti, "xrv-age": xrv.baseline_models.riken,
               "xrv-sex": xrv.baseline_models.mira}
    for key, module in sources.items():
        assert weights.get(key).url in inspect.getsource(module), key
    defaults = {key for key, entry in weights.CATALOGUE.items() if entry.default}
    assert defaults == {"xrv-densenet121-all", "xrv-race", "xrv-age"}
    assert weights.key_for_xrv_weights("densenet121-res224-all") == "xrv-densenet121-all"
    with pytest.raises(KeyError, match="densenet121-res224-all"):
        weights.key_for_xrv_weights("resnet50-res512-all")


def test_paths_follow_home_and_cache_dir(home, tmp_path):
    race = weights.get("xrv-race")
    assert weights.path_for("xrv-race") == home / XRV_FOLDER / race.filename
    dense = weights.get("xrv-densenet121-all")
    assert weights.path_for("xrv-densenet121-all") == home / XRV_FOLDER / dense.filename
    assert weights.path_for("xrv-densenet121-all", cache_dir=tmp_path / "c") == tmp_path / "c" / dense.filename
    # cache_dir never moves the race/age/sex files: torchxrayvision reads only $HOME for them
    assert weights.path_for("xrv-race", cache_dir=tmp_path / "c") == home / XRV_FOLDER / race.filename


def test_require_names_path_url_and_command(home):
    with pytest.raises(WeightsNotFoundError) as caught:
        weights.require("xrv-age")
    error = caught.value
    assert isinstance(error, FileNotFoundError)
    assert error.path == home / XRV_FOLDER / weights.get("xrv-age").filename
    assert str(error.path) in str(error) and weights.get("xrv-age").url in str(error)
    assert "cfbench weights fetch xrv-age" in str(error)
    error.path.parent.mkdir(parents=True)
    error.path.write_bytes(b"x")
    assert weights.require("xrv-age") == error.path
    with pytest.raises(KeyError, match="unknown weights"):
        weights.require("nope")


def test_status_lists_present_and_missing_with_size_and_sha256(home):
    present = weights.path_for("xrv-race")
    present.parent.mkdir(parents=True)
    data = os.urandom(70_000)
    present.write_bytes(data)
    rows = {row.key: row for row in weights.weights_status()}
    assert set(rows) == set(weights.CATALOGUE)
    race = rows["xrv-race"]
    assert race.present and race.path == present and race.size == len(data)
    assert race.sha256 == hashlib.sha256(data).hexdigest() == weights.file_sha256(present)
    assert race.url == weights.get("xrv-race").url
    age = rows["xrv-age"]
    assert not age.present and age.size is None and age.sha256 is None
    json.dumps([row.to_dict() for row in rows.values()])

    # the digest is remembered by (size, mtime) and recomputed when the file changes
    cache = json.loads(hash_cache_path(present.parent).read_text())
    assert not list(present.parent.glob("*.json"))  # nothing written beside the weights
    assert cache[present.name]["sha256"] == race.sha256
    present.write_bytes(data[:-1])
    os.utime(present, ns=(1, 1))
    assert weights.weights_status(["xrv-race"])[0].sha256 == hashlib.sha256(data[:-1]).hexdigest()

    short = [row.key for row in weights.weights_status(include_optional=False)]
    assert short == ["xrv-densenet121-all", "xrv-race", "xrv-age"]
    table = weights.weights_table()
    assert "MISSING" in table and hashlib.sha256(data[:-1]).hexdigest()[:16] in table
    assert "cfbench weights fetch xrv-densenet121-all xrv-age" in table


def test_fetch_from_file_url_is_atomic_and_hashed(home, tmp_path, catalogue):
    source = tmp_path / "release" / "tiny-model.pt"
    source.parent.mkdir()
    data = os.urandom(3_000_000)
    source.write_bytes(data)
    weights.register(WeightsFile(key="test-tiny", filename="tiny-model.pt", url=source.as_uri(),
                                 folder="xrv", used_by="tests", default=False))
    rows = weights.fetch(["test-tiny"], progress=False)
    target = home / XRV_FOLDER / "tiny-model.pt"
    assert target.read_bytes() == data
    assert rows[0].present and rows[0].sha256 == hashlib.sha256(data).hexdigest()
    assert [p.name for p in target.parent.iterdir() if p.name.endswith(".part")] == []

    # present files are skipped unless forced
    source.write_bytes(b"changed")
    weights.fetch(["test-tiny"], progress=False)
    assert target.read_bytes() == data
    weights.fetch(["test-tiny"], progress=False, force=True)
    assert target.read_bytes() == b"changed"


def test_fetch_failure_leaves_nothing_behind(home, tmp_path, catalogue):
    weights.register(WeightsFile(key="test-gone", filename="gone.pt", url=(tmp_path / "missing.pt").as_uri(),
                                 folder="xrv", used_by="tests", default=False))
    with pytest.raises(weights.FetchError, match="gone.pt"):
        weights.fetch(["test-gone"], progress=False)
    folder = home / XRV_FOLDER
    assert not (folder / "gone.pt").exists()
    assert list(folder.iterdir()) == []


def test_fetch_checks_an_expected_sha256(home, tmp_path, catalogue):
    source = tmp_path / "w.bin"
    source.write_bytes(b"weights")
    weights.register(WeightsFile(key="test-pinned", filename="w.bin", url=source.as_uri(), folder="xrv",
                                 used_by="tests", sha256="0" * 64))
    with pytest.raises(weights.FetchError, match="SHA-256"):
        weights.fetch(["test-pinned"], progress=False)
    assert not (home / XRV_FOLDER / "w.bin").exists()


def test_register_and_weights_dir_folder(home, catalogue, monkeypatch, tmp_path):
    monkeypatch.setenv("CFBENCH_WEIGHTS_DIR", str(tmp_path / "wd"))
    entry = weights.register(WeightsFile(key="gen-x", filename="unet.safetensors", url="https://example.org/u",
                                         folder="weights_dir/gen-x", used_by="a generator adapter"))
    assert weights.path_for("gen-x") == tmp_path / "wd" / "gen-x" / "unet.safetensors"
    assert weights.register(entry) is entry  # same entry again: fine
    with pytest.raises(ValueError, match="already"):
        weights.register(WeightsFile(key="gen-x", filename="other", url="u", folder="xrv", used_by="x"))
    with pytest.raises(ValueError, match="folder"):
        weights.register(WeightsFile(key="bad", filename="f", url="u", folder="/abs", used_by="x"))
