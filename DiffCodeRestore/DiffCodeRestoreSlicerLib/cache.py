"""Where downloaded weights are kept, known without huggingface_hub. Qt-free.

Why: "Open cache folder" must work before the first install, when huggingface_hub is not in
Slicer's Python yet, and the panel's model list must not import it into Slicer's process (an old
copy imported there would stay loaded after the install upgrades it). The rules are those of
``huggingface_hub.constants`` (HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME, XDG_CACHE_HOME, with
``~`` and ``$VARS`` expanded), read from the environment at each call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def default_hub_cache_dir() -> Path:
    """The Hugging Face Hub cache folder the worker's downloads go to."""
    home = os.path.expandvars(os.path.expanduser(os.environ.get(
        "HF_HOME", os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")),
                                "huggingface"))))
    legacy = os.environ.get("HUGGINGFACE_HUB_CACHE", os.path.join(home, "hub"))
    return Path(os.path.expandvars(os.path.expanduser(os.environ.get("HF_HUB_CACHE", legacy))))


def model_cache_folder(name: Optional[str] = None, catalog=None) -> Path:
    """The cache folder of a catalog model if it has been downloaded, else the Hub cache itself."""
    from DiffCodeRestoreLib import hub

    catalog = catalog or hub.Catalog.load()
    cache = default_hub_cache_dir()
    folder = hub.repo_cache_folder(catalog.get(name or None), cache_dir=cache)
    return folder if folder.exists() else cache
