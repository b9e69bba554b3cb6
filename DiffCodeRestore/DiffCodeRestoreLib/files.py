"""Files and folders that appear complete or not at all, and the unfinished ones we leave behind.

Why one module: results, DICOM series, weights, catalogs and checkpoints are all written the same way,
under a partial name beside the target (``.<name>.<host>.<pid>.<id>.diffcode-partial<suffix>``), then
renamed into place. The name says whose it is, so a batch never reads one as an input, and one whose
process is gone (killed with SIGKILL, power loss) is stale and removed before its folder is written
again; another computer's (a shared cohort folder) only after a day.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator, List, Union

PathLike = Union[str, "os.PathLike[str]"]
PARTIAL_MARK = ".diffcode-partial"
STALE_PARTIAL_SECONDS = 24 * 3600
_PARTIAL_NAME = re.compile(r"\.(?P<host>[^.]+)\.(?P<pid>\d+)\.[0-9a-f]{8}" + re.escape(PARTIAL_MARK))


def ordinary_permissions(path: Path) -> Path:
    """Give ``path`` the mode an ordinary ``open()`` or ``mkdir()`` would (0o666 / 0o777 less the umask): mkdtemp and
    safetensors create owner-only ones, and weights, caches and results must be readable by the other users."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
    return path


def staging_dir(parent: Path, prefix: str) -> Path:
    """A fresh hidden folder beside its final place (same file system: a rename publishes it),
    with the permissions of an ordinary folder rather than mkdtemp's private ones."""
    return ordinary_permissions(Path(tempfile.mkdtemp(prefix=prefix, dir=parent)))


def suffix_of(path: PathLike) -> str:
    """The format suffix, with ``.nii.gz`` as one suffix."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def stem_of(path: PathLike) -> str:
    name = Path(path).name
    return name[: len(name) - len(suffix_of(path))]


def _host() -> str:
    return socket.gethostname().replace(".", "-") or "host"


def partial_path(path: PathLike, keep_suffix: bool = True) -> Path:
    """The name ``path`` has while it is being written; the format suffix is kept (writers choose the
    format by it) unless ``keep_suffix`` is False (folders)."""
    path = Path(path)
    stem, suffix = (stem_of(path), suffix_of(path)) if keep_suffix else (path.name, "")
    return path.with_name(f".{stem}.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}{PARTIAL_MARK}{suffix}")


def is_partial_file(path: PathLike) -> bool:
    """True for our own unfinished files and folders (never an input)."""
    name = Path(path).name
    return name.startswith(".") and PARTIAL_MARK in name


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but another user's
        return True
    return True


def remove(path: Path) -> None:
    """Delete a file or folder, quietly (clean-up must not hide the error that caused it)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(str(path), ignore_errors=True)
        return
    try:
        path.unlink()
    except OSError:
        pass


def remove_stale_partials(folder: PathLike) -> List[Path]:
    """Delete partial files and folders of killed runs: this host's whose process is gone, others' after a day."""
    removed = []
    this_host = _host()
    for item in Path(folder).iterdir() if Path(folder).is_dir() else []:
        found = _PARTIAL_NAME.search(item.name) if is_partial_file(item) and not item.is_symlink() else None
        if found is None:
            continue
        if found["host"] == this_host:
            stale = not _process_alive(int(found["pid"]))
        else:
            stale = time.time() - item.stat().st_mtime > STALE_PARTIAL_SECONDS
        if stale:
            remove(item)
            removed.append(item)
    return removed


@contextlib.contextmanager
def atomic_path(path: PathLike, keep_suffix: bool = True) -> Iterator[Path]:
    """A partial name to write ``path`` under: renamed onto ``path`` when the block ends, removed if it fails."""
    path = Path(path)
    temporary = partial_path(path, keep_suffix)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            remove(temporary)


def write_bytes_atomically(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
