"""Weights from the Hub: the real huggingface_hub client against a Hub-compatible server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
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
    """The tiny model's files plus a model card, as published."""
    folder = tmp_path_factory.mktemp("published") / "tiny"
    shutil.copytree(tiny_weights, folder)
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
    with pytest.raises(WeightsError, match=r"bundled copy is damaged \(model.safetensors sha256 mismatch\)"):
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
    resolved = hub.resolve(None, catalog, cache, server.endpoint)
    assert resolved.source == "hub" and hub.check_files(resolved.folder, catalog.get())["model.safetensors"] == "ok"


def test_publish_uploads_and_returns_the_commit_to_pin(server, weights, tmp_path):
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
