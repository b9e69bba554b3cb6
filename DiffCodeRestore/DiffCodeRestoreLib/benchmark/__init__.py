"""Benchmark (development): restoration methods and classical baselines on the public test split.

The Slicer extension ships this file, ``methods`` and ``baselines`` only: adapting to one's scans
(``adapt.best_filter``) scores the fast classical filters; nothing here imports BM3D or the data on import.

``python -m DiffCodeRestoreLib.benchmark --tasks all --methods baselines --out DIR`` scores every
method with the AMIR protocol (``DiffCodeRestoreLib.metrics``) and writes a Markdown table, a JSON
file with per-slice numbers and a PNG montage per task, plus ``results.md``.
"""

from .methods import DiffCodeMethod, Method  # noqa: F401
