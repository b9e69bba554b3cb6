"""Model weights: the catalog, the Hugging Face Hub download, checksums, cache, bundled copy, import.

Why this order of sources (``resolve``): weights are identified by the SHA-256 of every file in the
catalog (``Resources/Models.json``), not by where they come from. A verified copy in the Hub cache
is used first, then a verified bundled copy (the same bytes, no network needed), then a download
from the Hub at the pinned commit. Every file is checked before use; a file that fails the check
is deleted (blob and snapshot link), so nothing unverified stays usable. When nothing works the
error says, in one line, why and what to do (``diffcode-restore weights download`` or
``diffcode-restore weights import FILE_OR_FOLDER``).

The Hub cache is the standard one (``HF_HOME`` / ``HF_HUB_CACHE``; ``HF_ENDPOINT`` and
``HF_HUB_OFFLINE`` are honoured), so other tools see the same files.

Developer commands (not needed by users)::

    python -m DiffCodeRestoreLib.hub catalog-entry FOLDER --name NAME --repo-id ORG/NAME \
        [--revision SHA] [--tasks ...] [--update]     # print/update the catalog entry of FOLDER
    python -m DiffCodeRestoreLib.hub publish FOLDER --repo-id ORG/NAME [--endpoint URL]
                                                      # upload; prints the commit to pin
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from .errors import WeightsError

PathLike = Union[str, "os.PathLike[str]"]
RESOURCES = Path(__file__).resolve().parent.parent / "Resources"
DEFAULT_CATALOG = RESOURCES / "Models.json"
CATALOG_ENV = "DIFFCODE_CATALOG"
REQUIRED_FILES = ("config.json", "model.safetensors")
WEIGHTS_FILE = "model.safetensors"
WHAT_TO_DO = (
    "connect to the internet and run `diffcode-restore weights download`, or copy the weights files from "
    "another computer and run `diffcode-restore weights import FILE_OR_FOLDER`"
)
ByteProgress = Callable[[int, int], None]


class DownloadCancelled(WeightsError):
    """The user cancelled a download; nothing partial was kept."""


# ----------------------------------------------------------------------------------------------------
# Catalog


@dataclass(frozen=True)
class ModelFile:
    filename: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ModelEntry:
    name: str
    tasks: Tuple[str, ...]
    repo_id: str
    revision: str
    files: Tuple[ModelFile, ...]
    licence: str
    bundled: Optional[str] = None  # folder relative to the catalog's folder (Resources/)
    published: bool = False
    description: str = ""

    @property
    def sha256(self) -> str:
        """SHA-256 of the safetensors file: what provenance records."""
        return self.file(WEIGHTS_FILE).sha256

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, filename: str) -> ModelFile:
        for entry in self.files:
            if entry.filename == filename:
                return entry
        raise WeightsError(f"catalog entry {self.name!r} lists no {filename}; regenerate it with `catalog-entry`.")

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "tasks": list(self.tasks),
            "repo_id": self.repo_id,
            "revision": self.revision,
            "published": self.published,
            "licence": self.licence,
            "bundled": self.bundled,
            "files": [{"filename": f.filename, "sha256": f.sha256, "size": f.size} for f in self.files],
        }

    @classmethod
    def from_json(cls, data: dict) -> "ModelEntry":
        revision = str(data["revision"])
        if len(revision) != 40 or any(c not in "0123456789abcdef" for c in revision):
            raise WeightsError(f"catalog entry {data.get('name')!r}: revision must be a 40-hex commit, not {revision!r}.")
        return cls(
            name=data["name"],
            tasks=tuple(data["tasks"]),
            repo_id=data["repo_id"],
            revision=revision,
            files=tuple(ModelFile(f["filename"], f["sha256"].lower(), int(f["size"])) for f in data["files"]),
            licence=data.get("licence", ""),
            bundled=data.get("bundled"),
            published=bool(data.get("published", False)),
            description=data.get("description", ""),
        )


@dataclass
class Catalog:
    """The model catalog; bundled folders are relative to the catalog file's folder."""

    path: Path
    default: str
    models: Dict[str, ModelEntry] = field(default_factory=dict)
    notes: str = ""

    @classmethod
    def load(cls, path: Optional[PathLike] = None) -> "Catalog":
        """Load ``path``, else ``$DIFFCODE_CATALOG``, else the catalog shipped in ``Resources/``."""
        path = Path(path or os.environ.get(CATALOG_ENV) or DEFAULT_CATALOG)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise WeightsError(f"cannot read the model catalog {path}: {error}") from None
        models = {m["name"]: ModelEntry.from_json(m) for m in data["models"]}
        return cls(path=path, default=data["default"], models=models, notes=data.get("notes", ""))

    def get(self, name: Optional[str] = None) -> ModelEntry:
        name = name or self.default
        if name not in self.models:
            known = ", ".join(self.models) or "no models yet"
            raise WeightsError(f"unknown model {name!r} (the catalog {self.path} has {known}); "
                               "give a weights folder with --model FOLDER.")
        return self.models[name]

    def bundled_folder(self, entry: ModelEntry) -> Optional[Path]:
        return (self.path.parent / entry.bundled) if entry.bundled else None

    def save(self) -> None:
        data = {
            "notes": self.notes,
            "default": self.default,
            "models": [m.to_json() for m in self.models.values()],
        }
        _write_atomically(self.path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


# ----------------------------------------------------------------------------------------------------
# Checksums


def sha256_of(path: PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def check_files(folder: Path, entry: ModelEntry, required_only: bool = False) -> Dict[str, str]:
    """Per catalog file: "ok", "missing", or "size/sha256 mismatch" for the copy in ``folder``."""
    report = {}
    for spec in entry.files:
        if required_only and spec.filename not in REQUIRED_FILES:
            continue
        path = folder / spec.filename
        if not path.is_file():
            report[spec.filename] = "missing"
        elif path.stat().st_size != spec.size:
            report[spec.filename] = f"size mismatch ({path.stat().st_size} bytes, catalog {spec.size})"
        elif sha256_of(path) != spec.sha256:
            report[spec.filename] = "sha256 mismatch"
        else:
            report[spec.filename] = "ok"
    return report


def _is_usable(report: Dict[str, str]) -> bool:
    return all(report.get(name) == "ok" for name in REQUIRED_FILES)


# ----------------------------------------------------------------------------------------------------
# The Hub cache


def hub_cache_dir(cache_dir: Optional[PathLike] = None) -> Path:
    """The standard Hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``), or ``cache_dir``."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_cache_folder(entry: ModelEntry, cache_dir: Optional[PathLike] = None) -> Path:
    return hub_cache_dir(cache_dir) / ("models--" + entry.repo_id.replace("/", "--"))


def snapshot_folder(entry: ModelEntry, cache_dir: Optional[PathLike] = None) -> Path:
    """Where the pinned revision's files live in the cache (whether present or not)."""
    return repo_cache_folder(entry, cache_dir) / "snapshots" / entry.revision


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (the library reads it once at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.HF_HUB_OFFLINE or value.upper() in ("1", "ON", "YES", "TRUE")


def hub_endpoint(endpoint: Optional[str] = None) -> str:
    from huggingface_hub import constants

    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _forget_cached_file(snapshot_path: Path) -> None:
    """Delete a snapshot entry and the blob it points to (the Hub cache stores files as symlinks)."""
    if snapshot_path.is_symlink():
        blob = snapshot_path.resolve()
        snapshot_path.unlink()
        if blob.exists():
            blob.unlink()
    elif snapshot_path.exists():
        snapshot_path.unlink()


def clear_cache(entry: ModelEntry, cache_dir: Optional[PathLike] = None) -> bool:
    """Delete every cached revision of the model's Hub repository (never the bundled copy)."""
    folder = repo_cache_folder(entry, cache_dir)
    if not folder.exists():
        return False
    shutil.rmtree(folder)
    return True


# ----------------------------------------------------------------------------------------------------
# Resolving weights


@dataclass(frozen=True)
class ResolvedWeights:
    """A verified weights folder and what provenance should record about it."""

    name: str
    folder: Path
    source: str  # "cache" | "bundled" | "hub" | "folder"
    revision: Optional[str]
    sha256: str


@dataclass(frozen=True)
class ModelStatus:
    entry: ModelEntry
    cached: bool
    bundled: bool
    cache_folder: Path
    bundled_folder: Optional[Path]

    @property
    def state(self) -> str:
        return "cached" if self.cached else "bundled" if self.bundled else "to download"


def model_status(catalog: Catalog, cache_dir: Optional[PathLike] = None) -> List[ModelStatus]:
    """What the user has, per catalog model (cheap: looks for files, does not hash them)."""
    found = []
    for entry in catalog.models.values():
        snapshot = snapshot_folder(entry, cache_dir)
        bundled = catalog.bundled_folder(entry)
        found.append(
            ModelStatus(
                entry=entry,
                cached=all((snapshot / name).is_file() for name in REQUIRED_FILES),
                bundled=bundled is not None and all((bundled / name).is_file() for name in REQUIRED_FILES),
                cache_folder=snapshot,
                bundled_folder=bundled,
            )
        )
    return found


def resolve(
    model: Optional[PathLike] = None,
    catalog: Optional[Catalog] = None,
    cache_dir: Optional[PathLike] = None,
    endpoint: Optional[str] = None,
    allow_download: bool = True,
    progress: Optional[ByteProgress] = None,
    cancel=None,
    show_progress: bool = False,
) -> ResolvedWeights:
    """Verified weights for a catalog name (None: the default model) or a folder of one's own.

    A folder (config.json + model.safetensors) is used as given: the user chose it, and its
    SHA-256 goes into the provenance. A catalog name goes cache -> bundled -> Hub download.
    """
    if model is not None and Path(model).is_dir():
        folder = Path(model)
        missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
        if missing:
            raise WeightsError(f"{folder}: not a weights folder (missing {', '.join(missing)}).")
        return ResolvedWeights(folder.name, folder, "folder", None, sha256_of(folder / WEIGHTS_FILE))
    catalog = catalog or Catalog.load()
    entry = catalog.get(None if model is None else str(model))

    snapshot = snapshot_folder(entry, cache_dir)
    if snapshot.is_dir():
        report = check_files(snapshot, entry, required_only=True)
        if _is_usable(report):
            return ResolvedWeights(entry.name, snapshot, "cache", entry.revision, entry.sha256)
        for filename, state in report.items():  # a damaged cache entry must not be found again
            if state not in ("ok", "missing"):
                _forget_cached_file(snapshot / filename)

    bundled = catalog.bundled_folder(entry)
    bundled_report = check_files(bundled, entry, required_only=True) if bundled else {}
    if bundled and _is_usable(bundled_report):
        return ResolvedWeights(entry.name, bundled, "bundled", entry.revision, entry.sha256)

    if not allow_download:
        reason = "downloads are disabled here"
    elif hub_offline():
        reason = "HF_HUB_OFFLINE is set"
    else:
        try:
            folder = download(entry, cache_dir, endpoint, progress, cancel, show_progress)
            return ResolvedWeights(entry.name, folder, "hub", entry.revision, entry.sha256)
        except DownloadCancelled:
            raise
        except WeightsError as error:
            reason = str(error).rstrip(".")
    damaged = [f"{name} {state}" for name, state in bundled_report.items() if state not in ("ok", "missing")]
    bundled_note = f"; the bundled copy is damaged ({', '.join(damaged)})" if damaged else ""
    raise WeightsError(
        f"model {entry.name!r} is not available ({reason}{bundled_note}): {WHAT_TO_DO}."
    )


def _progress_bar_class(progress: Optional[ByteProgress], cancel, show: bool, done_before: int, total: int):
    """A tqdm class for ``hf_hub_download``: reports bytes of the whole model, stops on cancel.

    Raising inside ``update`` aborts the transfer; the client then deletes its temporary file.
    """
    from tqdm.auto import tqdm

    class ByteProgressBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["disable"] = not show
            self.received = 0
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if cancel is not None and getattr(cancel, "cancelled", False):
                raise DownloadCancelled("download cancelled; nothing was kept.")
            self.received += n or 0
            if progress is not None:
                progress(done_before + self.received, total)
            return super().update(n)

    return ByteProgressBar


def download(
    entry: ModelEntry,
    cache_dir: Optional[PathLike] = None,
    endpoint: Optional[str] = None,
    progress: Optional[ByteProgress] = None,
    cancel=None,
    show_progress: bool = False,
) -> Path:
    """Download every catalog file at the pinned revision into the Hub cache; verify each one.

    A file that fails the SHA-256 check is deleted and the download refused. A complete, verified
    copy already in the cache is returned without asking the Hub (so this works offline too).
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    snapshot = snapshot_folder(entry, cache_dir)
    if snapshot.is_dir() and all(state == "ok" for state in check_files(snapshot, entry).values()):
        if progress is not None:
            progress(entry.size, entry.size)
        return snapshot
    endpoint = hub_endpoint(endpoint)
    done, fetched = 0, []
    for index, spec in enumerate(entry.files):
        bar = _progress_bar_class(progress, cancel, show_progress, done, entry.size)
        try:
            if index == 0:  # one quick question first: the client would retry an unreachable Hub for ~20 s
                get_hf_file_metadata(hf_hub_url(entry.repo_id, spec.filename, revision=entry.revision,
                                                endpoint=endpoint), timeout=10)
            path = Path(
                hf_hub_download(
                    entry.repo_id,
                    spec.filename,
                    revision=entry.revision,
                    cache_dir=str(hub_cache_dir(cache_dir)),  # as resolved now, not at import
                    endpoint=endpoint,
                    tqdm_class=bar,
                )
            )
        except DownloadCancelled:
            for filename in fetched:  # files completed before Cancel go too: nothing half-done stays
                _forget_cached_file(snapshot / filename)
            raise
        except Exception as error:  # the client raises many types; each becomes one line
            raise WeightsError(explain_hub_error(error, entry, spec.filename, endpoint)) from None
        fetched.append(spec.filename)
        if path.stat().st_size != spec.size or sha256_of(path) != spec.sha256:
            _forget_cached_file(snapshot / spec.filename)
            raise WeightsError(
                f"{spec.filename} from {endpoint}/{entry.repo_id}@{entry.revision[:8]} does not match the catalog's "
                "SHA-256; it was deleted and not used (a proxy may alter downloads, or the catalog is outdated)."
            )
        done += spec.size
        if progress is not None:
            progress(done, entry.size)
    return snapshot


def explain_hub_error(error: BaseException, entry: ModelEntry, filename: str, endpoint: str) -> str:
    """One line for what went wrong talking to the Hub (works across huggingface_hub versions)."""
    chain = []
    current: Optional[BaseException] = error
    while current is not None and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    names = {cls.__name__ for exc in chain for cls in type(exc).__mro__}
    text = " ".join(str(exc) for exc in chain)
    where = f"{endpoint}/{entry.repo_id}"
    if "OfflineModeIsEnabled" in names:
        return "HF_HUB_OFFLINE is set, so the Hub was not asked"
    if "ProxyError" in names:
        return f"the proxy refused the connection to {endpoint}; check HTTPS_PROXY / HTTP_PROXY"
    if "SSLError" in names or "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text and "certificate" in text.lower():
        return (
            f"the SSL certificate of {endpoint} could not be verified (a company proxy may intercept HTTPS); "
            "point SSL_CERT_FILE / REQUESTS_CA_BUNDLE to its certificate"
        )
    if "GatedRepoError" in names:
        return f"{where} is gated; accept its terms on the Hub and log in (`hf auth login`)"
    if "RepositoryNotFoundError" in names:
        note = "" if entry.published else " (the catalog says it is not published yet)"
        return f"the Hub repository {where} was not found{note}"
    if "RevisionNotFoundError" in names:
        return f"revision {entry.revision[:8]} was not found in {where}; the catalog may be outdated"
    if "RemoteEntryNotFoundError" in names or ("EntryNotFoundError" in names and "LocalEntryNotFoundError" not in names):
        return f"{filename} was not found in {where} at revision {entry.revision[:8]} (HTTP 404)"
    if "FileMetadataError" in names:
        return f"{endpoint} did not answer like a Hugging Face Hub (a proxy or captive portal?); check HF_ENDPOINT"
    if names & {"ConnectError", "ConnectionError", "ConnectTimeout", "TimeoutException", "Timeout", "ReadTimeout"}:
        return f"cannot reach {endpoint} (no network, or it is blocked)"
    if names & {"RemoteProtocolError", "ReadError", "ChunkedEncodingError", "IncompleteRead"} or "Consistency check" in text:
        return f"the transfer of {filename} from {where} was interrupted; nothing partial was kept, try again"
    if "HfHubHTTPError" in names or "HTTPError" in names:
        status = getattr(getattr(error, "response", None), "status_code", None)
        return f"the Hub at {endpoint} answered HTTP {status} for {filename}"
    if "LocalEntryNotFoundError" in names:
        return f"cannot reach {endpoint} and {filename} is not in the cache"
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"downloading {filename} from {where} failed: {first}"


# ----------------------------------------------------------------------------------------------------
# Import by hand


def import_weights(
    source: PathLike, catalog: Optional[Catalog] = None, cache_dir: Optional[PathLike] = None
) -> Tuple[ModelEntry, List[str]]:
    """Copy catalog files (one file, or a folder of them) into the Hub cache after checking them.

    Each file is recognised by its SHA-256 among the catalog's files, so a file from anywhere
    (a USB stick, another computer's cache) becomes exactly what a download would have made.
    Returns the model and the names of the required files that are still missing.
    """
    catalog = catalog or Catalog.load()
    source = Path(source)
    if not source.exists():
        raise WeightsError(f"{source}: no such file or folder.")
    candidates = sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() else [source]
    known = {(spec.sha256, spec.filename): entry for entry in catalog.models.values() for spec in entry.files}
    by_hash = {sha: entry for (sha, _), entry in known.items()}
    placed: Dict[ModelEntry, List[str]] = {}
    for path in candidates:
        digest = sha256_of(path)
        entry = by_hash.get(digest)
        if entry is None:
            continue
        spec = next(s for s in entry.files if s.sha256 == digest)
        target = snapshot_folder(entry, cache_dir) / spec.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        _write_atomically(target, path.read_bytes())
        placed.setdefault(entry, []).append(spec.filename)
    if not placed:
        raise WeightsError(
            f"{source}: no file matches a SHA-256 in the model catalog; use your own weights folder with "
            "--model FOLDER instead."
        )
    entry = max(placed, key=lambda e: len(placed[e]))
    snapshot = snapshot_folder(entry, cache_dir)
    missing = [name for name in REQUIRED_FILES if not (snapshot / name).is_file()]
    return entry, missing


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


# ----------------------------------------------------------------------------------------------------
# Developer commands: catalog entry and publishing


def catalog_entry(
    folder: PathLike,
    name: str,
    repo_id: str,
    revision: Optional[str],
    tasks: Sequence[str],
    licence: str,
    bundled: Optional[str],
    description: str = "",
) -> ModelEntry:
    """The catalog entry of a weights folder: every file with its SHA-256 and size.

    With ``revision`` None (weights not yet on the Hub) the revision is a content-derived
    stand-in and the entry says ``published: false``.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    missing = [n for n in REQUIRED_FILES if not (folder / n).is_file()]
    if missing:
        raise WeightsError(f"{folder}: not a weights folder (missing {', '.join(missing)}).")
    specs = tuple(ModelFile(p.name, sha256_of(p), p.stat().st_size) for p in files)
    published = revision is not None
    revision = revision or content_revision(specs)
    return ModelEntry(name, tuple(tasks), repo_id, revision, specs, licence, bundled, published, description)


def content_revision(files: Sequence[ModelFile]) -> str:
    """A 40-hex stand-in revision derived from the files, for a catalog not yet published."""
    lines = "".join(f"{f.filename} {f.sha256}\n" for f in sorted(files, key=lambda f: f.filename))
    return hashlib.sha1(lines.encode("utf-8")).hexdigest()


def publish(folder: PathLike, repo_id: str, endpoint: Optional[str] = None, token: Optional[str] = None,
            private: bool = False) -> str:
    """Upload a weights folder (config, safetensors, model card) to a Hub repo; return the commit."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    missing = [n for n in REQUIRED_FILES + ("README.md",) if not (folder / n).is_file()]
    if missing:
        raise WeightsError(f"{folder}: cannot publish, missing {', '.join(missing)}.")
    api = HfApi(endpoint=hub_endpoint(endpoint), token=token)
    try:
        api.create_repo(repo_id, exist_ok=True, private=private)
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            allow_patterns=["config.json", "model.safetensors", "README.md"],
            commit_message=f"DiffCode Restore weights {folder.name}",
        )
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsError(f"publishing to {hub_endpoint(endpoint)}/{repo_id} failed: {first}") from None
    return info.oid


def _main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m DiffCodeRestoreLib.hub", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    entry_cmd = commands.add_parser("catalog-entry", help="print (or --update) the catalog entry of a weights folder")
    entry_cmd.add_argument("folder")
    entry_cmd.add_argument("--name", required=True)
    entry_cmd.add_argument("--repo-id", required=True)
    entry_cmd.add_argument("--revision", help="40-hex commit printed by `publish`; without it the entry gets a "
                           "content-derived stand-in and `published: false`")
    entry_cmd.add_argument("--tasks", nargs="+", default=["mri-sr", "ct-denoise", "pet-synthesis"])
    entry_cmd.add_argument("--licence", default="Apache-2.0")
    entry_cmd.add_argument("--description", default="")
    entry_cmd.add_argument("--catalog", help="catalog file to update (default: the shipped Models.json)")
    entry_cmd.add_argument("--update", action="store_true", help="write the entry into the catalog")
    entry_cmd.add_argument("--default", action="store_true", help="make this the default model")
    pub = commands.add_parser("publish", help="upload a weights folder to the Hub and print the commit to pin")
    pub.add_argument("folder")
    pub.add_argument("--repo-id", required=True)
    pub.add_argument("--endpoint")
    pub.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "publish":
            print(publish(args.folder, args.repo_id, args.endpoint, private=args.private))
            return 0
        catalog_path = Path(args.catalog or os.environ.get(CATALOG_ENV) or DEFAULT_CATALOG)
        folder = Path(args.folder).resolve()
        try:
            bundled = folder.relative_to(catalog_path.parent.resolve()).as_posix()
        except ValueError:
            bundled = None
        entry = catalog_entry(folder, args.name, args.repo_id, args.revision, args.tasks, args.licence, bundled,
                              args.description)
        if args.update:
            catalog = Catalog.load(catalog_path) if catalog_path.exists() else Catalog(catalog_path, entry.name)
            catalog.models[entry.name] = entry
            if args.default or not catalog.default:
                catalog.default = entry.name
            catalog.save()
        print(json.dumps(entry.to_json(), indent=2))
        return 0
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(_main())
