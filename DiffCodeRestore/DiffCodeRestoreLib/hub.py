"""Model weights: the catalog, the Hugging Face Hub download, checksums, cache, bundled copy, import.

Why this order of sources (``resolve``): weights are identified by the SHA-256 of every file in the
catalog (``Resources/Models.json``), not by where they come from. A verified copy in the Hub cache
is used first, then a verified bundled copy (the same bytes, no network needed), then a download
from the Hub at the pinned commit. Every file is checked before use; a cached file that fails the
check is removed from the cache (and the user told so), so nothing unverified stays usable. When
nothing works the error says, in one line, why and what to do (``diffcode-restore weights download``
or ``diffcode-restore weights import FILE_OR_FOLDER``).

A weights folder of one's own (``--model FOLDER``) has no catalog entry to check against, so the
folders this project writes (training's ``final`` folder, ``export``) carry ``checksums.sha256``
(``sha256sum`` format, so ``sha256sum -c checksums.sha256`` checks it too): loading verifies every
listed file, and a folder without one loads with an "unverified weights" warning.

The Hub cache is the standard one (``HF_HOME`` / ``HF_HUB_CACHE``; ``HF_ENDPOINT`` and
``HF_HUB_OFFLINE`` are honoured), so other tools see the same files. Files are removed from it only
through the library's cache API (``scan_cache_dir().delete_files/delete_revisions``): since
huggingface_hub 2.x a repository's ``blobs/<etag>`` may be a link into the cache-wide store
``<cache>/blobs/<xx>/<xet hash>`` that other repositories share, and only the library knows when a
store entry is no longer used.

Developer commands (not needed by users)::

    python -m DiffCodeRestoreLib.hub catalog-entry FOLDER --name NAME --repo-id ORG/NAME \
        [--revision SHA] [--tasks ...] [--update]     # print/update the catalog entry of FOLDER
    python -m DiffCodeRestoreLib.hub publish FOLDER --repo-id ORG/NAME [--endpoint URL]
                                                      # upload; prints the commit to pin
    python -m DiffCodeRestoreLib.hub manifest FOLDER  # write FOLDER/checksums.sha256
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from .errors import WeightsError
from .files import write_bytes_atomically

PathLike = Union[str, "os.PathLike[str]"]
RESOURCES = Path(__file__).resolve().parent.parent / "Resources"
DEFAULT_CATALOG = RESOURCES / "Models.json"
CATALOG_ENV = "DIFFCODE_CATALOG"
REQUIRED_FILES = ("config.json", "model.safetensors")
WEIGHTS_FILE = "model.safetensors"
MANIFEST_NAME = "checksums.sha256"
PROG = "diffcode-restore"
WHAT_TO_DO = (
    "connect to the internet and run `diffcode-restore weights download`, or copy the weights files from "
    "another computer and run `diffcode-restore weights import FILE_OR_FOLDER`"
)
ByteProgress = Callable[[int, int], None]
Message = Callable[[str], None]


class DownloadCancelled(WeightsError):
    """The user cancelled a download; nothing partial was kept."""


class WeightsWarning(UserWarning):
    """Something about the weights the user should know (unverified folder, damaged cache copy removed).

    Issued with ``warnings.warn`` only when the caller gave no ``message`` callback, so it is never silent.
    """


def _say(message: Optional[Message], text: str) -> None:
    if message is not None:
        message(text)
    else:
        warnings.warn(text, WeightsWarning, stacklevel=3)


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
        write_bytes_atomically(self.path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


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


def _damage(report: Dict[str, str]) -> List[str]:
    """``["model.safetensors: sha256 mismatch", ...]``: the files present but not matching."""
    return [f"{name}: {state}" for name, state in report.items() if state not in ("ok", "missing")]


_MANIFEST_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


def _rewrite_advice(folder: PathLike) -> str:
    return f"if you trust the files, write it again with `python -m DiffCodeRestoreLib.hub manifest {folder}`"


def write_manifest(folder: PathLike) -> Path:
    """Write ``FOLDER/checksums.sha256``: the SHA-256 of every file in the folder, ``sha256sum`` format.

    Why: a weights folder of one's own has no catalog entry, so without this a flipped bit would go
    unnoticed and change every restored image. ``sha256sum -c checksums.sha256`` checks it too.
    Hidden files and sub-folders are not listed. Returns the manifest's path.
    """
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST_NAME)
    odd = [name for name in names if "\n" in name or "\\" in name]
    if odd:
        raise WeightsError(f"{folder}: cannot list {odd[0]!r} in {MANIFEST_NAME}; rename it or move it out of the folder.")
    text = "".join(f"{sha256_of(folder / name)}  {name}\n" for name in names)
    path = folder / MANIFEST_NAME
    write_bytes_atomically(path, text.encode("utf-8"))
    return path


def read_manifest(folder: PathLike) -> Optional[Dict[str, str]]:
    """``{filename: sha256}`` from ``FOLDER/checksums.sha256``; None when the folder has none.

    Only plain file names of the folder itself are accepted, so a manifest cannot make us read
    files elsewhere.
    """
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeError) as error:
        raise WeightsError(f"cannot read {path} ({error}); {_rewrite_advice(folder)}.") from None
    listed: Dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        match = _MANIFEST_LINE.match(line)
        name = match.group(2) if match else ""
        if not match or name in (".", "..") or "/" in name or "\\" in name:
            raise WeightsError(f"{path}: line {number} is not `<sha256>  <file name>`; "
                               f"{_rewrite_advice(folder)}.")
        listed[name] = match.group(1).lower()
    return listed


def verify_folder(folder: PathLike) -> Optional[Dict[str, str]]:
    """Check a weights folder against its ``checksums.sha256``.

    Returns ``{filename: sha256}`` of the listed files, all verified; None when the folder has no
    manifest (its files cannot be checked: the caller warns). Raises WeightsError, one line saying
    which file and what to do, when a listed file is missing or damaged, or when the manifest does
    not list config.json and model.safetensors (a partial manifest would check nothing that matters).
    """
    folder = Path(folder)
    listed = read_manifest(folder)
    if listed is None:
        return None
    unlisted = [name for name in REQUIRED_FILES if name not in listed]
    if unlisted:
        raise WeightsError(f"{folder / MANIFEST_NAME} does not list {', '.join(unlisted)}; "
                           f"{_rewrite_advice(folder)}.")
    for name, digest in listed.items():
        path = folder / name
        if not path.is_file():
            raise WeightsError(f"{path} is missing but listed in {MANIFEST_NAME}: copy the whole weights folder "
                               "again from where it came from (or export it again).")
        if sha256_of(path) != digest:
            raise WeightsError(f"{path} is damaged (its SHA-256 does not match {MANIFEST_NAME}): copy the weights "
                               "folder again from where it came from (or export it again); it was not used.")
    return listed


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


def _scanned_repo(entry: ModelEntry, cache_dir: Optional[PathLike] = None):
    """(cache info, repo info) of the model's repository as ``scan_cache_dir`` sees it.

    (None, None) when the cache or the repository folder does not exist; (info, None) when the
    library cannot read the repository (it lists it under ``warnings``, e.g. a broken link).
    """
    from huggingface_hub import scan_cache_dir

    folder = repo_cache_folder(entry, cache_dir)
    if not folder.is_dir():
        return None, None
    try:
        info = scan_cache_dir(hub_cache_dir(cache_dir))
    except Exception:  # CacheNotFound, or the cache path is a file
        return None, None
    target = folder.resolve()
    for repo in info.repos:
        if Path(repo.repo_path).resolve() == target:
            return info, repo
    return info, None


def _first_hop(pointer: Path) -> Optional[Path]:
    """Where a snapshot link points, without following any further link (the blob entry itself)."""
    if not pointer.is_symlink():
        return None
    return Path(os.path.abspath(pointer.parent / os.readlink(pointer)))


def _unlink_inside_repo(entry: ModelEntry, filenames: Sequence[str], cache_dir: Optional[PathLike]) -> None:
    """Fallback when the library cannot scan the repository: unlink the snapshot entries and their
    repo-local blob entries only. Nothing outside ``models--ORG--NAME/`` is touched and no link is
    followed (a blob entry that links into the shared store is removed as a link; ``hf cache prune``
    later collects a store entry that nothing uses any more)."""
    repo = repo_cache_folder(entry, cache_dir)
    blobs = Path(os.path.abspath(repo / "blobs"))
    snapshot = snapshot_folder(entry, cache_dir)
    for name in filenames:
        pointer = snapshot / name
        if not os.path.lexists(pointer):
            continue
        blob = _first_hop(pointer)
        pointer.unlink()
        if blob is None or blob.parent != blobs or not os.path.lexists(blob):
            continue
        still_used = any(_first_hop(other) == blob for other in (repo / "snapshots").glob("*/**/*")
                         if other.is_symlink())
        if not still_used:
            os.unlink(blob)  # the entry itself: a link is removed, never its target


def forget_cached_files(entry: ModelEntry, filenames: Sequence[str], cache_dir: Optional[PathLike] = None) -> None:
    """Remove these files of the pinned revision from the Hub cache, so a damaged copy is not found again.

    Why through ``scan_cache_dir().delete_files(...)``: a blob may be a link into huggingface_hub's
    shared store that other repositories use; the library removes this repository's references and
    deletes a store entry only once nothing refers to it. (huggingface_hub without ``delete_files``:
    the whole revision is deleted with ``delete_revisions``; what was good is fetched again.)
    """
    names = set(filenames)
    info, repo = _scanned_repo(entry, cache_dir)
    if repo is not None:
        files = [
            item for revision in repo.revisions if revision.commit_hash == entry.revision
            for item in revision.files
            if Path(item.file_path).relative_to(revision.snapshot_path).as_posix() in names
        ]
        if files and hasattr(info, "delete_files"):
            info.delete_files(*files).execute()
        elif files:
            info.delete_revisions(entry.revision).execute()
    _unlink_inside_repo(entry, sorted(names), cache_dir)  # whatever the library could not see


def clear_cache(entry: ModelEntry, cache_dir: Optional[PathLike] = None) -> bool:
    """Delete every cached revision of the model's Hub repository (never the bundled copy).

    Through ``scan_cache_dir().delete_revisions(...)``, so entries of the shared store that only this
    repository used are deleted too, and those other repositories use are kept. A repository the
    library cannot read is removed as a folder (links inside are removed, not followed).
    """
    folder = repo_cache_folder(entry, cache_dir)
    if not os.path.lexists(folder):
        return False
    info, repo = _scanned_repo(entry, cache_dir)
    if repo is not None and repo.revisions:
        info.delete_revisions(*(revision.commit_hash for revision in repo.revisions)).execute()
    if folder.is_symlink():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)
    return True


# ----------------------------------------------------------------------------------------------------
# Resolving weights


@dataclass(frozen=True)
class ResolvedWeights:
    """A verified weights folder and what provenance should record about it.

    ``verified`` is False only for a folder of one's own without ``checksums.sha256``: it was used,
    but nothing could tell whether its files are damaged (the caller was warned).
    """

    name: str
    folder: Path
    source: str  # "cache" | "bundled" | "hub" | "folder"
    revision: Optional[str]
    sha256: str
    verified: bool = True


def damage_advice(catalog: Catalog, entry: ModelEntry, copy: str) -> str:
    """What to do, in one clause, about a damaged ``copy`` ("cache" or "bundled") of ``entry``.

    Why it depends: "download again" only works for a model published on the Hub; a cleared cache
    falls back to the bundled copy only if that one is good; a bundled copy is restored only by
    reinstalling what shipped it, or bypassed by importing a good copy into the cache (used first).
    """
    name = entry.name
    importing = f"`{PROG} weights import FILE_OR_FOLDER` with a good copy of the files"
    if copy == "cache":
        if entry.published:
            return f"run `{PROG} weights clear {name}`, then `{PROG} weights download {name}`"
        bundled = catalog.bundled_folder(entry)
        if bundled is not None and _is_usable(check_files(bundled, entry, required_only=True)):
            return f"run `{PROG} weights clear {name}`; the bundled copy is then used"
        return (f"run `{PROG} weights clear {name}`, then {importing} ({name} is not published on the Hub, "
                "so it cannot be downloaded)")
    download_too = f", or run `{PROG} weights download {name}`" if entry.published else ""
    return (f"reinstall the DiffCode Restore extension (or the diffcode-restore package) to restore the bundled "
            f"copy, or run {importing}{download_too}")


@dataclass(frozen=True)
class ModelStatus:
    """What the user has of one catalog model; both copies are hashed, so ``state`` is true.

    ``cache_damage`` / ``bundled_damage``: ``"FILE: what is wrong"`` for each required file present
    but not matching the catalog.
    """

    entry: ModelEntry
    cached: bool
    bundled: bool
    cache_folder: Path
    bundled_folder: Optional[Path]
    cache_damage: Tuple[str, ...] = ()
    bundled_damage: Tuple[str, ...] = ()

    @property
    def state(self) -> str:
        """What a restore would use: "cached", "bundled" or "to download" (a damaged copy is never used)."""
        return "cached" if self.cached else "bundled" if self.bundled else "to download"

    @property
    def damaged(self) -> bool:
        """A copy is damaged: ``damage_advice`` says what to do (a restore would remove a damaged cached copy)."""
        return bool(self.cache_damage or self.bundled_damage)


def model_status(catalog: Catalog, cache_dir: Optional[PathLike] = None) -> List[ModelStatus]:
    """What the user has, per catalog model: the required files of each copy are hashed.

    Why hash: a "cached" that is damaged would be removed at the next restore; the list must say so
    before. The files are small (a few MB), so this is quick.
    """
    found = []
    for entry in catalog.models.values():
        snapshot = snapshot_folder(entry, cache_dir)
        bundled = catalog.bundled_folder(entry)
        cache_report = check_files(snapshot, entry, required_only=True) if snapshot.is_dir() else {}
        bundled_report = check_files(bundled, entry, required_only=True) if bundled and bundled.is_dir() else {}
        found.append(
            ModelStatus(
                entry=entry,
                cached=bool(cache_report) and _is_usable(cache_report),
                bundled=bool(bundled_report) and _is_usable(bundled_report),
                cache_folder=snapshot,
                bundled_folder=bundled,
                cache_damage=tuple(_damage(cache_report)),
                bundled_damage=tuple(_damage(bundled_report)),
            )
        )
    return found


def _resolve_folder(folder: Path, message: Optional[Message]) -> ResolvedWeights:
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise WeightsError(f"{folder}: not a weights folder (missing {', '.join(missing)}).")
    listed = verify_folder(folder)
    if listed is not None:
        return ResolvedWeights(folder.name, folder, "folder", None, listed[WEIGHTS_FILE])
    _say(message, f"unverified weights: {folder} has no {MANIFEST_NAME}, so damage to its files cannot be "
                  f"detected; if you trust them, write one with `python -m DiffCodeRestoreLib.hub manifest {folder}`.")
    return ResolvedWeights(folder.name, folder, "folder", None, sha256_of(folder / WEIGHTS_FILE), verified=False)


def resolve(
    model: Optional[PathLike] = None,
    catalog: Optional[Catalog] = None,
    cache_dir: Optional[PathLike] = None,
    endpoint: Optional[str] = None,
    allow_download: bool = True,
    progress: Optional[ByteProgress] = None,
    cancel=None,
    show_progress: bool = False,
    message: Optional[Message] = None,
) -> ResolvedWeights:
    """Verified weights for a catalog name (None: the default model) or a folder of one's own.

    A folder (config.json + model.safetensors) is checked against its ``checksums.sha256``; a
    damaged file raises WeightsError, and a folder without a manifest is used with an "unverified
    weights" warning. A catalog name goes cache -> bundled -> Hub download; a damaged cached copy is
    removed. ``message(text)`` receives such warnings (None: ``warnings.warn``, never silent).
    """
    if model is not None and Path(model).is_dir():
        return _resolve_folder(Path(model), message)
    catalog = catalog or Catalog.load()
    if model is not None and str(model) not in catalog.models and (local_models_dir() / str(model)).is_dir():
        return _resolve_folder(local_models_dir() / str(model), message)  # an adapted or imported model
    entry = catalog.get(None if model is None else str(model))

    snapshot = snapshot_folder(entry, cache_dir)
    cache_note = ""
    if snapshot.is_dir():
        report = check_files(snapshot, entry, required_only=True)
        if _is_usable(report):
            return ResolvedWeights(entry.name, snapshot, "cache", entry.revision, entry.sha256)
        damaged = _damage(report)
        if damaged:  # a damaged cache entry must not be found again
            forget_cached_files(entry, [item.split(":")[0] for item in damaged], cache_dir)
            cache_note = f"the cached copy of {entry.name} was damaged ({', '.join(damaged)}) and was removed"

    bundled = catalog.bundled_folder(entry)
    bundled_report = check_files(bundled, entry, required_only=True) if bundled else {}
    if bundled and _is_usable(bundled_report):
        if cache_note:
            _say(message, f"{cache_note}; using the bundled copy.")
        return ResolvedWeights(entry.name, bundled, "bundled", entry.revision, entry.sha256)

    if not allow_download:
        reason = "downloads are disabled here"
    elif hub_offline():
        reason = "HF_HUB_OFFLINE is set"
    else:
        if cache_note:
            _say(message, f"{cache_note}; downloading it again.")
        try:
            folder = download(entry, cache_dir, endpoint, progress, cancel, show_progress, message)
            return ResolvedWeights(entry.name, folder, "hub", entry.revision, entry.sha256)
        except DownloadCancelled:
            raise
        except WeightsError as error:
            reason = str(error).rstrip(".")
    damaged = _damage(bundled_report)
    notes = "".join(f"; {note}" for note in (
        cache_note,
        f"the bundled copy is damaged ({', '.join(damaged)})" if damaged else "",
    ) if note)
    remedy = WHAT_TO_DO if entry.published else (
        f"{entry.name} is not published on the Hub yet: copy its weights files from another computer and run "
        f"`{PROG} weights import FILE_OR_FOLDER`, or reinstall the extension to restore the bundled copy")
    raise WeightsError(f"model {entry.name!r} is not available ({reason}{notes}): {remedy}.")


def _progress_bar_class(progress: Optional[ByteProgress], cancel, show: bool, done_before: int, total: int,
                        size: Optional[int] = None):
    """A tqdm class for ``hf_hub_download`` of one file: reports bytes of the whole model, stops on cancel.

    Raising inside ``update`` aborts an HTTP transfer; the client then deletes its temporary file.
    The client may make several bars for one file (an Xet download makes one for bytes written and
    one for bytes received, a retry may reuse or replace a bar), so what is reported is
    ``done_before`` + the most bytes any of them has counted, capped at ``size``: it never jumps
    back or counts twice. ``update_transfer`` makes huggingface_hub's Xet reporter route received
    bytes into the one bar instead of creating a second (they are not file bytes and are not counted).
    """
    from tqdm.auto import tqdm

    shared = {"most": 0}
    limit = size if size is not None else total - done_before

    def check_cancel() -> None:
        if cancel is not None and getattr(cancel, "cancelled", False):
            raise DownloadCancelled("download cancelled; nothing was kept.")

    class ByteProgressBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["disable"] = not show
            self.received = int(kwargs.get("initial") or 0)
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            check_cancel()
            self.received += int(n or 0)
            if self.received > shared["most"]:
                shared["most"] = self.received
                if progress is not None:
                    progress(done_before + min(shared["most"], limit), total)
            return super().update(n)

        def update_transfer(self, n=1):
            check_cancel()

        def set_transfer_postfix_str(self, postfix: str, refresh: bool = False) -> None:
            pass

    return ByteProgressBar


def _partial_files(entry: ModelEntry, cache_dir: Optional[PathLike]) -> set:
    """The unfinished transfers (``*.incomplete`` regular files) in the model's ``blobs`` folder."""
    blobs = repo_cache_folder(entry, cache_dir) / "blobs"
    return {p for p in blobs.glob("*.incomplete") if p.is_file() and not p.is_symlink()} if blobs.is_dir() else set()


def download(
    entry: ModelEntry,
    cache_dir: Optional[PathLike] = None,
    endpoint: Optional[str] = None,
    progress: Optional[ByteProgress] = None,
    cancel=None,
    show_progress: bool = False,
    message: Optional[Message] = None,
) -> Path:
    """Download every catalog file at the pinned revision into the Hub cache; verify each one.

    Files already cached and verified are kept without asking the Hub (so a complete copy works
    offline too). A damaged cached file is removed and fetched again with ``force_download`` (it may
    come from huggingface_hub's shared store, which a plain download would link again). A file that
    still fails the SHA-256 check is removed and the download refused. Cancel, even one seen only
    once a file had arrived (hf_xet reports progress from its own thread and may not stop), ends
    in DownloadCancelled with the files this call fetched removed.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    snapshot = snapshot_folder(entry, cache_dir)
    report = check_files(snapshot, entry) if snapshot.is_dir() else {}
    if report and all(state == "ok" for state in report.values()):
        if progress is not None:
            progress(entry.size, entry.size)
        return snapshot
    endpoint = hub_endpoint(endpoint)
    done, fetched, asked = 0, [], False
    partial_before = _partial_files(entry, cache_dir)

    def drop_partial() -> None:
        """huggingface_hub 1.x keeps ``blobs/<etag>.incomplete`` to resume; 2.x deletes its own. What
        this call left goes, so "nothing partial was kept" holds with either."""
        for path in _partial_files(entry, cache_dir) - partial_before:
            path.unlink()

    def cancelled() -> DownloadCancelled:
        drop_partial()
        forget_cached_files(entry, fetched, cache_dir)  # nothing half-done stays
        return DownloadCancelled("download cancelled; nothing was kept.")

    for spec in entry.files:
        state = report.get(spec.filename, "missing")
        if state == "ok":
            done += spec.size
            continue
        force = state != "missing"
        if force:
            forget_cached_files(entry, [spec.filename], cache_dir)
            _say(message, f"the cached {spec.filename} of {entry.name} was damaged ({state}) and was removed; "
                          "downloading it again.")
        bar = _progress_bar_class(progress, cancel, show_progress, done, entry.size, spec.size)
        while True:
            try:
                if not asked:  # one quick question first: the client would retry an unreachable Hub for ~20 s
                    get_hf_file_metadata(hf_hub_url(entry.repo_id, spec.filename, revision=entry.revision,
                                                    endpoint=endpoint), timeout=10)
                    asked = True
                path = Path(
                    hf_hub_download(
                        entry.repo_id,
                        spec.filename,
                        revision=entry.revision,
                        cache_dir=str(hub_cache_dir(cache_dir)),  # as resolved now, not at import
                        endpoint=endpoint,
                        tqdm_class=bar,
                        force_download=force,
                    )
                )
            except DownloadCancelled:
                raise cancelled() from None
            except Exception as error:  # the client raises many types; each becomes one line
                drop_partial()
                raise WeightsError(explain_hub_error(error, entry, spec.filename, endpoint)) from None
            fetched.append(spec.filename)
            if cancel is not None and getattr(cancel, "cancelled", False):
                raise cancelled()
            if path.stat().st_size == spec.size and sha256_of(path) == spec.sha256:
                break
            forget_cached_files(entry, [spec.filename], cache_dir)
            if force:
                raise WeightsError(
                    f"{spec.filename} from {endpoint}/{entry.repo_id}@{entry.revision[:8]} does not match the "
                    "catalog's SHA-256; it was deleted and not used (a proxy may alter downloads, or the catalog "
                    "is outdated)."
                )
            force = True  # the client may have linked a damaged copy from its shared store: fetch fresh bytes
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
# Models of one's own (adapted to a scanner, or imported): one folder each, found by name


LOCAL_MODELS_ENV = "DIFFCODE_MODELS_DIR"
ADAPTATION_FILE = "adaptation.json"  # written by adapt: the task, the base model and the held-out scores


@dataclass(frozen=True)
class LocalModel:
    name: str
    folder: Path
    task: Optional[str]  # the task it was adapted for (None: not an adapted model)
    summary: str  # one line for lists and the Slicer model selector: task, base, held-out figures


def local_models_dir() -> Path:
    """Where models of one's own live (``$DIFFCODE_MODELS_DIR``, else ``~/.cache/diffcode-restore/models``):
    ``restore --model NAME``, ``weights list`` and the Slicer model selector find them there."""
    if os.environ.get(LOCAL_MODELS_ENV):
        return Path(os.environ[LOCAL_MODELS_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "diffcode-restore" / "models"


def describe_local_model(folder: Path) -> LocalModel:
    """Name, task and a one-line summary of a weights folder of one's own (from its adaptation.json)."""
    try:
        facts = json.loads((folder / ADAPTATION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return LocalModel(folder.name, folder, None, "weights of one's own")
    scores = facts.get("scores", {})
    adapted, base = scores.get("adapted model", {}), scores.get("base model", {})
    figures = ""
    if "psnr" in adapted and "psnr" in base:
        figures = (f"; held-out PSNR {adapted['psnr']:.2f} dB, {adapted['psnr'] - base['psnr']:+.2f} dB over "
                   f"{facts.get('base', {}).get('name', 'its base')}")
    return LocalModel(folder.name, folder, facts.get("task"), f"adapted for {facts.get('task')}{figures}")


def local_models(folder: Optional[PathLike] = None) -> List[LocalModel]:
    """The weights folders in ``local_models_dir()`` (sorted by name); partial folders are skipped."""
    root = Path(folder) if folder is not None else local_models_dir()
    found = []
    for item in sorted(root.iterdir()) if root.is_dir() else []:
        if item.is_dir() and not item.name.startswith(".") and all((item / n).is_file() for n in REQUIRED_FILES):
            found.append(describe_local_model(item))
    return found


def new_local_model_folder(name: str) -> Path:
    """Where a new model of one's own named ``name`` goes; a one-line error for a bad or taken name."""
    name = (name or "").strip()
    if not name or name.startswith(".") or any(not (c.isalnum() or c in "._-") for c in name):
        raise WeightsError(f"{name!r} cannot name a model: use letters, digits, '.', '_' and '-' (e.g. my-scanner-ct).")
    folder = local_models_dir() / name
    if folder.exists():
        raise WeightsError(f"a model named {name!r} exists already ({folder}); choose another name or delete it.")
    return folder


def import_local_model(source: PathLike, name: Optional[str] = None) -> Path:
    """Copy a weights folder the project wrote (adapt, export: it has ``checksums.sha256``) into
    ``local_models_dir()`` after verifying every file; it is then found by name. Returns the new folder."""
    source = Path(source)
    if verify_folder(source) is None:
        raise WeightsError(f"{source}: no {MANIFEST_NAME} to verify the files against; only weights folders written "
                           f"by DiffCode Restore (adapt, export) can be imported, use --model FOLDER for others.")
    target = new_local_model_folder(name or source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    from .files import atomic_path

    with atomic_path(target, keep_suffix=False) as staging:
        shutil.copytree(str(source), str(staging))
        verify_folder(staging)  # the copy, too
    return target


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
        write_bytes_atomically(target, path.read_bytes())
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
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST_NAME)
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
    manifest = commands.add_parser("manifest", help=f"write FOLDER/{MANIFEST_NAME} (SHA-256 of every file) so that "
                                   "loading the folder checks it")
    manifest.add_argument("folder")
    args = parser.parse_args(argv)
    try:
        if args.command == "publish":
            print(publish(args.folder, args.repo_id, args.endpoint, private=args.private))
            return 0
        if args.command == "manifest":
            if not Path(args.folder).is_dir():
                raise WeightsError(f"{args.folder}: no such folder.")
            print(write_manifest(args.folder))
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
