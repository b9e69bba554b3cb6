"""DiffCode Restore: MRI super-resolution, CT low-dose denoising and PET low-dose to full-dose synthesis.

This file is the thin entry point Slicer loads: the module's description and its self-test. The rest
lives in small files beside it, in ``DiffCodeRestoreSlicerLib``: the panel (``widget.py``), the logic
usable from the Python console (``logic.py``), the parameter node (``parameters.py``) and, Qt-free and
tested without Slicer, the installs, the job driven by a timer, the cache folder and the panel's
decisions. The scene-level logic (checks, geometry, output node, subject hierarchy, provenance) is
``DiffCodeRestoreLib.mrml``; the worker and its protocol are ``DiffCodeRestoreLib.worker``; weights are
``DiffCodeRestoreLib.hub``.
"""

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest

from DiffCodeRestoreLib import mrml
# Slicer finds the module's widget, logic and parameter node by name in this file's namespace.
from DiffCodeRestoreSlicerLib.logic import DiffCodeRestoreLogic, cleanupAllJobs, sweepStaleFolders
from DiffCodeRestoreSlicerLib.parameters import DiffCodeRestoreParameterNode, RestoreTask  # noqa: F401
from DiffCodeRestoreSlicerLib.widget import DiffCodeRestoreWidget  # noqa: F401

PAPER_URL = "https://arxiv.org/abs/2507.19874"
HOMEPAGE_URL = "https://github.com/diffcode-restore/SlicerDiffCode"
CATEGORY = "Filtering"  # EXTENSION_CATEGORY in CMakeLists.txt; translated in Slicer's own context


#
# DiffCodeRestore
#


class DiffCodeRestore(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DiffCode Restore")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", CATEGORY)]
        self.parent.dependencies = []
        self.parent.contributors = ["DiffCode Restore contributors"]
        self.parent.helpText = _(
            """
Restores medical images with one all-in-one model: <b>MRI super-resolution</b> (sharper in-plane detail,
optionally onto a 2x or 4x finer grid), <b>CT low-dose denoising</b> (in Hounsfield units) and
<b>PET low-dose to full-dose synthesis</b> (in SUV).
<ol>
<li>Choose the input volume; the task is suggested from its DICOM modality or intensities (you can change it).</li>
<li>Click <b>Apply</b>. The work runs in a separate process; click again to cancel. The input is never changed:
the result is a new volume named '&lt;input&gt; (DiffCode &lt;task&gt;)' beside it in the Data module.</li>
<li><b>Compare side by side</b> shows input and result in linked views; the fade slider blends them.
With a reference volume, PSNR/SSIM are shown.</li>
</ol>
Weights are downloaded once from the Hugging Face Hub at a pinned revision and checked by SHA-256
(or use the bundled / imported ones). For research use only: not for diagnosis or treatment decisions.
Restored images can contain smoothed-away or invented detail; always check them against the input.
See the <a href="{homepage}">documentation</a>.
"""
        ).format(homepage=HOMEPAGE_URL)
        self.parent.acknowledgementText = _(
            """
A reimplementation from the published abstract of DiffCode (Chen, Yang, Hou, Zhang, Wei, Zhou, Xu:
all-in-one medical image restoration with a task-adaptive codebook bank and latent diffusion,
MICCAI 2025, <a href="{paper}">arXiv:2507.19874</a>); it is not the authors' code or weights.
"""
        ).format(paper=PAPER_URL)
        # A worker's temporary folder holds a copy of the patient volume: remove those a killed Slicer
        # left behind, and stop running workers (deleting their folders) when Slicer quits.
        slicer.app.connect("startupCompleted()", sweepStaleFolders)
        slicer.app.connect("aboutToQuit()", cleanupAllJobs)


#
# DiffCodeRestoreTest
#


class DiffCodeRestoreTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer on a small synthetic CT volume, on the CPU, with the catalog's weights."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_rejects_label_map()
        self.test_restore_small_ct()

    def _phantom(self, name: str):
        import numpy as np

        rng = np.random.default_rng(0)
        k, j, i = np.mgrid[0:3, 0:64, 0:64]
        hu = np.where((j - 32) ** 2 + (i - 32) ** 2 < 24**2, 40, -1000) + rng.normal(0, 30, (3, 64, 64))
        ijkToRAS = np.array([[0.7, 0, 0, 10], [0, 0.7, 0, -5], [0, 0, 2.5, 30], [0, 0, 0, 1]])
        node = slicer.util.addVolumeFromArray(hu.astype(np.int16), ijkToRAS=ijkToRAS, name=name)
        return node, hu.astype(np.int16)

    def test_rejects_label_map(self):
        labels = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
        with self.assertRaises(mrml.VolumeNodeError):
            DiffCodeRestoreLogic().process(labels, "ct-denoise")
        self.delayDisplay("label map refused")

    def test_restore_small_ct(self):
        import numpy as np

        logic = DiffCodeRestoreLogic()
        if logic.missingPackages(withTorch=True):
            self.delayDisplay("skipped: install PyTorch and the module's packages first (click Apply once)")
            return
        default = logic.catalog().default
        if not any(s.entry.name == default and s.state != "to download" for s in logic.modelStatuses()):
            self.delayDisplay("skipped: the default model is neither bundled nor downloaded (click Download once)")
            return
        inputVolume, voxels = self._phantom("CT phantom")
        self.assertEqual(mrml.suggest_task(inputVolume).task, "ct-denoise")
        output = logic.process(inputVolume, "ct-denoise", device="cpu")
        self.assertEqual(output.GetName(), "CT phantom (DiffCode ct-denoise)")
        self.assertTrue(np.allclose(mrml.ijk_to_ras(output), mrml.ijk_to_ras(inputVolume)))
        self.assertEqual(slicer.util.arrayFromVolume(output).dtype, np.int16)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(inputVolume), voxels))
        self.assertEqual(output.GetAttribute("DiffCode.task"), "ct-denoise")
        self.delayDisplay("restored a small CT volume")

        logic.showComparison(inputVolume, output, fade=0.25)  # CompareVolumes' linked views, input faded
        from DiffCodeRestoreSlicerLib.logic import COMPARE_VIEWS

        composites = [slicer.app.layoutManager().sliceWidget(name).mrmlSliceCompositeNode() for name in COMPARE_VIEWS]
        self.assertEqual(composites[0].GetBackgroundVolumeID(), inputVolume.GetID())
        self.assertEqual(composites[0].GetForegroundVolumeID(), output.GetID())
        self.assertAlmostEqual(composites[0].GetForegroundOpacity(), 0.25)
        self.assertEqual(composites[1].GetBackgroundVolumeID(), output.GetID())
        self.delayDisplay("input and result side by side")
