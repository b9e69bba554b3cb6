"""Weights from the Hub: the real huggingface_hub client against a Hub-compatible server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from DiffCodeRestoreLib import hub
from DiffCodeRestoreLib.hub import Catalog, WeightsError
from hub_server import HubServer, commit_of

REPO = "diffcode-test/tiny"
PYTHON = sys.executable


@pytest.fixture(scope="module")
def weights(tiny_weights, tmp_path_factory) -> Path:
    """The tiny model's files plus a model card, as published (no checksums.sha256: the Hub has its own)."""
    folder = tmp_path_factory.mktemp("published") / "tiny"
    shutil.copytree(tiny_weights, folder)
    (folder / hub.MANIFEST_NAME).unlink(missing_ok=True)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny test model\n")
    return folder


@pytest.fixture
def server():
    hub_server = HubServer()
    yield hub_server
    hub_server.stop()


def files_of(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def make_catalog(root: Path, weights: Path, revision: str, bundled: bool = False, published: bool = True) -> Catalog:
    """A catalog in root/Resources/Models.json, optionally with a bundled copy beside it."""
    resources = root / "Resources"
    resources.mkdir(parents=True, exist_ok=True)
    folder = None
    if bundled:
        folder = resources / "Weights" / "tiny"
        shutil.copytree(weights, folder)
    entry = hub.catalog_entry(weights, "tiny", REPO, revision, ["ct-denoise"], "Apache-2.0",
                              "Weights/tiny" if bundled else None)
    entry = dataclasses.replace(entry, published=published)
    catalog = Catalog(resources / "Models.json", "tiny", {"tiny": entry})
    catalog.save()
    return Catalog.load(catalog.path)


def cache_files(cache: Path) -> list:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() or p.is_symlink())


def closed_port_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def cli(args, env_extra, timeout=120):
    env = {**os.environ, **env_extra}
    return subprocess.run([PYTHON, "-m", "DiffCodeRestoreLib", *args], capture_output=True, text=True,
                          encoding="utf-8", env=env, timeout=timeout)


# ----------------------------------------------------------------------------------------------------


def test_catalog_entry_command_writes_checksums(weights, tmp_path):
    catalog_path = tmp_path / "Resources" / "Models.json"
    bundled = tmp_path / "Resources" / "Weights" / "tiny"
    shutil.copytree(weights, bundled)
    hub.write_manifest(bundled)  # an exported folder carries one; it is not a file of the model
    run = subprocess.run([PYTHON, "-m", "DiffCodeRestoreLib.hub", "catalog-entry", str(bundled), "--name", "tiny",
                          "--repo-id", REPO, "--catalog", str(catalog_path), "--update"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    catalog = Catalog.load(catalog_path)
    entry = catalog.get()
    assert entry.bundled == "Weights/tiny" and catalog.bundled_folder(entry) == bundled
    assert not entry.published and len(entry.revision) == 40
    assert {f.filename for f in entry.files} == {"config.json", "model.safetensors", "README.md"}
    for spec in entry.files:
        assert spec.size == (bundled / spec.filename).stat().st_size
        assert spec.sha256 == hub.sha256_of(bundled / spec.filename)
    assert json.loads(run.stdout)["files"] == json.loads(catalog_path.read_text())["models"][0]["files"]


def test_catalog_rejects_a_branch_name_as_revision(weights, tmp_path):
    catalog = make_catalog(tmp_path, weights, "a" * 40)
    data = json.loads(catalog.path.read_text())
    data["models"][0]["revision"] = "main"
    catalog.path.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="40-hex commit"):
        Catalog.load(catalog.path)


def test_shipped_catalog_matches_its_bundled_weights():
    catalog = Catalog.load(hub.DEFAULT_CATALOG)
    for entry in catalog.models.values():
        assert set(entry.tasks) <= {"mri-sr", "ct-denoise", "pet-synthesis"}
        folder = catalog.bundled_folder(entry)
        if entry.bundled:
            report = hub.check_files(folder, entry)
            assert all(state == "ok" for state in report.values()), report


def test_first_download_then_cache_with_server_stopped(server, weights, tmp_path):
    commit = server.add_repo(REPO, files_of(weights))
    catalog = make_catalog(tmp_path, weights, commit)
    cache = tmp_path / "hf-cache"
    seen = []
    resolved = hub.resolve(None, catalog, cache, server.endpoint, progress=lambda done, total: seen.append((done, total)))
    assert resolved.source == "hub" and resolved.revision == commit
    assert resolved.folder == cache / "models--diffcode-test--tiny" / "snapshots" / commit
    assert hub.check_files(resolved.folder, catalog.get()) == {n: "ok" for n in files_of(weights)}
    assert seen[-1] == (catalog.get().size, catalog.get().size)  # byte progress over the whole model
    assert any(0 < done < catalog.get().size for done, _ in seen)
    assert all(req[2] == commit for req in server.requests)  # only the pinned revision was asked for

    server.stop()
    again = hub.resolve(None, catalog, cache, server.endpoint)
    assert again.source == "cache" and again.folder == resolved.folder


def test_offline_env_uses_cache_then_bundled_then_says_what_to_do(server, weights, tmp_path):
    commit = server.add_repo(REPO, files_of(weights))
    catalog = make_catalog(tmp_path / "a", weights, commit)
    cache = tmp_path / "hf-cache"
    hub.download(catalog.get(), cache, server.endpoint)
    server.stop()
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "DIFFCODE_CATALOG": str(catalog.path)}
    run = cli(["weights", "path"], env)
    assert run.returncode == 0 and Path(run.stdout.strip()) == hub.snapshot_folder(catalog.get(), cache)
    run = cli(["weights", "download"], env)  # already complete and verified: no need for the Hub
    assert run.returncode == 0 and "verified" in run.stdout, run.stderr

    bundled_catalog = make_catalog(tmp_path / "b", weights, commit, bundled=True)
    env.update(HF_HUB_CACHE=str(tmp_path / "empty-cache"), DIFFCODE_CATALOG=str(bundled_catalog.path))
    run = cli(["weights", "path"], env)
    assert run.returncode == 0 and Path(run.stdout.strip()) == bundled_catalog.bundled_folder(bundled_catalog.get())

    env["DIFFCODE_CATALOG"] = str(catalog.path)  # no bundled copy, empty cache, offline
    run = cli(["weights", "download"], env)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1 and "HF_HUB_OFFLINE" in run.stderr
    run = cli(["restore", str(tmp_path / "missing.nrrd"), str(tmp_path / "out.nrrd"), "--task", "ct-denoise"], env)
    assert run.returncode == 1 and "no such file" in run.stderr  # bad input is reported before weights


def test_resolve_offline_without_copies_names_the_remedies(weights, tmp_path, monkeypatch):
    catalog = make_catalog(tmp_path, weights, "b" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as error:
        hub.resolve(None, catalog, tmp_path / "cache")
    message = str(error.value)
    assert "HF_HUB_OFFLINE" in message and "weights download" in message and "weights import" in message
    assert "\n" not in message


def test_checksum_mismatch_is_refused_and_deleted(server, weights, tmp_path):
    commit = server.add_repo(REPO, files_of(weights))
    server.corrupt(REPO, "model.safetensors")
    catalog = make_catalog(tmp_path, weights, commit)
    cache = tmp_path / "hf-cache"
    with pytest.raises(WeightsError, match="does not match the catalog's SHA-256"):
        hub.download(catalog.get(), cache, server.endpoint)
    snapshot = hub.snapshot_folder(catalog.get(), cache)
    assert not (snapshot / "model.safetensors").exists() and not (snapshot / "model.safetensors").is_symlink()
    corrupted = server.corrupted[(REPO, "model.safetensors")]
    assert all(p.read_bytes() != corrupted for p in cache.rglob("*") if p.is_file())
    with pytest.raises(WeightsError, match="SHA-256"):  # resolve never hands out the bad file
        hub.resolve(None, catalog, cache, server.endpoint)


def test_transfer_cut_half_way_leaves_nothing_usable(server, weights, tmp_path):
    commit = server.add_repo(REPO, files_of(weights))
    catalog = make_catalog(tmp_path, weights, commit)
    cache = tmp_path / "hf-cache"
    server.cut_transfer("model.safetensors", 0.5)
    with pytest.raises(WeightsError) as error:
        hub.download(catalog.get(), cache, server.endpoint)
    assert "\n" not in str(error.value) and "model.safetensors" in str(error.value)
    snapshot = hub.snapshot_folder(catalog.get(), cache)
    assert sorted(p.name for p in snapshot.iterdir()) == ["README.md", "config.json"]  # complete, verified files
    blobs = list((hub.repo_cache_folder(catalog.get(), cache) / "blobs").iterdir())
    assert len(blobs) == 2 and not any(b.name.endswith(".incomplete") for b in blobs)  # nothing partial
    with pytest.raises(WeightsError):
        hub.resolve(None, catalog, cache, server.endpoint)
    server.cut_transfer(None)
    assert hub.resolve(None, catalog, cache, server.endpoint).source == "hub"


def test_cancelled_download_keeps_nothing(server, weights, tmp_path):
    commit = server.add_repo(REPO, files_of(weights))
    catalog = make_catalog(tmp_path, weights, commit)
    cache = tmp_path / "hf-cache"

    class Cancelled:
        cancelled = True

    with pytest.raises(hub.DownloadCancelled):
        hub.download(catalog.get(), cache, server.endpoint, cancel=Cancelled())
    assert not hub.repo_cache_folder(catalog.get(), cache).exists() or not any(
        p.is_file() for p in (hub.repo_cache_folder(catalog.get(), cache) / "blobs").rglob("*"))


def test_download_cancelled_mid_transfer_keeps_nothing(server, weights, tmp_path):
    """Cancel pressed once bytes are arriving: the transfer stops and no file of the model stays."""
    files = files_of(weights)
    files["model.safetensors"] = files["model.safetensors"] + b" " * (4 << 20)  # several chunks
    commit = server.add_repo(REPO, files)
    served = tmp_path / "served"
    served.mkdir()
    for name, data in files.items():
        (served / name).write_bytes(data)
    catalog = make_catalog(tmp_path, served, commit)
    cache = tmp_path / "hf-cache"

    class CancelWhenBytesArrive:
        cancelled = False

    cancel = CancelWhenBytesArrive()
    seen = []

    def progress(done, total):
        seen.append(done)
        cancel.cancelled = done > 0

    with pytest.raises(hub.DownloadCancelled):
        hub.download(catalog.get(), cache, server.endpoint, progress=progress, cancel=cancel)
    assert seen and seen[-1] < catalog.get().size
    blobs = hub.repo_cache_folder(catalog.get(), cache) / "blobs"
    assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))


def test_missing_file_repo_and_revision_are_explained(server, weights, tmp_path):
    files = files_of(weights)
    commit = server.add_repo(REPO, {k: v for k, v in files.items() if k != "README.md"})
    catalog = make_catalog(tmp_path, weights, commit)
    with pytest.raises(WeightsError, match=r"README.md was not found in .* \(HTTP 404\)"):
        hub.download(catalog.get(), tmp_path / "c1", server.endpoint)
    other = make_catalog(tmp_path / "other", weights, "c" * 40)
    with pytest.raises(WeightsError, match="revision cccccccc was not found"):
        hub.download(other.get(), tmp_path / "c2", server.endpoint)
    server.repos.clear()
    unpublished = make_catalog(tmp_path / "unpublished", weights, commit, published=False)
    with pytest.raises(WeightsError, match=r"repository .*diffcode-test/tiny was not found \(.*not published yet\)"):
        hub.download(unpublished.get(), tmp_path / "c3", server.endpoint)


def test_unreachable_hub_uses_bundled_copy_or_explains(weights, tmp_path):
    endpoint = closed_port_endpoint()
    catalog = make_catalog(tmp_path / "with", weights, "d" * 40, bundled=True)
    resolved = hub.resolve(None, catalog, tmp_path / "cache", endpoint)
    assert resolved.source == "bundled" and resolved.sha256 == catalog.get().sha256

    bare = make_catalog(tmp_path / "without", weights, "d" * 40)
    with pytest.raises(WeightsError) as error:
        hub.resolve(None, bare, tmp_path / "cache", endpoint)
    assert "cannot reach http://127.0.0.1" in str(error.value) and "weights import" in str(error.value)


def test_damaged_bundled_copy_is_not_used(server, weights, tmp_path):
    commit = server.add_repo(REPO, files_of(weights))
    catalog = make_catalog(tmp_path, weights, commit, bundled=True)
    target = catalog.bundled_folder(catalog.get()) / "model.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    resolved = hub.resolve(None, catalog, tmp_path / "cache", server.endpoint)
    assert resolved.source == "hub"  # the damaged bundled file was skipped, the Hub copy verified
    server.stop()
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(WeightsError, match=r"bundled copy is damaged \(model.safetensors: sha256 mismatch\)"):
        hub.resolve(None, catalog, tmp_path / "cache", server.endpoint)


def test_import_by_hand_then_clear(weights, tmp_path):
    catalog = make_catalog(tmp_path, weights, "e" * 40)
    cache = tmp_path / "cache"
    entry, missing = hub.import_weights(weights / "model.safetensors", catalog, cache)
    assert entry.name == "tiny" and missing == ["config.json"]
    entry, missing = hub.import_weights(weights, catalog, cache)
    assert missing == []
    resolved = hub.resolve(None, catalog, cache, closed_port_endpoint())
    assert resolved.source == "cache" and hub.check_files(resolved.folder, entry)["model.safetensors"] == "ok"
    stranger = tmp_path / "other.safetensors"
    stranger.write_bytes(b"not the catalog's weights")
    with pytest.raises(WeightsError, match="no file matches a SHA-256"):
        hub.import_weights(stranger, catalog, cache)
    assert hub.clear_cache(entry, cache) and not hub.repo_cache_folder(entry, cache).exists()
    assert not hub.clear_cache(entry, cache)


def test_damaged_cache_file_is_deleted_and_replaced(server, weights, tmp_path):
    commit = server.add_repo(REPO, files_of(weights))
    catalog = make_catalog(tmp_path, weights, commit)
    cache = tmp_path / "cache"
    folder = hub.resolve(None, catalog, cache, server.endpoint).folder
    blob = (folder / "model.safetensors").resolve()
    blob.write_bytes(b"\0" * blob.stat().st_size)  # bit rot in the cache
    said = []
    resolved = hub.resolve(None, catalog, cache, server.endpoint, message=said.append)
    assert resolved.source == "hub" and hub.check_files(resolved.folder, catalog.get())["model.safetensors"] == "ok"
    assert said == ["the cached copy of tiny was damaged (model.safetensors: sha256 mismatch) and was removed; "
                    "downloading it again."]


def test_publish_uploads_and_returns_the_commit_to_pin(server, weights, tmp_path):
    from huggingface_hub.hf_api import CommitInfo

    if "_endpoint" not in {f.name for f in dataclasses.fields(CommitInfo)}:
        pytest.skip("this huggingface_hub reads a commit URL as huggingface.co's only: it cannot publish elsewhere")
    run = subprocess.run([PYTHON, "-m", "DiffCodeRestoreLib.hub", "publish", str(weights), "--repo-id", REPO,
                          "--endpoint", server.endpoint], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    commit = run.stdout.strip().splitlines()[-1]
    assert commit == commit_of(files_of(weights)) == server.repos[REPO].main
    catalog = make_catalog(tmp_path, weights, commit)
    assert hub.resolve(None, catalog, tmp_path / "cache", server.endpoint).source == "hub"


def test_weights_cli_list_verify_clear_import(server, weights, tmp_path):
    commit = server.add_repo(REPO, files_of(weights))
    catalog = make_catalog(tmp_path, weights, commit, bundled=True)
    env = {"HF_HUB_CACHE": str(tmp_path / "cache"), "DIFFCODE_CATALOG": str(catalog.path),
           "HF_ENDPOINT": server.endpoint, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    run = cli(["weights", "list"], env)
    assert run.returncode == 0 and "tiny (default)" in run.stdout and "bundled" in run.stdout
    assert "not yet on the Hub" not in run.stdout
    run = cli(["weights", "download"], env)
    assert run.returncode == 0, run.stderr
    run = cli(["weights", "verify"], env)
    assert run.returncode == 0 and run.stdout.count(": ok") == 6  # 3 files, cached and bundled
    blob = (hub.snapshot_folder(catalog.get(), tmp_path / "cache") / "config.json").resolve()
    blob.write_text(blob.read_text() + " ")
    run = cli(["weights", "verify"], env)
    assert run.returncode == 1 and "cache: config.json: size mismatch" in run.stdout
    run = cli(["weights", "clear"], env)
    assert run.returncode == 0 and "deleted" in run.stdout
    run = cli(["weights", "import", str(weights)], env)
    assert run.returncode == 0 and "imported tiny" in run.stdout
    run = cli(["weights", "download", "nonexistent"], env)
    assert run.returncode == 1 and "unknown model 'nonexistent'" in run.stderr


def test_download_goes_to_hf_home_when_no_hub_cache_is_set(server, weights, tmp_path):
    commit = server.add_repo(REPO, files_of(weights))
    catalog = make_catalog(tmp_path, weights, commit)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_CACHE"}
    env.update(HF_HOME=str(tmp_path / "hf-home"), DIFFCODE_CATALOG=str(catalog.path), HF_ENDPOINT=server.endpoint,
               HF_HUB_DISABLE_PROGRESS_BARS="1")
    run = subprocess.run([PYTHON, "-m", "DiffCodeRestoreLib", "weights", "download"], capture_output=True, text=True,
                         encoding="utf-8", env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    snapshot = hub.snapshot_folder(catalog.get(), tmp_path / "hf-home" / "hub")
    assert hub.check_files(snapshot, catalog.get()) == {name: "ok" for name in files_of(weights)}


def test_ssl_failure_is_one_line(weights, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    import ssl
    import threading
    from http.server import HTTPServer, SimpleHTTPRequestHandler

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    httpd = HTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        catalog = make_catalog(tmp_path, weights, "f" * 40)
        with pytest.raises(WeightsError, match="SSL certificate .* could not be verified"):
            hub.download(catalog.get(), tmp_path / "cache", f"https://127.0.0.1:{httpd.server_address[1]}")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_proxy_refusal_is_one_line(weights, tmp_path):
    """A proxy that refuses CONNECT (407), met by a fresh process that reads HTTPS_PROXY."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Refusing(BaseHTTPRequestHandler):
        def do_CONNECT(self):
            self.send_response(407, "Proxy Authentication Required")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        catalog = make_catalog(tmp_path, weights, "f" * 40)
        env = {"HTTPS_PROXY": f"http://127.0.0.1:{proxy.server_address[1]}", "NO_PROXY": "",
               "HF_ENDPOINT": "https://hub.example.org", "HF_HUB_CACHE": str(tmp_path / "cache"),
               "DIFFCODE_CATALOG": str(catalog.path)}
        run = cli(["weights", "download"], env)
        assert run.returncode == 1 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
        assert "proxy refused the connection" in run.stderr and "HTTPS_PROXY" in run.stderr
    finally:
        proxy.shutdown()
        proxy.server_close()


# ----------------------------------------------------------------------------------------------------
# A weights folder of one's own: the checksum manifest (checksums.sha256)


def flip_one_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_manifest_command_writes_sha256sum_format_and_loading_refuses_a_flipped_bit(weights, tmp_path):
    folder = tmp_path / "mine"
    shutil.copytree(weights, folder)
    run = subprocess.run([PYTHON, "-m", "DiffCodeRestoreLib.hub", "manifest", str(folder)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    manifest = folder / hub.MANIFEST_NAME
    assert Path(run.stdout.strip()) == manifest
    assert manifest.read_text() == "".join(f"{hub.sha256_of(folder / name)}  {name}\n"
                                           for name in ("README.md", "config.json", "model.safetensors"))
    if shutil.which("sha256sum"):  # users can check it with the standard tool
        assert subprocess.run(["sha256sum", "--quiet", "-c", hub.MANIFEST_NAME], cwd=folder).returncode == 0
    said = []
    resolved = hub.resolve(folder, message=said.append)
    assert resolved.verified and resolved.source == "folder" and not said
    assert resolved.sha256 == hub.sha256_of(folder / "model.safetensors")

    flip_one_bit(folder / "model.safetensors")
    with pytest.raises(WeightsError) as error:
        hub.resolve(folder, message=said.append)
    text = str(error.value)
    assert "\n" not in text and "model.safetensors is damaged" in text and "copy the weights folder again" in text
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()  # not a file any more: "missing", whatever the manifest says
    with pytest.raises(WeightsError, match="not a weights folder"):
        hub.resolve(folder)


def test_folder_without_manifest_loads_with_a_visible_unverified_warning(weights, tmp_path):
    folder = tmp_path / "mine"
    shutil.copytree(weights, folder)
    said = []
    resolved = hub.resolve(folder, message=said.append)
    assert not resolved.verified and resolved.sha256 == hub.sha256_of(folder / "model.safetensors")
    assert len(said) == 1 and said[0].startswith(f"unverified weights: {folder} has no checksums.sha256")
    assert f"python -m DiffCodeRestoreLib.hub manifest {folder}" in said[0]
    with pytest.warns(hub.WeightsWarning, match="unverified weights"):  # no callback: never silent
        assert not hub.resolve(folder).verified


@pytest.mark.parametrize("line, pattern", [
    ("{digest}  ../model.safetensors", "line 1 is not"),
    ("{digest}  sub/model.safetensors", "line 1 is not"),
    ("not-a-digest  model.safetensors", "line 1 is not"),
    ("{digest}  config.json", "does not list model.safetensors"),
])
def test_manifest_that_names_other_places_or_misses_the_weights_is_refused(weights, tmp_path, line, pattern):
    folder = tmp_path / "mine"
    shutil.copytree(weights, folder)
    (folder / hub.MANIFEST_NAME).write_text(line.format(digest=hub.sha256_of(folder / "config.json")) + "\n")
    with pytest.raises(WeightsError, match=pattern) as error:
        hub.resolve(folder)
    assert "\n" not in str(error.value) and "hub manifest" in str(error.value)


def small_volume(path: Path) -> Path:
    import numpy as np
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(40, 120, (2, 16, 16)).astype(np.int16))
    sitk.WriteImage(image, str(path))
    return path


def test_restore_with_a_damaged_weights_folder_writes_nothing(weights, tmp_path, capsys):
    from DiffCodeRestoreLib.cli import main

    folder = tmp_path / "mine"
    shutil.copytree(weights, folder)
    hub.write_manifest(folder)
    flip_one_bit(folder / "model.safetensors")
    source, target = small_volume(tmp_path / "in.nrrd"), tmp_path / "out.nrrd"
    code = main(["restore", str(source), str(target), "--task", "ct-denoise", "--model", str(folder), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "model.safetensors is damaged" in err and not target.exists()


def test_restore_with_an_unmanifested_folder_says_unverified(weights, tmp_path, capsys):
    from DiffCodeRestoreLib.cli import main

    folder = tmp_path / "mine"
    shutil.copytree(weights, folder)
    source, target = small_volume(tmp_path / "in.nrrd"), tmp_path / "out.nrrd"
    code = main(["restore", str(source), str(target), "--task", "ct-denoise", "--model", str(folder), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0 and target.is_file(), err
    assert "unverified weights" in err


def test_training_export_writes_a_manifest_that_loading_checks(weights, tmp_path):
    from DiffCodeRestoreLib.training.__main__ import main as training_main
    from DiffCodeRestoreLib.training.config import TrainConfig

    run_dir = tmp_path / "run"
    shutil.copytree(weights, run_dir / "final")
    (run_dir / "train_config.json").write_text(json.dumps(TrainConfig.preset("tiny").to_dict()))
    (run_dir / "log.jsonl").write_text("")
    out = tmp_path / "exported"
    assert training_main(["export", str(run_dir), str(out)]) == 0
    listed = hub.verify_folder(out)
    assert set(listed) == {"README.md", "config.json", "model.safetensors"}
    assert hub.resolve(out).verified
    if shutil.which("sha256sum"):
        assert subprocess.run(["sha256sum", "--quiet", "-c", hub.MANIFEST_NAME], cwd=out).returncode == 0
    flip_one_bit(out / "model.safetensors")
    with pytest.raises(WeightsError, match="model.safetensors is damaged"):
        hub.resolve(out)

    hub.write_manifest(run_dir / "final")  # a run's final folder carries one too (train() saves it so)
    flip_one_bit(run_dir / "final" / "model.safetensors")
    with pytest.raises(WeightsError, match="model.safetensors is damaged"):  # not exported under a fresh manifest
        training_main(["export", str(run_dir), str(tmp_path / "again")])
    assert not (tmp_path / "again" / hub.MANIFEST_NAME).exists()


# ----------------------------------------------------------------------------------------------------
# A damaged copy: say what happened, and advice that works


def damage_cached(catalog: Catalog, cache: Path, filename: str = "model.safetensors") -> Path:
    path = (hub.snapshot_folder(catalog.get(), cache) / filename).resolve()
    flip_one_bit(path)
    return path


def test_damaged_cache_copy_is_reported_and_the_bundled_copy_used(weights, tmp_path):
    catalog = make_catalog(tmp_path, weights, "e" * 40, bundled=True, published=False)
    cache = tmp_path / "cache"
    hub.import_weights(weights, catalog, cache)
    damage_cached(catalog, cache)
    said = []
    resolved = hub.resolve(None, catalog, cache, closed_port_endpoint(), message=said.append)
    assert resolved.source == "bundled"
    assert said == ["the cached copy of tiny was damaged (model.safetensors: sha256 mismatch) and was removed; "
                    "using the bundled copy."]
    assert not (hub.snapshot_folder(catalog.get(), cache) / "model.safetensors").exists()


def weights_cli(capsys, *args):
    from DiffCodeRestoreLib.cli import main

    code = main(["weights", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    """Point the in-process CLI at a test catalog and cache; returns a function taking the catalog."""

    def use(catalog: Catalog, endpoint: str = "") -> Path:
        cache = tmp_path / "cli-cache"
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.setenv("DIFFCODE_CATALOG", str(catalog.path))
        monkeypatch.setenv("HF_ENDPOINT", endpoint or closed_port_endpoint())
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        return cache

    return use


def test_published_model_damaged_in_the_cache_list_and_verify_give_advice_that_works(
        server, weights, tmp_path, capsys, cli_env):
    commit = server.add_repo(REPO, files_of(weights))
    catalog = make_catalog(tmp_path, weights, commit)
    cache = cli_env(catalog, server.endpoint)
    assert weights_cli(capsys, "download")[0] == 0
    damage_cached(catalog, cache)

    code, out, _ = weights_cli(capsys, "list")
    row = next(line for line in out.splitlines() if line.startswith("tiny (default)"))
    assert code == 0 and "damaged" in row and "cached" not in row
    assert ("tiny: the cached copy is damaged (model.safetensors: sha256 mismatch): run `diffcode-restore weights "
            "clear tiny`, then `diffcode-restore weights download tiny`.") in out

    code, out, err = weights_cli(capsys, "verify")
    assert code == 1 and "cache: model.safetensors: sha256 mismatch" in out and len(err.strip().splitlines()) == 1
    assert "run `diffcode-restore weights clear tiny`, then `diffcode-restore weights download tiny`" in err
    assert weights_cli(capsys, "clear", "tiny")[0] == 0  # follow the advice
    assert weights_cli(capsys, "download", "tiny")[0] == 0
    code, out, err = weights_cli(capsys, "verify")
    assert code == 0 and out.count(": ok") == 3, err
    code, out, _ = weights_cli(capsys, "list")
    assert " cached " in out and "damaged" not in out


def test_unpublished_model_damaged_in_the_cache_is_cleared_and_the_bundled_copy_used(weights, tmp_path, capsys,
                                                                                       cli_env):
    catalog = make_catalog(tmp_path, weights, "e" * 40, bundled=True, published=False)
    cache = cli_env(catalog)
    assert weights_cli(capsys, "import", str(weights))[0] == 0
    damage_cached(catalog, cache)
    code, out, err = weights_cli(capsys, "verify")
    assert code == 1 and "weights download" not in err  # it is not on the Hub: downloading cannot work
    assert "run `diffcode-restore weights clear tiny`; the bundled copy is then used" in err
    code, out, _ = weights_cli(capsys, "list")
    assert "weights clear tiny`; the bundled copy is then used" in out
    assert weights_cli(capsys, "clear", "tiny")[0] == 0
    code, out, _ = weights_cli(capsys, "path")
    assert code == 0 and Path(out.strip()) == catalog.bundled_folder(catalog.get())
    assert weights_cli(capsys, "verify")[0] == 0


def test_unpublished_model_without_bundled_copy_damaged_in_the_cache_is_imported_again(weights, tmp_path, capsys,
                                                                                         cli_env):
    catalog = make_catalog(tmp_path, weights, "e" * 40, published=False)
    cache = cli_env(catalog)
    assert weights_cli(capsys, "import", str(weights))[0] == 0
    damage_cached(catalog, cache)
    code, _, err = weights_cli(capsys, "verify")
    assert code == 1 and "weights download" not in err  # it is not on the Hub: downloading cannot work
    assert "run `diffcode-restore weights clear tiny`, then `diffcode-restore weights import FILE_OR_FOLDER`" in err
    assert weights_cli(capsys, "clear", "tiny")[0] == 0
    assert weights_cli(capsys, "import", str(weights))[0] == 0
    assert weights_cli(capsys, "verify")[0] == 0
    assert weights_cli(capsys, "clear", "tiny")[0] == 0  # nothing left: say how to get it, not "download"
    code, _, err = weights_cli(capsys, "verify")
    assert code == 1 and "weights import FILE_OR_FOLDER" in err and "weights download" not in err


def test_damaged_bundled_copy_advice_is_reinstall_or_import(weights, tmp_path, capsys, cli_env):
    catalog = make_catalog(tmp_path, weights, "e" * 40, bundled=True, published=False)
    cli_env(catalog)
    flip_one_bit(catalog.bundled_folder(catalog.get()) / "model.safetensors")
    code, out, _ = weights_cli(capsys, "list")
    assert "damaged" in out and "tiny: the bundled copy is damaged (model.safetensors: sha256 mismatch)" in out
    code, out, err = weights_cli(capsys, "verify")
    assert code == 1 and "bundled: model.safetensors: sha256 mismatch" in out
    assert "reinstall the DiffCode Restore extension" in err and "weights import FILE_OR_FOLDER" in err
    assert "weights download" not in err and len(err.strip().splitlines()) == 1
    assert weights_cli(capsys, "import", str(weights))[0] == 0  # follow the advice: the cache comes first
    code, out, _ = weights_cli(capsys, "path")
    assert code == 0 and Path(out.strip()) == hub.snapshot_folder(catalog.get())


# ----------------------------------------------------------------------------------------------------
# huggingface_hub 2.x's shared store: blobs/<etag> may link to <cache>/blobs/<xx>/<xet hash>, shared by repos


def share_through_store(cache: Path, repo_folder: Path, revision: str, filename: str, other_repo: str = "") -> Path:
    """Give ``filename`` the layout huggingface_hub 2.x makes for an Xet file, with the library's own helpers:
    the repo's ``blobs/<etag>`` becomes a link to a store entry outside the repo folder; with ``other_repo``, a
    second cached repository links the same entry (as dedup across repos does). Returns the store entry."""
    shared = pytest.importorskip("huggingface_hub.utils._shared_blobs")
    pointer = repo_folder / "snapshots" / revision / filename
    blob = Path(os.path.abspath(pointer.parent / os.readlink(pointer)))
    size = blob.stat().st_size
    xet_hash = hashlib.sha256(b"xet:" + blob.read_bytes()).hexdigest()
    assert shared.publish_blob_to_shared_store(blob_path=str(blob), xet_hash=xet_hash, cache_dir=cache,
                                               expected_size=size)
    store = shared.shared_blob_path(cache, xet_hash)
    assert blob.is_symlink() and store.is_file() and repo_folder not in store.parents
    if other_repo:
        other = cache / ("models--" + other_repo.replace("/", "--"))
        other_blob = other / "blobs" / blob.name
        other_blob.parent.mkdir(parents=True, exist_ok=True)
        assert shared.try_link_from_shared_store(blob_path=str(other_blob), xet_hash=xet_hash, cache_dir=cache,
                                                 expected_size=size)
        other_pointer = other / "snapshots" / ("f" * 40) / filename
        other_pointer.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(other_blob, other_pointer.parent), other_pointer)
    return store


@pytest.mark.parametrize("scannable", [True, False], ids=["scanned", "repo the library cannot scan"])
@pytest.mark.parametrize("layout", ["shared store", "link to a file elsewhere"])
def test_removing_a_damaged_cached_file_never_deletes_what_its_blob_links_to(server, weights, tmp_path, layout,
                                                                            scannable):
    commit = server.add_repo(REPO, files_of(weights))
    catalog = make_catalog(tmp_path, weights, commit)
    cache = tmp_path / "cache"
    repo_folder = hub.download(catalog.get(), cache, server.endpoint).parent.parent
    if layout == "link to a file elsewhere":
        blob = Path(os.path.abspath(repo_folder / "snapshots" / commit / os.readlink(
            repo_folder / "snapshots" / commit / "model.safetensors")))
        outside = tmp_path / "elsewhere" / "payload"
        outside.parent.mkdir()
        shutil.move(str(blob), str(outside))
        os.symlink(outside, blob)
    else:
        outside = share_through_store(cache, repo_folder, commit, "model.safetensors", other_repo="someone/else")
    if not scannable:  # then only our own fallback removes it: it must be as careful
        (repo_folder / "refs").mkdir(exist_ok=True)
        (repo_folder / "refs" / "stale").write_text("0" * 40)  # a ref to a missing commit: scan_cache_dir skips it
    os.chmod(outside, 0o644)
    flip_one_bit(outside)  # damaged: our copy must go, but the entry itself is not ours to delete
    before = outside.read_bytes()

    said = []
    resolved = hub.resolve(None, catalog, cache, server.endpoint, message=said.append)
    assert outside.is_file() and outside.read_bytes() == before
    if layout == "shared store":  # the other repository still finds its file
        other = cache / "models--someone--else" / "snapshots" / ("f" * 40) / "model.safetensors"
        assert other.resolve() == outside.resolve() and other.read_bytes() == before
    assert resolved.source == "hub" and hub.check_files(resolved.folder, catalog.get())["model.safetensors"] == "ok"
    pointer = resolved.folder / "model.safetensors"
    assert outside.resolve() != pointer.resolve()  # our copy is new, not the damaged entry linked again
    assert said and "was removed; downloading it again" in said[0]


def test_clear_removes_store_entries_only_this_model_used(server, weights, tmp_path):
    commit = server.add_repo(REPO, files_of(weights))
    catalog = make_catalog(tmp_path, weights, commit)
    cache = tmp_path / "cache"
    repo_folder = hub.download(catalog.get(), cache, server.endpoint).parent.parent
    ours_only = share_through_store(cache, repo_folder, commit, "config.json")
    shared = share_through_store(cache, repo_folder, commit, "model.safetensors", other_repo="someone/else")
    assert hub.clear_cache(catalog.get(), cache) and not repo_folder.exists()
    assert not ours_only.exists()  # not orphaned in the store: nothing else used it
    other = cache / "models--someone--else" / "snapshots" / ("f" * 40) / "model.safetensors"
    assert shared.is_file() and other.read_bytes() == (weights / "model.safetensors").read_bytes()
    assert not hub.clear_cache(catalog.get(), cache)


# ----------------------------------------------------------------------------------------------------
# Progress over several bars for one file (Xet makes two), and Cancel from hf_xet's callback


def test_several_bars_for_one_file_report_monotonic_bytes():
    seen = []
    bar_class = hub._progress_bar_class(lambda done, total: seen.append((done, total)), None, False, 100, 1100)
    written, received = bar_class(total=1000), bar_class(total=1000)  # e.g. bytes written and bytes received
    for a, b in ((300, 100), (300, 250), (0, 400), (400, 500)):
        written.update(a)
        received.update(b)
    written.update(-200)  # the client rolls a bar back when a server ignored Range
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)  # never jumps back
    assert seen[-1] == (1100, 1100) and all(total == 1100 for _, total in seen)


def test_xet_reporter_uses_one_bar_and_cancel_in_its_callback_stops_the_download():
    reporting = pytest.importorskip("huggingface_hub.utils._xet_progress_reporting")
    if not hasattr(reporting, "XetDownloadProgressReporter"):
        pytest.skip("this huggingface_hub gives an Xet download a single bar")
    from types import SimpleNamespace

    class Cancel:
        cancelled = False

    cancel, seen = Cancel(), []
    bar_class = hub._progress_bar_class(lambda done, total: seen.append(done), cancel, False, 0, 1000)
    reporter = reporting.XetDownloadProgressReporter(reconstruction_desc="model.safetensors", total=1000,
                                                     log_level=30, name="huggingface_hub.xet_get",
                                                     tqdm_class=bar_class)
    assert reporter.transfer_bar is None or reporter.transfer_bar is reporter.reconstruction_bar

    def report(written, received):  # what hf_xet passes to the callback
        return SimpleNamespace(total_bytes=1000, total_bytes_completed=written, total_bytes_completion_rate=None,
                               total_transfer_bytes_completed=received, total_transfer_bytes_completion_rate=None)

    for written, received in ((0, 300), (200, 600), (500, 700), (900, 800)):
        reporter.update_progress(report(written, received))
    assert seen == [200, 500, 900]  # file bytes only, one counter
    cancel.cancelled = True
    with pytest.raises(hub.DownloadCancelled):
        reporter.update_progress(report(950, 850))
    with pytest.raises(hub.DownloadCancelled):  # bytes received but none written yet: still stops
        reporter.update_progress(report(950, 900))
    reporter.close()


def test_cancel_seen_as_the_last_bytes_arrive_still_cancels_and_keeps_nothing(server, weights, tmp_path):
    """hf_xet calls the progress callback on its own thread and does not stop on its exception: the
    transfer may finish after Cancel. download() then still ends cancelled, with nothing kept."""
    commit = server.add_repo(REPO, files_of(weights))
    catalog = make_catalog(tmp_path, weights, commit)
    cache = tmp_path / "hf-cache"
    total = catalog.get().size

    class Cancel:
        cancelled = False

    cancel = Cancel()

    def progress(done, _total):
        cancel.cancelled = cancel.cancelled or done == total  # pressed as the last chunk arrived

    with pytest.raises(hub.DownloadCancelled):
        hub.download(catalog.get(), cache, server.endpoint, progress=progress, cancel=cancel)
    assert cancel.cancelled
    repo = hub.repo_cache_folder(catalog.get(), cache)
    assert not repo.exists() or not any(p.is_file() for p in repo.rglob("*"))


def test_a_project_weights_folder_is_imported_listed_and_used_by_name(tmp_path, tiny_weights, monkeypatch, capsys):
    """An adapted model's folder (manifest + adaptation.json) goes into the local models folder, shows in
    `weights list` with its held-out figures, restores by name; a damaged copy is refused at import."""
    import json
    import shutil

    import SimpleITK as sitk

    from DiffCodeRestoreLib.cli import main
    from images import oblique_image

    monkeypatch.setenv("DIFFCODE_MODELS_DIR", str(tmp_path / "models"))
    adapted = tmp_path / "my-ct"
    shutil.copytree(tiny_weights, adapted)
    (adapted / "adaptation.json").write_text(json.dumps({
        "task": "ct-denoise", "base": {"name": "diffcode-small"},
        "scores": {"base model": {"psnr": 21.43, "ssim": 0.58}, "adapted model": {"psnr": 22.5, "ssim": 0.66}}}))
    hub.write_manifest(adapted)
    damaged = tmp_path / "damaged" / "my-ct"
    shutil.copytree(adapted, damaged)
    data = bytearray((damaged / hub.WEIGHTS_FILE).read_bytes())
    data[100] ^= 0x01
    (damaged / hub.WEIGHTS_FILE).write_bytes(bytes(data))
    assert main(["weights", "import", str(damaged)]) == 1
    assert "damaged" in capsys.readouterr().err and not (tmp_path / "models" / "my-ct").exists()

    assert main(["weights", "import", str(adapted)]) == 0
    assert "--model my-ct" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    listed = capsys.readouterr().out
    assert "my-ct" in listed and "adapted for ct-denoise; held-out PSNR 22.50 dB, +1.07 dB over diffcode-small" in listed
    source = tmp_path / "ct.nrrd"
    sitk.WriteImage(oblique_image(size=(16, 16, 2)), str(source))
    assert main(["restore", str(source), str(tmp_path / "out.nrrd"), "--task", "ct-denoise", "--model", "my-ct",
                 "--quiet"]) == 0
    assert "unverified" not in capsys.readouterr().err
    assert main(["weights", "import", str(adapted)]) == 1  # the name is taken
    assert "exists already" in capsys.readouterr().err


def test_new_model_names_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFCODE_MODELS_DIR", str(tmp_path))
    assert hub.new_local_model_folder("my-scanner_ct.v2") == tmp_path / "my-scanner_ct.v2"
    for bad in ("", ".hidden", "../escape", "a b", "x/y"):
        with pytest.raises(WeightsError, match="cannot name a model"):
            hub.new_local_model_folder(bad)
    (tmp_path / "taken").mkdir()
    with pytest.raises(WeightsError, match="exists already"):
        hub.new_local_model_folder("taken")
