"""Settings for the processes DiffCode Restore owns (the command line, the Slicer worker, benchmarks).

Why apart: they change process-wide state, which a library must never do to its host (Slicer, a
notebook). Only the entry points of our own processes call ``configure_own_process``, before torch
is imported.
"""

import os


def configure_own_process() -> None:
    """OpenMP threads that wait by spinning steal the cores they wait for when other programs share
    the machine (measured: 2.3x slower on a busy 2-core CPU). OpenMP reads the policy once, when torch
    loads it; a user's own setting wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
