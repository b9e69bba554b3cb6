"""Volume nodes in, restored volume nodes out: the MRML side of DiffCode Restore, without Qt.

Why a module of its own: everything the Slicer panel does to the scene (check the input node,
convert it to an image with its exact geometry, put the result into a new node beside the input)
lives here, free of Qt and of the Slicer application, so it runs inside Slicer and on the MRML
classes of the ``slicer-core`` wheel alike, and the tests exercise the code users run. The scene
is always taken from the input node.

Conventions kept here:
- the input node is never modified; the result goes into a new node named
  ``<input> (DiffCode <task>)`` (or a node the caller passes, never the input itself);
- the output node is created or filled only once the result is complete, so a cancelled or
  failed restoration leaves no half-filled node behind;
- geometry comes from the pipeline (same grid, or the exact finer grid of MRI super-resolution);
  window/level, colour table, voxel quantity/units, parent transform and subject-hierarchy place
  (the input's study or folder) come from the input; provenance goes into ``DiffCode.*`` attributes.

Batch use from Slicer's Python console (in Slicer's process; the panel uses a worker process)::

    from DiffCodeRestoreLib import mrml
    outputs = mrml.restore_volume_nodes(mrml.restorable_volume_nodes(slicer.mrmlScene))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from . import input_rules
from .input_rules import TaskSuggestion, check_not_label_map
from .tasks import get_task
from .volume_io import VolumeError

ATTRIBUTE_PREFIX = "DiffCode."
INPUT_REFERENCE_ROLE = "DiffCodeInput"
UNCERTAINTY_REFERENCE_ROLE = "DiffCodeUncertainty"
MODALITY_ATTRIBUTE = "DICOM.Modality"
# RAS (Slicer) <-> LPS (ITK, DICOM): flip the first two axes.
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
# Voxels sampled to suggest a task from intensities (a strided subset; enough for percentiles).
_SAMPLE_VOXELS = 1_000_000


class VolumeNodeError(ValueError):
    """A node that cannot be restored (or used as output/reference); the message names it."""


# ----------------------------------------------------------------------------------------------------
# Checking nodes


def node_label(node) -> str:
    return repr(node.GetName()) if node is not None and node.GetName() else "(unnamed)"


def check_input_node(node) -> None:
    """Raise ``VolumeNodeError`` naming ``node`` unless it is a non-empty scalar image volume (and not a
    label map loaded as one: the command line's rule, which reads the voxels)."""
    check_node_structure(node)
    try:  # a label map loaded as a scalar volume: the same rule as the command line's
        check_not_label_map(_voxels(node), f"Volume {node_label(node)}")
    except VolumeError as error:
        raise VolumeNodeError(str(error)) from None


def check_node_structure(node) -> None:
    """The node checks that need no voxels: a scalar, non-empty image volume with image data."""
    if node is None:
        raise VolumeNodeError("No input volume: select a scalar image volume to restore.")
    label = node_label(node)
    if not node.IsA("vtkMRMLVolumeNode"):
        raise VolumeNodeError(f"{label} is a {node.GetClassName()}, not an image volume: select a scalar volume.")
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise VolumeNodeError(
            f"Volume {label} is a label map (segment labels, not intensities): select a scalar image volume."
        )
    image = node.GetImageData()
    components = image.GetNumberOfScalarComponents() if image is not None else 1
    if node.IsA("vtkMRMLTensorVolumeNode") or components > 1:  # vector, RGB, diffusion volumes
        kind = f"{components} values per voxel" if components > 1 else node.GetClassName()
        raise VolumeNodeError(
            f"Volume {label} is a vector/RGB or tensor volume ({kind}): "
            "select a scalar (grey-value) volume, or extract one component first."
        )
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise VolumeNodeError(f"Volume {label} is a {node.GetClassName()}: select a scalar image volume.")
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise VolumeNodeError(f"Volume {label} has no image data: load or compute its voxels first.")
    if min(image.GetDimensions()) < 1 or image.GetNumberOfPoints() == 0:
        raise VolumeNodeError(f"Volume {label} is empty (dimensions {image.GetDimensions()}).")


def check_output_node(output_node, input_node) -> None:
    if output_node is None:
        return
    if output_node is input_node or (output_node.GetID() and output_node.GetID() == input_node.GetID()):
        raise VolumeNodeError(
            f"The output volume must not be the input volume {node_label(input_node)}: "
            "choose 'Create new volume' or another volume."
        )
    if not output_node.IsA("vtkMRMLScalarVolumeNode") or output_node.IsA("vtkMRMLLabelMapVolumeNode") \
            or output_node.IsA("vtkMRMLTensorVolumeNode"):
        raise VolumeNodeError(f"Output {node_label(output_node)} is a {output_node.GetClassName()}: choose a scalar volume.")


def _voxels(node) -> np.ndarray:
    """The node's voxels as a read-only (k, j, i) view (no copy)."""
    image = node.GetImageData()
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    view = scalars.reshape(tuple(reversed(image.GetDimensions())))
    view.flags.writeable = False
    return view


# ----------------------------------------------------------------------------------------------------
# Geometry: IJK-to-RAS matrix <-> SimpleITK (LPS)


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def image_geometry_to_ijk_to_ras(image: sitk.Image) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of a 3D SimpleITK image (spacing, origin, direction in LPS)."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = _LPS_FROM_RAS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = _LPS_FROM_RAS @ np.array(image.GetOrigin(), dtype=float)
    return matrix


def image_from_node(node) -> sitk.Image:
    """A copy of the node's voxels as a 3D SimpleITK image with the node's geometry in LPS.

    The geometry is the node's own (local) one; a parent transform is carried over to the output
    node instead (see ``store_result``).
    """
    check_node_structure(node)  # callers check the voxels (label maps) once, before
    image = sitk.GetImageFromArray(np.array(_voxels(node)), isVector=False)
    matrix = ijk_to_ras(node)
    columns = matrix[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((_LPS_FROM_RAS @ (columns / spacing)).ravel().tolist())
    image.SetOrigin((_LPS_FROM_RAS @ matrix[:3, 3]).tolist())
    return image


def write_node_to_file(node, path) -> Path:
    """Write the node's voxels and geometry to an image file (e.g. NRRD) for the worker process."""
    path = Path(path)
    sitk.WriteImage(image_from_node(node), str(path), useCompression=False)
    return path


# ----------------------------------------------------------------------------------------------------
# Suggesting a task


def dicom_modality(node) -> Optional[str]:
    """The DICOM Modality of the node's series (subject-hierarchy attribute), else of the node."""
    scene = node.GetScene()
    shNode = scene.GetSubjectHierarchyNode() if scene is not None else None
    if shNode is not None:
        item = shNode.GetItemByDataNode(node)
        if item:
            value = shNode.GetItemAttribute(item, MODALITY_ATTRIBUTE)
            if value:
                return value.strip().upper()
    value = node.GetAttribute(MODALITY_ATTRIBUTE)
    return value.strip().upper() if value else None


def _units_code(node) -> str:
    units = node.GetVoxelValueUnits()
    if units is None:
        return ""
    return " ".join(filter(None, (units.GetCodeValue(), units.GetCodeMeaning())))


def suggest_task(node) -> TaskSuggestion:
    """The task a volume most likely needs, and why (``input_rules.suggest_task``, the command line's
    ``--task auto`` rule): DICOM modality, units, name, then intensities. The user can override it."""
    check_input_node(node)
    return input_rules.suggest_task(_voxels(node), dicom_modality(node), _units_code(node), node.GetName() or "")


# ----------------------------------------------------------------------------------------------------
# Storing a result


def output_name(input_node, task: str) -> str:
    return f"{input_node.GetName()} (DiffCode {get_task(task).name})"


def _attribute_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _fill_volume_node(node, image: sitk.Image, input_node, attributes: Dict[str, str]) -> None:
    """Voxels, geometry, display, transform and attributes; the node must already be in the scene."""
    voxels = sitk.GetArrayFromImage(image)
    if voxels.ndim == 2:
        voxels = voxels[np.newaxis]
    matrix = vtk.vtkMatrix4x4()
    for r, row in enumerate(image_geometry_to_ijk_to_ras(image)):
        for c, value in enumerate(row):
            matrix.SetElement(r, c, float(value))
    was_modifying = node.StartModify()
    try:
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(voxels))
        node.SetIJKToRASMatrix(matrix)
        node.SetAndObserveTransformNodeID(input_node.GetTransformNodeID())
        node.SetVoxelValueQuantity(input_node.GetVoxelValueQuantity())
        node.SetVoxelValueUnits(input_node.GetVoxelValueUnits())
        for key, value in attributes.items():
            node.SetAttribute(key, value)
        node.SetNodeReferenceID(INPUT_REFERENCE_ROLE, input_node.GetID())
    finally:
        node.EndModify(was_modifying)


def _copy_display(node, input_node, same_units: bool) -> None:
    """Window/level and colour table from the input, so both read the same way side by side."""
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    source, target = input_node.GetDisplayNode(), node.GetDisplayNode()
    if source is None or target is None:
        return
    if source.GetColorNodeID():
        target.SetAndObserveColorNodeID(source.GetColorNodeID())
    if same_units:
        target.SetAutoWindowLevel(False)
        target.SetWindowLevel(source.GetWindow(), source.GetLevel())
    else:
        target.SetAutoWindowLevel(True)


def _place_beside(node, input_node) -> None:
    """Put the node under the input's parent in the subject hierarchy (its study or folder)."""
    shNode = input_node.GetScene().GetSubjectHierarchyNode()
    input_item = shNode.GetItemByDataNode(input_node)
    parent = shNode.GetItemParent(input_item) if input_item else shNode.GetSceneItemID()
    item = shNode.GetItemByDataNode(node)
    if not item:
        item = shNode.CreateItem(parent, node)
    shNode.SetItemParent(item, parent)


def _new_or_given(scene, node, name: str) -> Tuple[Any, bool]:
    if node is not None:
        return node, False
    return scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(name)), True


def store_result(
    input_node,
    image: sitk.Image,
    task: str,
    metadata: Optional[Dict[str, Any]] = None,
    output_node=None,
    uncertainty: Optional[sitk.Image] = None,
):
    """Put a finished restoration into the scene beside ``input_node``; return the output node.

    A new node is created unless ``output_node`` is given. If anything fails, nodes created here
    are removed again, so the scene never holds a half-filled result. With ``uncertainty`` a
    second node ``<output name> uncertainty`` is made and referenced from the output node
    (role ``DiffCodeUncertainty``).
    """
    check_output_node(output_node, input_node)
    scene = input_node.GetScene()
    attributes = {ATTRIBUTE_PREFIX + key: _attribute_value(value) for key, value in (metadata or {}).items()}
    attributes.setdefault(ATTRIBUTE_PREFIX + "task", task)
    attributes[ATTRIBUTE_PREFIX + "input"] = input_node.GetName() or ""
    created: List[Any] = []
    try:
        node, is_new = _new_or_given(scene, output_node, output_name(input_node, task))
        if is_new:
            created.append(node)
        _fill_volume_node(node, image, input_node, attributes)
        _copy_display(node, input_node, same_units=True)
        _place_beside(node, input_node)
        if uncertainty is not None:
            spread, _ = _new_or_given(scene, None, f"{node.GetName()} uncertainty")
            created.append(spread)
            _fill_volume_node(spread, uncertainty, input_node, {**attributes, ATTRIBUTE_PREFIX + "map": "uncertainty"})
            _copy_display(spread, input_node, same_units=False)
            _place_beside(spread, input_node)
            node.SetNodeReferenceID(UNCERTAINTY_REFERENCE_ROLE, spread.GetID())
        return node
    except Exception:
        for leftover in created:
            _remove_with_display(scene, leftover)
        raise


def _remove_with_display(scene, node) -> None:
    """Remove a node we created, with its display nodes and subject-hierarchy item."""
    displays = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    shNode = scene.GetSubjectHierarchyNode()
    item = shNode.GetItemByDataNode(node)
    if item:
        shNode.RemoveItem(item, False, False)  # keep the data node here; removed just below
    for leftover in [node] + displays:
        if leftover is not None and scene.IsNodePresent(leftover):
            scene.RemoveNode(leftover)


def uncertainty_node(output_node):
    """The uncertainty map made with ``output_node`` (None when none was requested)."""
    return output_node.GetNodeReference(UNCERTAINTY_REFERENCE_ROLE)


def load_result_file(input_node, path, task: str, metadata=None, output_node=None, uncertainty_path=None):
    """``store_result`` for files written by the worker process."""
    image = sitk.ReadImage(str(path))
    uncertainty = sitk.ReadImage(str(uncertainty_path)) if uncertainty_path else None
    return store_result(input_node, image, task, metadata, output_node, uncertainty)


# ----------------------------------------------------------------------------------------------------
# Restoring (in this process)


def load_pipeline(model=None, device: str = "auto"):
    """The restoration pipeline for a catalog model name or weights folder (None: default model)."""
    from .pipeline import DiffCodePipeline

    return DiffCodePipeline.from_pretrained(model, device=device)


def restore_volume_node(
    input_node,
    task: Optional[str] = None,
    output_node=None,
    *,
    pipeline=None,
    model=None,
    device: str = "auto",
    progress: Optional[Callable[..., None]] = None,
    cancel=None,
    **options: Any,
):
    """Restore one volume node in this process (blocking); return the output node.

    ``task`` defaults to ``suggest_task(input_node).task``. ``options`` go to the pipeline
    (``scale``, ``steps``, ``fidelity``, ``seed``, ``samples``, ...). Pass ``pipeline`` to reuse a
    loaded model across calls; else ``model``/``device`` choose one. Bad nodes raise
    ``VolumeNodeError`` naming the node before any work; a cancel (``cancel`` token) raises the
    pipeline's ``RestoreCancelled`` and leaves the scene unchanged.
    """
    check_input_node(input_node)
    check_output_node(output_node, input_node)
    task = get_task(task).name if task else suggest_task(input_node).task
    image = image_from_node(input_node)
    pipeline = pipeline or load_pipeline(model, device)
    try:
        result = pipeline(image, task=task, progress=progress, cancel=cancel, **options)
    except VolumeError as error:  # voxels that cannot be restored (constant, NaN): say which node
        raise VolumeNodeError(f"Volume {node_label(input_node)}: {error}") from None
    return store_result(input_node, result.image, task, result.metadata, output_node, result.uncertainty)


def restorable_volume_nodes(scene) -> List[Any]:
    """Every volume in ``scene`` that can be restored and is not itself a DiffCode result."""
    found = []
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if node.GetAttribute(ATTRIBUTE_PREFIX + "task"):
            continue
        try:
            check_input_node(node)
        except VolumeNodeError:
            continue
        found.append(node)
    return found


def restore_volume_nodes(
    input_nodes: Iterable,
    task: Optional[str] = None,
    *,
    pipeline=None,
    model=None,
    device: str = "auto",
    **options: Any,
) -> List[Any]:
    """Restore several nodes with one loaded model; each gets its own new output node.

    Every node is checked before the first one is restored, so a bad node in the list stops the
    batch at once instead of after hours of work. ``task`` None: suggested per node.
    """
    nodes = list(input_nodes)
    for node in nodes:
        check_input_node(node)
    pipeline = pipeline or load_pipeline(model, device)
    return [restore_volume_node(node, task, pipeline=pipeline, **options) for node in nodes]


# ----------------------------------------------------------------------------------------------------
# Scores against a reference


def compare_to_reference(node, reference_node, task: str):
    """PSNR/SSIM/RMSE (``metrics.Scores``) of ``node`` against ``reference_node``, slice-averaged.

    Both must lie on the same voxel grid (same dimensions and IJK-to-RAS matrix within 1e-3 mm);
    the slices scored are the node's k-slices, as the benchmark protocol scores axial slices.
    """
    from .metrics import volume_scores

    for candidate in (node, reference_node):
        check_input_node(candidate)
    same_shape = node.GetImageData().GetDimensions() == reference_node.GetImageData().GetDimensions()
    if not same_shape or not np.allclose(ijk_to_ras(node), ijk_to_ras(reference_node), atol=1e-3):
        raise VolumeNodeError(
            f"Reference {node_label(reference_node)} is not on the voxel grid of {node_label(node)}: "
            "resample it onto that volume first (e.g. with the Resample Image (BRAINS) module)."
        )
    return volume_scores(_voxels(node), _voxels(reference_node), get_task(task).name)
