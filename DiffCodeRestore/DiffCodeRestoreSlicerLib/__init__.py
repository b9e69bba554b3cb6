"""The Slicer module's own code, beside the thin module file ``DiffCodeRestore.py``.

Why a package of its own: the decisions of the panel (what to install and when, the job's life,
what to do after a run) are kept Qt-free in small files (``install``, ``job``, ``cache``, ``panel``)
so the tests reach them without the Slicer application; only ``logic`` and ``parameters`` need
Slicer. The core restoration package ``DiffCodeRestoreLib`` stays free of all of it.
"""
