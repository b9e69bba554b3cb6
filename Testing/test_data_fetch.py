"""Fetching the registry sources: checksum verification, atomic extraction, idempotence, optional Debian.

The checksum and extraction paths run the real ``pip download`` against a local wheel folder
(``PIP_NO_INDEX`` / ``PIP_FIND_LINKS``) so no network is needed; the real cache filled by
``make data`` is checked against the pinned registry.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from DiffCodeRestoreLib.data import cache_dir
from DiffCodeRestoreLib.data import fetch as fetch_module
from DiffCodeRestoreLib.data.fetch import CACHED, FETCHED, MARKER, fetch, fetched_path, is_fetched
from DiffCodeRestoreLib.data.sources import OPTIONAL_KINDS, PYPI_WHEEL, SOURCES, Source

PACKAGE = "diffcode-fake-data"
WHEEL = "diffcode_fake_data-1.0-py3-none-any.whl"
MEMBER = "diffcode_fake_data/volume.raw"


def _write_wheel(folder: Path, payload: bytes) -> str:
    """A minimal valid wheel holding one data file; returns its SHA-256."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WHEEL
    info = "diffcode_fake_data-1.0.dist-info/"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(MEMBER, payload)
        wheel.writestr(info + "METADATA", f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 1.0\n")
        wheel.writestr(info + "WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(info + "RECORD", "")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fake_source(sha256: str) -> Source:
    return Source(name="fake", kind=PYPI_WHEEL, package=PACKAGE, version="1.0", archive=WHEEL,
                  sha256=sha256, members=(MEMBER,), licence="test", content="test")


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip sees only a local folder of wheels."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return wheels


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("DIFFCODE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "diffcode-restore"
    monkeypatch.setenv("DIFFCODE_CACHE_DIR", str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("DIFFCODE_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "diffcode-restore"


def test_verified_fetch_extracts_then_is_cached(tmp_path, local_index):
    payload = b"\x01\x02real bytes"
    source = _fake_source(_write_wheel(local_index, payload))
    cache = tmp_path / "cache"
    lines = []
    assert fetch(sources={"fake": source}, cache=cache, log=lines.append) == {"fake": FETCHED}
    folder = cache / "sources" / "fake"
    assert (folder / "volume.raw").read_bytes() == payload
    assert is_fetched(source, cache)
    assert any("SHA-256 verified" in line for line in lines)

    (local_index / WHEEL).unlink()  # a second run must not need the registry at all
    assert fetch(sources={"fake": source}, cache=cache, log=lines.append) == {"fake": CACHED}
    assert sorted(p.name for p in (cache / "sources").iterdir()) == ["fake"]  # no staging leftovers


def test_checksum_mismatch_leaves_nothing_in_cache(tmp_path, local_index):
    pinned = _write_wheel(tmp_path / "original", b"the pinned bytes")
    _write_wheel(local_index, b"bytes the registry serves now")  # same name, different content
    cache = tmp_path / "cache"
    status = fetch(sources={"fake": _fake_source(pinned)}, cache=cache, log=lambda line: None)["fake"]
    assert status.startswith("failed") and "does not match the pinned" in status
    leftovers = list((cache / "sources").iterdir()) if (cache / "sources").exists() else []
    assert leftovers == []


def test_force_replaces_a_damaged_copy(tmp_path, local_index):
    payload = b"pristine"
    source = _fake_source(_write_wheel(local_index, payload))
    cache = tmp_path / "cache"
    fetch(sources={"fake": source}, cache=cache, log=lambda line: None)
    extracted = cache / "sources" / "fake" / "volume.raw"
    extracted.unlink()
    assert not is_fetched(source, cache)  # a missing file is noticed, not trusted
    assert fetch(sources={"fake": source}, cache=cache, force=True, log=lambda line: None) == {"fake": FETCHED}
    assert extracted.read_bytes() == payload


def test_debian_source_without_apt_is_unavailable_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get here
    monkeypatch.setenv("DIFFCODE_CACHE_DIR", str(tmp_path / "cache"))
    status = fetch(["mricron"], log=lambda line: None)["mricron"]
    assert status.startswith("unavailable") and "apt-get not found" in status
    assert fetch_module.main(["--only", "mricron"]) == 0


def test_failed_required_source_exits_non_zero(tmp_path, local_index, monkeypatch, capsys):
    monkeypatch.setenv("DIFFCODE_CACHE_DIR", str(tmp_path / "cache"))
    assert fetch_module.main(["--only", "nilearn"]) == 1  # the local index has no nilearn
    assert "Failed: nilearn" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "sources" / "nilearn").exists()


def test_unknown_source_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown data source"):
        fetch(["no-such-source"])
    with pytest.raises(FileNotFoundError, match="data.fetch --only pyradiomics"):
        fetched_path("pyradiomics", Path("/nonexistent"))


def test_registry_pins_every_source():
    for source in SOURCES.values():
        assert len(source.sha256) == 64 and source.version and source.members
        assert source.required == (source.kind not in OPTIONAL_KINDS)
        assert source.version in source.archive


def test_real_cache_matches_the_pinned_archives():
    """``make test`` runs the fetch first: required sources must be there, from the pinned archives."""
    for source in SOURCES.values():
        if not source.required and not is_fetched(source):
            continue  # optional Debian or npm source, unavailable on this OS
        assert is_fetched(source), f"run `python -m DiffCodeRestoreLib.data.fetch` ({source.name} missing)"
        marker = fetch_module.read_marker(cache_dir() / "sources" / source.name)
        assert marker["sha256"] == source.sha256 and marker["version"] == source.version
        assert (cache_dir() / "sources" / source.name / MARKER).is_file()
