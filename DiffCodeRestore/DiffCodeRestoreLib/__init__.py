"""DiffCode Restore core: all-in-one MRI/CT/PET restoration, usable with or without 3D Slicer.

This package never imports Qt or the Slicer application. Heavy submodules (torch models, the
pipeline) are imported lazily so that ``import DiffCodeRestoreLib`` stays cheap.
"""

__version__ = "0.1.0"

from .tasks import TASKS, TaskSpec, get_task  # noqa: F401
