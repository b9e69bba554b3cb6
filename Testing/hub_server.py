"""A small Hugging Face Hub-compatible HTTP server on 127.0.0.1, for tests with the real client.

It answers what ``huggingface_hub`` asks when downloading and publishing:

- ``HEAD``/``GET /{repo}/resolve/{revision}/{filename}`` with ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length`` (``Range`` supported), and 404s carrying the Hub's ``X-Error-Code``
  (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``);
- ``GET /api/models/{repo}/revision/{rev}`` and ``.../tree/{rev}`` (``snapshot_download``);
- ``POST /api/repos/create``, ``/api/validate-yaml``, ``/api/models/{repo}/preupload/{rev}`` and
  ``/api/models/{repo}/commit/{rev}`` (``HfApi.upload_folder`` with regular, inline uploads).

Commits are deterministic: the SHA-1 over the sorted ``filename sha256`` lines of the files.
Faults for tests: ``corrupt`` (serve other bytes than published), ``cut_transfer`` (send half of a
file then drop the connection, then answer 503: the Hub went away), ``stop``/``start`` on the same port.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Optional
from urllib.parse import unquote, urlparse


def commit_of(files: Dict[str, bytes]) -> str:
    lines = "".join(f"{name} {hashlib.sha256(data).hexdigest()}\n" for name, data in sorted(files.items()))
    return hashlib.sha1(lines.encode()).hexdigest()


@dataclass
class Repo:
    commits: Dict[str, Dict[str, bytes]] = field(default_factory=dict)  # commit -> files
    main: Optional[str] = None


class HubServer:
    """Start with ``HubServer()``; ``endpoint`` is the URL to give as ``HF_ENDPOINT``/``endpoint=``."""

    def __init__(self) -> None:
        self.repos: Dict[str, Repo] = {}
        self.corrupted: Dict[tuple, bytes] = {}
        self.cut: Optional[tuple] = None  # (filename, fraction)
        self.gone: set = set()  # files whose transfer was cut: the Hub then answers 503
        self.requests: list = []
        self.connections: set = set()  # open keep-alive sockets: closed by stop(), like a dead server
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self.port = 0
        self.start()

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for connection in list(self.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.connections.clear()

    # -- content --------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: Dict[str, bytes], commit: Optional[str] = None) -> str:
        """Publish ``files`` as a new commit on ``main`` (``commit`` forces its id); returns it."""
        commit = commit or commit_of(files)
        with self._lock:
            repo = self.repos.setdefault(repo_id, Repo())
            repo.commits[commit] = dict(files)
            repo.main = commit
        return commit

    def corrupt(self, repo_id: str, filename: str) -> None:
        """Serve bytes other than the published ones for this file (same size): a tampering proxy."""
        repo = self.repos[repo_id]
        data = bytearray(repo.commits[repo.main][filename])
        data[len(data) // 2] ^= 0xFF
        self.corrupted[(repo_id, filename)] = bytes(data)

    def cut_transfer(self, filename: Optional[str], fraction: float = 0.5) -> None:
        """Drop the next transfer of ``filename`` after ``fraction`` of its bytes; later GETs of it get
        503 (the connection broke and the Hub became unavailable). ``None`` restores normal service."""
        self.cut = None if filename is None else (filename, fraction)
        self.gone.clear()

    def resolve(self, repo_id: str, revision: str):
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, None
        commit = repo.main if revision == "main" else revision
        return repo, (commit if commit in repo.commits else None)


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def setup(self) -> None:
        super().setup()
        self.hub.connections.add(self.connection)

    def finish(self) -> None:
        self.hub.connections.discard(self.connection)
        super().finish()

    # -- helpers --------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: Optional[dict] = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, payload, status: int = 200) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def _error(self, status: int, code: str, message: str, head: bool = False, extra: Optional[dict] = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
        headers.update(extra or {})
        self._send(status, b"" if head else json.dumps({"error": message}).encode(), headers, head)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- routes ---------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._resolve(head=True)

    def do_GET(self) -> None:
        path = unquote(urlparse(self.path).path)
        if path.startswith("/api/models/"):
            self._api_get(path[len("/api/models/"):])
        else:
            self._resolve(head=False)

    def do_POST(self) -> None:
        path = unquote(urlparse(self.path).path)
        body = self._body()
        if path == "/api/repos/create":
            data = json.loads(body or b"{}")
            repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
            self.hub.repos.setdefault(repo_id, Repo())
            self._json({"url": f"{self.hub.endpoint}/{repo_id}", "name": repo_id})
        elif path == "/api/validate-yaml":
            self._json({"errors": [], "warnings": []})
        elif path.startswith("/api/models/") and "/preupload/" in path:
            files = json.loads(body)["files"]
            self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        elif path.startswith("/api/models/") and "/commit/" in path:
            repo_id = path[len("/api/models/"):].split("/commit/")[0]
            self._commit(repo_id, body)
        else:
            self._error(404, "NotFound", f"no route {path}")

    def _commit(self, repo_id: str, body: bytes) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return
        files = dict(repo.commits.get(repo.main, {})) if repo.main else {}
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        commit = self.hub.add_repo(repo_id, files)
        self._json({"commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/{commit}", "commitOid": commit,
                    "success": True, "pullRequestUrl": None})

    def _api_get(self, rest: str) -> None:
        if "/revision/" in rest:
            repo_id, revision = rest.split("/revision/", 1)
        elif "/tree/" in rest:
            repo_id, revision = rest.split("/tree/", 1)
        else:
            self._error(404, "NotFound", "unknown api")
            return
        repo, commit = self.hub.resolve(repo_id, revision.split("/")[0])
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
        elif commit is None:
            self._error(404, "RevisionNotFound", "Invalid rev id")
        elif "/revision/" in rest:
            files = repo.commits[commit]
            self._json({"id": repo_id, "sha": commit, "siblings": [{"rfilename": n} for n in sorted(files)]})
        else:
            files = repo.commits[commit]
            self._json([{"type": "file", "path": n, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                        for n, d in sorted(files.items())])

    def _resolve(self, head: bool) -> None:
        path = unquote(urlparse(self.path).path).lstrip("/")
        parts = path.split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            self._error(404, "NotFound", "not a resolve url", head)
            return
        repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        self.hub.requests.append((self.command, repo_id, revision, filename, self.headers.get("Range")))
        repo, commit = self.hub.resolve(repo_id, revision)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found", head)
            return
        if commit is None:
            self._error(404, "RevisionNotFound", "Invalid rev id", head)
            return
        files = repo.commits[commit]
        if filename not in files:
            self._error(404, "EntryNotFound", "Entry not found", head, {"X-Repo-Commit": commit})
            return
        data = self.hub.corrupted.get((repo_id, filename), files[filename])
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"', "Accept-Ranges": "bytes"}
        if head:
            self._send(200, data, headers, head=True)
            return
        if filename in self.hub.gone:
            self._error(503, "Unavailable", "Service Unavailable")
            return
        cut = self.hub.cut[1] if self.hub.cut and self.hub.cut[0] == filename else None
        start = 0
        if self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
        body = data[start:]
        self.send_response(206 if start else 200)
        for key, value in headers.items():
            self.send_header(key, value)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut is None:
            self.wfile.write(body)
            return
        self.hub.gone.add(filename)
        self.wfile.write(body[: int(len(body) * cut)])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)
