"""The panel's state, saved with the scene: a ``parameterNodeWrapper`` over the module's parameter node.

Why a file of its own: the logic (``logic.py``) and the widget (the module file) both use it, and
the widget's test (Testing/test_slicer_ui.py) checks each field against the widget bound to it.
"""

import enum
from typing import Annotated

from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

from DiffCodeRestoreLib.tasks import get_task


class RestoreTask(enum.Enum):
    MRI_SR = "mri-sr"
    CT_DENOISE = "ct-denoise"
    PET_SYNTHESIS = "pet-synthesis"

    def label(self) -> str:
        return get_task(self.value).title


@parameterNodeWrapper
class DiffCodeRestoreParameterNode:
    """The panel's state, saved with the scene. ``model`` "" means the catalog's default model."""

    inputVolume: vtkMRMLScalarVolumeNode
    task: RestoreTask = RestoreTask.CT_DENOISE
    scale: Annotated[int, Choice([1, 2, 4])] = 1
    outputVolume: vtkMRMLScalarVolumeNode
    referenceVolume: vtkMRMLScalarVolumeNode
    model: str = ""
    device: Annotated[str, Choice(["auto", "cuda", "mps", "cpu"])] = "auto"
    useModelDefaults: bool = True
    steps: Annotated[int, WithinRange(1, 50)] = 1
    fidelity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    tileSize: Annotated[int, WithinRange(0, 4096)] = 0
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
    uncertaintyMap: bool = False
    samples: Annotated[int, WithinRange(2, 32)] = 4
    selfEnsemble: bool = False
