"""DiffCodeRestoreLib.mrml on Slicer's real MRML classes (the slicer-core wheel), with real images.

Volumes are small crops of real scans from the data cache, written with SimpleITK and loaded the
way Slicer loads files (vtkSlicerVolumesLogic.AddArchetypeVolume); restoration uses a seeded,
random-initialised tiny model, so values are checked for units and range, not for quality.
"""

import json

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from DiffCodeRestoreLib import mrml  # noqa: E402
from DiffCodeRestoreLib.data.volumes import load_volume  # noqa: E402
from DiffCodeRestoreLib.hub import sha256_of  # noqa: E402
from DiffCodeRestoreLib.pipeline import CancelToken, DiffCodePipeline, RestoreCancelled  # noqa: E402
from DiffCodeRestoreLib.simulate.pet import activity_from_tissues  # noqa: E402

TASK_OF_FILE = {"ct.nrrd": "ct-denoise", "mri.nii.gz": "mri-sr", "pet.mha": "pet-synthesis"}


def _oblique(image: sitk.Image, degrees: float) -> sitk.Image:
    """The same voxels with the direction rotated about the slice axis (an oblique acquisition)."""
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    tilted = sitk.Image(image)
    tilted.SetDirection((rotation @ np.array(image.GetDirection()).reshape(3, 3)).ravel().tolist())
    return tilted


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Crops of real scans: CT (lung, HU, int16), MRI (brain, 3 mm slices, NIfTI), PET (SUV, MHA)."""
    folder = tmp_path_factory.mktemp("volumes")
    ct = load_volume("lung2")[200:264, 200:264, 30:33]
    sitk.WriteImage(ct, str(folder / "ct.nrrd"))
    sitk.WriteImage(_oblique(ct, 20.0), str(folder / "ct_oblique.nrrd"))
    mri = load_volume("colin27")[60:124, 70:134, 80:89:3]  # every third slice: 3 mm slice spacing
    sitk.WriteImage(mri, str(folder / "mri.nii.gz"))
    tissues = [sitk.GetArrayFromImage(load_volume(name)[60:124, 80:144, 70:73]) for name in
               ("mni152_gm", "mni152_wm", "mni152_mask")]
    pet = sitk.GetImageFromArray(activity_from_tissues(*tissues, spacing_mm=(1.0, 1.0), seed=0))
    pet.CopyInformation(load_volume("mni152_gm")[60:124, 80:144, 70:73])
    sitk.WriteImage(pet, str(folder / "pet.mha"))
    labels = load_volume("itk_t1_classes")[30:94, 10:50, 60:63]
    sitk.WriteImage(labels, str(folder / "labels.nrrd"))
    sitk.WriteImage(sitk.Compose([ct, ct, ct]), str(folder / "vector.nrrd"))
    return folder


@pytest.fixture
def scene():
    """A fresh scene wired like Slicer's: application, colour and volumes logic."""
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(app)
    colors.SetMRMLScene(scene)
    app.SetModuleLogic("Colors", colors)
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLApplicationLogic(app)
    volumes.SetMRMLScene(scene)
    scene.volumes_logic = volumes  # keep the logic alive with the scene
    scene.GetSubjectHierarchyNode()  # Slicer's scene always has one
    yield scene
    scene.Clear(1)


def load(scene, path, name, label_map=False):
    node = scene.volumes_logic.AddArchetypeVolume(str(path), name, 1 if label_map else 0)
    assert node is not None, f"Slicer could not load {path}"
    return node


def in_study(scene, node):
    """Put ``node`` into Patient > Study in the subject hierarchy, as DICOM loading does; return the study."""
    shNode = scene.GetSubjectHierarchyNode()
    patient = shNode.CreateSubjectItem(shNode.GetSceneItemID(), "Patient 1")
    study = shNode.CreateStudyItem(patient, "Study 1")
    item = shNode.GetItemByDataNode(node) or shNode.CreateItem(study, node)
    shNode.SetItemParent(item, study)
    return study


def volume_nodes(scene):
    return [scene.GetNthNodeByClass(i, "vtkMRMLVolumeNode") for i in range(scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode"))]


def physical_corners(node):
    """RAS positions of the two outer corners of the field of view (voxel-centre convention)."""
    dims = np.array(node.GetImageData().GetDimensions(), dtype=float)
    matrix = mrml.ijk_to_ras(node)
    return [matrix @ np.append(corner, 1.0) for corner in (np.full(3, -0.5), dims - 0.5)]


@pytest.fixture(scope="module")
def pipeline(tiny_weights):
    return DiffCodePipeline.from_pretrained(str(tiny_weights), device="cpu")


# ----------------------------------------------------------------------------------------------------
# Restoring each task


@pytest.mark.parametrize("filename", sorted(TASK_OF_FILE))
def test_restore_each_task_keeps_geometry_units_and_input(scene, files, pipeline, tiny_weights, filename):
    task = TASK_OF_FILE[filename]
    node = load(scene, files / filename, "scan")
    study = in_study(scene, node)
    node.GetDisplayNode().SetAutoWindowLevel(False)
    node.GetDisplayNode().SetWindowLevel(321.0, 45.0)
    before = np.array(slicer.util.arrayFromVolume(node))
    matrix_before = mrml.ijk_to_ras(node)

    output = mrml.restore_volume_node(node, task, pipeline=pipeline, seed=3)

    assert output.GetName() == f"scan (DiffCode {task})"
    assert output.GetImageData().GetDimensions() == node.GetImageData().GetDimensions()
    np.testing.assert_allclose(mrml.ijk_to_ras(output), matrix_before, atol=1e-6)
    values = slicer.util.arrayFromVolume(output)
    assert np.isfinite(values).all()
    if task == "ct-denoise":  # integer HU kept; restored voxels inside the network range, others untouched
        assert values.dtype == before.dtype == np.int16
        assert values.min() >= min(-1024, before.min()) and values.max() <= max(3071, before.max())
    else:
        assert values.dtype == np.float32
    if task == "pet-synthesis":  # SUV: non-negative, within the network range (0..20)
        assert values.min() >= 0.0 and values.max() <= 20.0 + 1e-3
    if task == "mri-sr":  # scaled back to the input's units: same order of magnitude
        assert 0.1 * before.max() < values.max() < 10 * before.max()
    # Provenance attributes.
    assert output.GetAttribute("DiffCode.task") == task
    assert output.GetAttribute("DiffCode.sha256") == sha256_of(tiny_weights / "model.safetensors")
    assert output.GetAttribute("DiffCode.model") == tiny_weights.name
    assert json.loads(output.GetAttribute("DiffCode.options"))["seed"] == 3
    assert output.GetAttribute("DiffCode.input") == "scan"
    assert output.GetNodeReference(mrml.INPUT_REFERENCE_ROLE) is node
    # Same study, same window/level, and the input untouched.
    shNode = scene.GetSubjectHierarchyNode()
    assert shNode.GetItemParent(shNode.GetItemByDataNode(output)) == study
    assert (output.GetDisplayNode().GetWindow(), output.GetDisplayNode().GetLevel()) == (321.0, 45.0)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)
    np.testing.assert_array_equal(mrml.ijk_to_ras(node), matrix_before)
    assert node.GetName() == "scan" and not node.GetAttribute("DiffCode.task")


def test_mri_super_resolution_output_grid_is_exactly_finer(scene, files, pipeline):
    node = load(scene, files / "mri.nii.gz", "T1 3mm")
    output = mrml.restore_volume_node(node, "mri-sr", pipeline=pipeline, scale=2)

    (i, j, k) = node.GetImageData().GetDimensions()
    assert output.GetImageData().GetDimensions() == (2 * i, 2 * j, k)  # slices (3 mm axis) unchanged
    source, result = mrml.ijk_to_ras(node), mrml.ijk_to_ras(output)
    np.testing.assert_allclose(result[:3, :2], source[:3, :2] / 2, atol=1e-9)  # in-plane spacing halved
    np.testing.assert_allclose(result[:3, 2], source[:3, 2], atol=1e-9)
    for corner_in, corner_out in zip(physical_corners(node), physical_corners(output)):
        np.testing.assert_allclose(corner_out, corner_in, atol=1e-6)  # exactly the same field of view
    assert json.loads(output.GetAttribute("DiffCode.options"))["scale"] == 2


def test_oblique_geometry_round_trips_through_the_node(scene, files, pipeline, tmp_path):
    """The image handed to the pipeline has the file's geometry: every voxel at the same physical point."""
    node = load(scene, files / "ct_oblique.nrrd", "oblique")
    image = mrml.image_from_node(node)
    original = sitk.ReadImage(str(files / "ct_oblique.nrrd"))
    rng = np.random.default_rng(0)
    for index in rng.integers(0, [64, 64, 3], size=(20, 3)):
        point = image.TransformIndexToPhysicalPoint([int(v) for v in index])
        assert original[original.TransformPhysicalPointToIndex(point)] == image[[int(v) for v in index]]
    written = mrml.write_node_to_file(node, tmp_path / "roundtrip.nrrd")
    again = sitk.ReadImage(str(written))
    assert np.allclose(again.GetDirection(), image.GetDirection()) and np.allclose(again.GetOrigin(), image.GetOrigin())
    output = mrml.restore_volume_node(node, "ct-denoise", pipeline=pipeline)
    np.testing.assert_allclose(mrml.ijk_to_ras(output), mrml.ijk_to_ras(node), atol=1e-6)


def test_uncertainty_map_and_given_output_node(scene, files, pipeline):
    node = load(scene, files / "pet.mha", "PET low dose")
    target = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my result")
    output = mrml.restore_volume_node(node, "pet-synthesis", target, pipeline=pipeline, samples=2)
    assert output is target and output.GetName() == "my result"
    spread = mrml.uncertainty_node(output)
    assert spread is not None and spread.GetName() == "my result uncertainty"
    assert spread.GetAttribute("DiffCode.map") == "uncertainty"
    values = slicer.util.arrayFromVolume(spread)
    assert values.dtype == np.float32 and values.min() >= 0 and values.max() > 0
    np.testing.assert_allclose(mrml.ijk_to_ras(spread), mrml.ijk_to_ras(node), atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# Batch and suggestions


def test_batch_restores_every_node_with_its_suggested_task(scene, files, pipeline):
    nodes = [load(scene, files / name, f"volume {n}") for n, name in enumerate(sorted(TASK_OF_FILE))]
    load(scene, files / "labels.nrrd", "segmentation", label_map=True)  # in the scene, not restorable
    assert mrml.restorable_volume_nodes(scene) == nodes
    outputs = mrml.restore_volume_nodes(mrml.restorable_volume_nodes(scene), pipeline=pipeline)
    assert len({o.GetID() for o in outputs}) == len(nodes)
    for node, output, name in zip(nodes, outputs, sorted(TASK_OF_FILE)):
        assert output.GetAttribute("DiffCode.task") == TASK_OF_FILE[name]  # from intensities alone
        assert output.GetNodeReference(mrml.INPUT_REFERENCE_ROLE) is node
    assert mrml.restorable_volume_nodes(scene) == nodes  # results are not restored again


def test_batch_with_a_bad_node_stops_before_any_work(scene, files, pipeline):
    good = load(scene, files / "ct.nrrd", "good")
    bad = load(scene, files / "labels.nrrd", "segmentation", label_map=True)
    count = len(volume_nodes(scene))
    with pytest.raises(mrml.VolumeNodeError, match="'segmentation' is a label map"):
        mrml.restore_volume_nodes([good, bad], pipeline=pipeline)
    assert len(volume_nodes(scene)) == count


def test_suggest_task_uses_dicom_modality_units_name_then_intensities(scene, files):
    ct = load(scene, files / "ct.nrrd", "series 1")
    assert mrml.suggest_task(ct).task == "ct-denoise" and mrml.suggest_task(ct).certain
    assert "Hounsfield" in mrml.suggest_task(ct).reason
    shNode = scene.GetSubjectHierarchyNode()
    shNode.SetItemAttribute(shNode.CreateItem(in_study(scene, ct), ct), "DICOM.Modality", "PT")
    assert mrml.suggest_task(ct) == ("pet-synthesis", "DICOM modality PT", True)
    mri = load(scene, files / "mri.nii.gz", "series 2")
    assert mrml.suggest_task(mri).task == "mri-sr"
    pet = load(scene, files / "pet.mha", "series 3")
    assert mrml.suggest_task(pet).task == "pet-synthesis"
    pet.SetName("CT attenuation map")
    assert mrml.suggest_task(pet) == ("ct-denoise", "volume name 'CT attenuation map'", True)


# ----------------------------------------------------------------------------------------------------
# Bad nodes and nothing half-done


def _empty_volume(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty scan")
    image = vtk.vtkImageData()
    image.SetDimensions(64, 0, 1)
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    node.SetAndObserveImageData(image)
    return node


BAD_NODES = {
    "label map": (lambda scene, files: load(scene, files / "labels.nrrd", "tissue labels", label_map=True),
                  "'tissue labels' is a label map"),
    # the same labels loaded as a scalar volume: the command line's rule (input_rules) refuses it too
    "label map loaded as scalar volume": (lambda scene, files: load(scene, files / "labels.nrrd", "tissue classes"),
                                          "'tissue classes' looks like a label map or mask"),
    "vector/RGB": (lambda scene, files: load(scene, files / "vector.nrrd", "colour scan"),
                   "'colour scan' is a vector/RGB"),
    "empty": (lambda scene, files: _empty_volume(scene), "'empty scan' is empty"),
    "no image data": (lambda scene, files: scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "placeholder"),
                      "'placeholder' has no image data"),
    "not a volume": (lambda scene, files: scene.AddNewNodeByClass("vtkMRMLModelNode", "surface"),
                     "'surface' is a vtkMRMLModelNode, not an image volume"),
}


@pytest.mark.parametrize("kind", sorted(BAD_NODES))
def test_bad_node_is_refused_with_its_name(scene, files, pipeline, kind):
    make, message = BAD_NODES[kind]
    node = make(scene, files)
    count = scene.GetNumberOfNodes()
    with pytest.raises(mrml.VolumeNodeError, match=message):
        mrml.restore_volume_node(node, "ct-denoise", pipeline=pipeline)
    assert scene.GetNumberOfNodes() == count


def test_constant_volume_error_names_the_node(scene, files, pipeline):
    node = load(scene, files / "ct.nrrd", "flat")
    slicer.util.arrayFromVolume(node)[:] = -1000
    with pytest.raises(mrml.VolumeNodeError, match="'flat'.*constant"):
        mrml.restore_volume_node(node, "ct-denoise", pipeline=pipeline)


def test_output_must_not_be_the_input(scene, files, pipeline):
    node = load(scene, files / "ct.nrrd", "chest")
    with pytest.raises(mrml.VolumeNodeError, match="must not be the input volume 'chest'"):
        mrml.restore_volume_node(node, "ct-denoise", node, pipeline=pipeline)


def test_cancel_leaves_no_output_node(scene, files, pipeline):
    node = load(scene, files / "ct.nrrd", "chest")
    before = np.array(slicer.util.arrayFromVolume(node))
    count = scene.GetNumberOfNodes()
    token = CancelToken()

    def cancel_after_first_batch(done, total):
        if done:
            token.cancel()

    with pytest.raises(RestoreCancelled):
        mrml.restore_volume_node(node, "ct-denoise", pipeline=pipeline, batch_size=1,
                                 progress=cancel_after_first_batch, cancel=token)
    assert scene.GetNumberOfNodes() == count
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)


def test_failure_while_storing_removes_the_nodes_created(scene, files):
    node = load(scene, files / "ct.nrrd", "chest")
    count = scene.GetNumberOfNodes()
    image = mrml.image_from_node(node)
    broken_uncertainty = sitk.Compose([sitk.Cast(image, sitk.sitkFloat32)] * 2)  # two components: cannot be stored
    shNode = scene.GetSubjectHierarchyNode()
    items = vtk.vtkIdList()
    shNode.GetItemChildren(shNode.GetSceneItemID(), items, True)
    with pytest.raises(Exception):
        mrml.store_result(node, image, "ct-denoise", {"task": "ct-denoise"}, uncertainty=broken_uncertainty)
    assert scene.GetNumberOfNodes() == count
    after = vtk.vtkIdList()
    shNode.GetItemChildren(shNode.GetSceneItemID(), after, True)
    assert after.GetNumberOfIds() == items.GetNumberOfIds()


# ----------------------------------------------------------------------------------------------------
# Scores against a reference


def test_compare_to_reference_on_the_same_grid_only(scene, files, pipeline):
    reference = load(scene, files / "mri.nii.gz", "reference")
    same_grid = mrml.restore_volume_node(reference, "mri-sr", pipeline=pipeline)
    scores = mrml.compare_to_reference(same_grid, reference, "mri-sr")
    assert np.isfinite(scores.psnr) and -1.0 <= scores.ssim <= 1.0
    assert mrml.compare_to_reference(reference, reference, "mri-sr").ssim == pytest.approx(1.0)
    finer = mrml.restore_volume_node(reference, "mri-sr", pipeline=pipeline, scale=2)
    with pytest.raises(mrml.VolumeNodeError, match="'reference' is not on the voxel grid"):
        mrml.compare_to_reference(finer, reference, "mri-sr")
