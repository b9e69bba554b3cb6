"""DiffCode Restore: MRI super-resolution, CT low-dose denoising and PET low-dose to full-dose synthesis.

This file is the thin Slicer layer: the panel, its parameter node, the worker process that does the
heavy work, and views for comparing. The scene-level logic (checks, geometry, output node, subject
hierarchy, provenance) is ``DiffCodeRestoreLib.mrml``; the worker and its protocol are
``DiffCodeRestoreLib.worker``; weights are ``DiffCodeRestoreLib.hub``.
"""

import enum
import importlib.util
import logging
import os
import shutil
import time
from typing import Annotated, Any, Callable, Dict, List, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from DiffCodeRestoreLib import mrml
from DiffCodeRestoreLib.tasks import get_task
from DiffCodeRestoreLib.worker import WorkerError, WorkerJob, WorkerRequest

PAPER_URL = "https://arxiv.org/abs/2507.19874"
HOMEPAGE_URL = "https://github.com/diffcode-restore/SlicerDiffCode"
TORCH_REQUIREMENT = ">=2.0"
# pip requirement -> import name. SimpleITK and numpy come with Slicer.
RESTORE_PACKAGES = {"huggingface_hub>=0.20": "huggingface_hub", "safetensors>=0.4": "safetensors", "tqdm>=4.60": "tqdm"}
METRICS_PACKAGES = {"scikit-image>=0.19": "skimage"}
COMPARE_LAYOUT_ID = 502507  # a free custom-layout slot
COMPARE_VIEWS = ("DiffCodeInput", "DiffCodeResult")
WORKER_POLL_MS = 200


#
# DiffCodeRestore
#


class DiffCodeRestore(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DiffCode Restore")
        self.parent.categories = [_("Filtering")]
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


#
# Parameter node
#


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


#
# Worker job driven by the Qt event loop
#


class SlicerJob:
    """A ``WorkerJob`` polled from a QTimer, so Slicer stays responsive; callbacks run in the GUI thread.

    ``onEvent(event)`` gets every worker event (progress, status, warning, ...); ``onFinished(job)``
    runs once when the worker has ended (after ``wait`` too). ``outputNode`` / ``error`` hold the
    outcome once the finishing step has run.
    """

    def __init__(self, worker: WorkerJob, onEvent: Optional[Callable] = None, onFinished: Optional[Callable] = None):
        self.worker = worker
        self.onEvent = onEvent
        self.onFinished = onFinished
        self.outputNode = None
        self.error: Optional[Exception] = None
        self.startTime = time.time()
        self._done = False
        self.timer = qt.QTimer()
        self.timer.setInterval(WORKER_POLL_MS)
        self.timer.connect("timeout()", self._poll)

    def start(self) -> "SlicerJob":
        self.startTime = time.time()
        self.worker.start()
        self.timer.start()
        return self

    def _dispatch(self) -> None:
        for event in self.worker.poll():
            if self.onEvent:
                self.onEvent(event)

    def _poll(self) -> None:
        self._dispatch()
        if self.worker.finished:
            self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self.timer.stop()
        self._dispatch()
        try:
            if self.onFinished:
                self.onFinished(self)
        finally:
            self.worker.cleanup()

    @property
    def running(self) -> bool:
        return not self._done

    def cancel(self) -> None:
        """Kill the worker's process tree; the finishing step then reports the cancel."""
        self.worker.cancel()

    def wait(self) -> None:
        """Block until the worker ends (console use), forwarding its events."""
        self.timer.stop()
        while not self.worker.finished:
            self._dispatch()
            time.sleep(WORKER_POLL_MS / 1000.0)
        self._finish()

    @property
    def elapsed(self) -> float:
        return time.time() - self.startTime


#
# DiffCodeRestoreLogic
#


class DiffCodeRestoreLogic(ScriptedLoadableModuleLogic):
    """Everything the panel does, callable from Slicer's Python console for batch use.

    Blocking by default::

        logic = DiffCodeRestoreLogic()
        output = logic.process(inputVolume)                      # task suggested from the volume
        output = logic.process(inputVolume, "mri-sr", scale=2)   # exact 2x finer in-plane grid
    """

    def getParameterNode(self):
        return DiffCodeRestoreParameterNode(super().getParameterNode())

    # -- dependencies (asked on first use, never at import) ---------------------------------------
    @staticmethod
    def missingPackages(packages: Optional[Dict[str, str]] = None) -> List[str]:
        packages = RESTORE_PACKAGES if packages is None else packages
        return [requirement for requirement, module in packages.items() if importlib.util.find_spec(module) is None]

    @staticmethod
    def torchInstalled() -> bool:
        return importlib.util.find_spec("torch") is not None

    def ensureDependencies(self, packages: Optional[Dict[str, str]] = None, withTorch: bool = True,
                           askConfirmation: bool = True) -> bool:
        """Install what is missing after one confirmation; False if the user declines.

        torch comes only from the PyTorch extension (it picks the CUDA build that fits this
        computer); other packages through ``slicer.packaging.pip_ensure`` (Slicer 5.12+) or
        ``slicer.util.pip_install``.
        """
        needTorch = withTorch and not self.torchInstalled()
        missing = self.missingPackages(packages)
        if not needTorch and not missing:
            return True
        if slicer.app.testingEnabled():
            return False
        wanted = (["PyTorch (through the PyTorch extension)"] if needTorch else []) + missing
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            _("DiffCode Restore needs these Python packages, which are not installed yet:\n\n{packages}\n\n"
              "Install them now? This needs an internet connection and can take several minutes.").format(
                packages="\n".join(wanted)),
            _("Install dependencies"),
        ):
            return False
        if needTorch:
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                raise RuntimeError(_("The PyTorch extension is missing: install 'PyTorch' from the Extensions "
                                     "Manager, restart Slicer and try again.")) from None
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                                  torchVersionRequirement=TORCH_REQUIREMENT)
            if torch is None:
                raise RuntimeError(_("PyTorch could not be installed: install it in the PyTorch Utils module, "
                                     "then try again."))
        if missing:
            self._pipInstall(missing)
        return True

    @staticmethod
    def _pipInstall(requirements: List[str]) -> None:
        try:
            import slicer.packaging as packaging
            ensure = packaging.pip_ensure
        except (ImportError, AttributeError):  # Slicer before 5.12
            with slicer.util.WaitCursor():
                slicer.util.pip_install(requirements)
            return
        ensure(requirements, requester="DiffCode Restore", prompt_install=False)

    # -- the worker process -----------------------------------------------------------------------
    @staticmethod
    def pythonExecutable() -> str:
        """Slicer's own Python launcher, so the worker sees the packages installed in Slicer."""
        executable = shutil.which("PythonSlicer")
        if not executable:
            raise RuntimeError(_("PythonSlicer was not found next to Slicer: reinstall Slicer."))
        return executable

    def startWorker(self, request: WorkerRequest, onEvent=None, onFinished=None, prepare=None) -> SlicerJob:
        worker = WorkerJob(request, python=self.pythonExecutable(), env=slicer.util.startupEnvironment())
        if prepare:
            prepare(worker)
        return SlicerJob(worker, onEvent, onFinished).start()

    def process(self, inputVolume, task: Optional[str] = None, outputVolume=None, model: Optional[str] = None,
                device: str = "auto", waitForCompletion: bool = True, progressCallback=None,
                completedCallback=None, **options):
        """Restore ``inputVolume`` in a worker process; see the class docstring.

        ``options``: ``scale`` (MRI 1, 2, 4), ``steps``, ``fidelity``, ``seed``, ``samples`` (>1 adds an
        uncertainty map), ``self_ensemble`` (average the 8 flips/rotations, 8x the time), ``tile_size``.
        Blocking (default): returns the output node, raises on error
        (``WorkerError.kind`` says why: input, weights, no_gpu, out_of_memory, cancelled, internal).
        Non-blocking: returns the running ``SlicerJob``; ``completedCallback(job)`` is called when it
        ends, with ``job.outputNode`` or ``job.error`` set.
        """
        mrml.check_input_node(inputVolume)
        mrml.check_output_node(outputVolume, inputVolume)
        task = get_task(task).name if task else mrml.suggest_task(inputVolume).task
        if not self.ensureDependencies():
            raise RuntimeError(_("DiffCode Restore cannot run without its Python packages."))
        request = WorkerRequest(action="restore", task=task, model=model or None, device=device, options=options)

        def prepare(worker: WorkerJob) -> None:
            request.input = mrml.write_node_to_file(inputVolume, worker.path("input.nrrd")).as_posix()
            request.output = worker.path("output.nrrd")
            if int(options.get("samples", 1)) > 1:
                request.uncertainty_output = worker.path("uncertainty.nrrd")

        def finished(job: SlicerJob) -> None:
            try:
                outcome = job.worker.outcome()
                job.outputNode = mrml.load_result_file(inputVolume, outcome["output"], task, outcome.get("metadata"),
                                                       outputVolume, outcome.get("uncertainty"))
            except Exception as error:
                job.error = error
            if completedCallback:
                completedCallback(job)

        job = self.startWorker(request, progressCallback, finished, prepare)
        if not waitForCompletion:
            return job
        job.wait()
        if job.error is not None:
            raise job.error
        return job.outputNode

    # -- models -----------------------------------------------------------------------------------
    @staticmethod
    def catalog():
        from DiffCodeRestoreLib import hub

        return hub.Catalog.load()

    def modelStatuses(self):
        """``hub.ModelStatus`` per catalog model (cached / bundled / to download)."""
        from DiffCodeRestoreLib import hub

        return hub.model_status(self.catalog())

    def downloadModel(self, name: Optional[str] = None, onEvent=None, onFinished=None) -> SlicerJob:
        """Download (or verify the cached copy of) a catalog model in a worker; cancellable."""
        return self.startWorker(WorkerRequest(action="download", model=name or None), onEvent, onFinished)

    def importWeights(self, path: str):
        """Import a weights file (and a ``config.json`` beside it) into the cache, checked by SHA-256."""
        from DiffCodeRestoreLib import hub

        entry, missing = hub.import_weights(path)
        sibling = os.path.join(os.path.dirname(path), "config.json")
        if "config.json" in missing and os.path.isfile(sibling):
            entry, missing = hub.import_weights(sibling)
        return entry, missing

    def deleteCachedModel(self, name: Optional[str] = None) -> bool:
        from DiffCodeRestoreLib import hub

        return hub.clear_cache(self.catalog().get(name or None))

    def cacheFolder(self, name: Optional[str] = None) -> str:
        from DiffCodeRestoreLib import hub

        folder = hub.repo_cache_folder(self.catalog().get(name or None))
        return str(folder if folder.exists() else hub.hub_cache_dir())

    # -- showing and measuring --------------------------------------------------------------------
    @staticmethod
    def showComparison(inputVolume, resultVolume, fade: float = 0.0) -> None:
        """Input (left, with the result faded in by ``fade``) and result (right) in linked slice views."""
        layoutManager = slicer.app.layoutManager()
        layoutNode = layoutManager.layoutLogic().GetLayoutNode()
        views = "".join(
            f'<item><view class="vtkMRMLSliceNode" singletontag="{name}">'
            f'<property name="orientation" action="default">Axial</property>'
            f'<property name="viewlabel" action="default">{label}</property>'
            f'<property name="viewcolor" action="default">{color}</property></view></item>'
            for name, label, color in zip(COMPARE_VIEWS, ("In", "Out"), ("#F34A33", "#EDD54C"))
        )
        description = f'<layout type="horizontal" split="true">{views}</layout>'
        if layoutNode.IsLayoutDescription(COMPARE_LAYOUT_ID):
            layoutNode.SetLayoutDescription(COMPARE_LAYOUT_ID, description)
        else:
            layoutNode.AddLayoutDescription(COMPARE_LAYOUT_ID, description)
        layoutManager.setLayout(COMPARE_LAYOUT_ID)
        layers = {COMPARE_VIEWS[0]: (inputVolume, resultVolume, fade), COMPARE_VIEWS[1]: (resultVolume, None, 0.0)}
        for name, (background, foreground, opacity) in layers.items():
            sliceWidget = layoutManager.sliceWidget(name)
            composite = sliceWidget.mrmlSliceCompositeNode()
            composite.SetBackgroundVolumeID(background.GetID())
            composite.SetForegroundVolumeID(foreground.GetID() if foreground else None)
            composite.SetForegroundOpacity(opacity)
            composite.SetLinkedControl(True)
            sliceWidget.sliceLogic().FitSliceToAll()

    @staticmethod
    def setFade(inputVolume, resultVolume, fade: float) -> None:
        """Blend the result over the input in every slice view except the compare layout's result view."""
        layoutManager = slicer.app.layoutManager()
        for name in layoutManager.sliceViewNames():
            if name == COMPARE_VIEWS[1]:
                continue
            composite = layoutManager.sliceWidget(name).mrmlSliceCompositeNode()
            composite.SetBackgroundVolumeID(inputVolume.GetID())
            composite.SetForegroundVolumeID(resultVolume.GetID())
            composite.SetForegroundOpacity(fade)

    def computeMetrics(self, resultVolume, referenceVolume, task: str, inputVolume=None) -> Dict[str, Any]:
        """PSNR/SSIM of the result (and of the input, when on the same grid) against the reference."""
        if not self.ensureDependencies(METRICS_PACKAGES, withTorch=False):
            raise RuntimeError(_("PSNR/SSIM need scikit-image, which was not installed."))
        scores = {"result": mrml.compare_to_reference(resultVolume, referenceVolume, task)}
        if inputVolume is not None:
            try:
                scores["input"] = mrml.compare_to_reference(inputVolume, referenceVolume, task)
            except mrml.VolumeNodeError:  # e.g. MRI super-resolution: the input is on a coarser grid
                pass
        return scores


#
# DiffCodeRestoreWidget
#


class DiffCodeRestoreWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job: Optional[SlicerJob] = None
        self._lastInputID = None
        self._lastResult = None
        self._suggestedForID = None
        self._modelStatuses: Dict[str, Any] = {}
        self._probeJob: Optional[SlicerJob] = None

    # -- set-up -----------------------------------------------------------------------------------
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DiffCodeRestore.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DiffCodeRestoreLogic()

        self.ui.progressBar.setRange(0, 1000)
        self.ui.progressBar.hide()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputVolumeChanged)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelSelected)
        self.ui.downloadModelButton.connect("clicked(bool)", self.onDownloadModel)
        self.ui.importWeightsButton.connect("clicked(bool)", self.onImportWeights)
        self.ui.openCacheFolderButton.connect("clicked(bool)", self.onOpenCacheFolder)
        self.ui.deleteCachedModelButton.connect("clicked(bool)", self.onDeleteCachedModel)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.fadeSliderWidget.connect("valueChanged(double)", self.onFade)
        self.ui.computeMetricsButton.connect("clicked(bool)", self.onComputeMetrics)

        self.initializeParameterNode()
        self.refreshModels()
        self.probeDevices()

    def cleanup(self) -> None:
        for job in (self._job, self._probeJob):
            if job is not None and job.running:
                job.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            candidate = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if candidate and not candidate.GetAttribute(mrml.ATTRIBUTE_PREFIX + "task"):
                self._parameterNode.inputVolume = candidate

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
            self.updateGUI()

    # -- state shown in the panel -----------------------------------------------------------------
    def resultVolume(self):
        """The volume to compare/measure: the chosen output, else the last result of this input."""
        parameters = self._parameterNode
        if parameters and parameters.outputVolume:
            return parameters.outputVolume
        inputVolume = parameters.inputVolume if parameters else None
        sameInput = inputVolume is not None and inputVolume.GetID() == self._lastInputID
        return self._lastResult if sameInput and self._lastResult and self._lastResult.GetScene() else None

    def updateGUI(self, caller=None, event=None) -> None:
        parameters = self._parameterNode
        if parameters is None:
            return
        running = self._job is not None
        isMri = parameters.task == RestoreTask.MRI_SR
        self.ui.scaleLabel.setVisible(isMri)
        self.ui.scaleComboBox.setVisible(isMri)
        for widget in (self.ui.stepsSpinBox, self.ui.fidelitySliderWidget, self.ui.stepsLabel, self.ui.fidelityLabel):
            widget.setEnabled(not parameters.useModelDefaults)
        self.ui.samplesSpinBox.setEnabled(parameters.uncertaintyMap)
        self.ui.samplesLabel.setEnabled(parameters.uncertaintyMap)
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.applyButton.enabled = running or parameters.inputVolume is not None
        self.ui.applyButton.toolTip = _("Stop the running job; nothing is changed.") if running else _(
            "Restore the input volume. While running, this button cancels.")
        for widget in (self.ui.inputsCollapsibleButton, self.ui.modelCollapsibleButton,
                       self.ui.advancedCollapsibleButton):
            widget.setEnabled(not running)
        result = self.resultVolume()
        self.ui.compareButton.enabled = result is not None and parameters.inputVolume is not None
        self.ui.fadeSliderWidget.enabled = self.ui.compareButton.enabled
        self.ui.computeMetricsButton.enabled = result is not None and parameters.referenceVolume is not None
        if self.ui.modelComboBox.currentData != parameters.model:
            index = self.ui.modelComboBox.findData(parameters.model)
            if index >= 0:
                self.ui.modelComboBox.setCurrentIndex(index)

    def onInputVolumeChanged(self, node) -> None:
        """Suggest the task for a newly chosen volume (the user can still change it)."""
        if node is None or self._parameterNode is None:
            self.ui.taskSuggestionLabel.text = ""
            return
        if node.GetID() == self._suggestedForID:  # the same volume again (e.g. the panel re-entered)
            return
        self._suggestedForID = node.GetID()
        try:
            suggestion = mrml.suggest_task(node)
        except mrml.VolumeNodeError as error:
            self.ui.taskSuggestionLabel.text = str(error)
            return
        self._parameterNode.task = RestoreTask(suggestion.task)
        self.ui.taskSuggestionLabel.text = _("Suggested: {task} ({reason}).").format(
            task=get_task(suggestion.task).title, reason=suggestion.reason)

    # -- models and devices -----------------------------------------------------------------------
    def refreshModels(self) -> None:
        combo = self.ui.modelComboBox
        combo.blockSignals(True)
        combo.clear()
        try:
            statuses = self.logic.modelStatuses()
            default = self.logic.catalog().default
            for status in statuses:
                entry = status.entry
                text = f"{entry.name} ({status.state}, {entry.size / 2**20:.0f} MB)"
                combo.addItem(text, "" if entry.name == default else entry.name)
                combo.setItemData(combo.count - 1, entry.description, qt.Qt.ToolTipRole)
            self._modelStatuses = {status.entry.name: status for status in statuses}
            if not statuses:
                combo.addItem(_("no model in the catalog: import weights"), "")
        except ImportError:  # huggingface_hub not installed yet: it is installed on first use
            self._modelStatuses = {}
            combo.addItem(_("default model (installs dependencies on first use)"), "")
        except Exception as error:
            self._modelStatuses = {}
            combo.addItem(_("default model"), "")
            self.ui.modelStatusLabel.text = str(error)
        combo.blockSignals(False)
        self.updateGUI()
        self.onModelSelected()

    def selectedModelStatus(self):
        name = self.ui.modelComboBox.currentData or None
        statuses = self._modelStatuses
        if name is None and statuses:
            try:
                name = self.logic.catalog().default
            except Exception:
                return None
        return statuses.get(name)

    def onModelSelected(self, index=None) -> None:
        if self._parameterNode is not None and self.ui.modelComboBox.currentData is not None:
            self._parameterNode.model = self.ui.modelComboBox.currentData
        status = self.selectedModelStatus()
        if status is None:
            self.ui.modelStatusLabel.text = ""
            return
        entry = status.entry
        where = {
            "cached": _("Downloaded and ready."),
            "bundled": _("Bundled with the extension; works offline."),
            "to download": _("Will be downloaded on first use ({size:.0f} MB).").format(size=entry.size / 2**20),
        }[status.state]
        self.ui.modelStatusLabel.text = _("{where} Tasks: {tasks}. Licence: {licence}.").format(
            where=where, tasks=", ".join(entry.tasks), licence=entry.licence or "-")
        self.ui.deleteCachedModelButton.enabled = status.cached
        self.ui.downloadModelButton.text = _("Verify") if status.cached else _("Download")

    def probeDevices(self) -> None:
        """Ask a worker what torch sees (kept out of Slicer's process), shown beside the device choice."""
        if not self.logic.torchInstalled():
            self.ui.deviceInfoLabel.text = _("PyTorch is not installed yet; it is installed on first use.")
            return

        def onEvent(event):
            if event.get("event") != "probe":
                return
            gpus = ", ".join(f"{gpu['name']} ({gpu['memory_gib']} GiB)" for gpu in event.get("gpus", []))
            found = gpus or (_("Apple GPU (MPS)") if event.get("mps") else _("no GPU usable by PyTorch"))
            self.ui.deviceInfoLabel.text = _("Found: {found}. 'auto' uses {auto}; PyTorch {torch}.").format(
                found=found, auto=event.get("auto"), torch=event.get("torch"))

        def onFinished(job):
            if job.worker.returncode not in (0, None) and not self.ui.deviceInfoLabel.text:
                self.ui.deviceInfoLabel.text = _("Could not query the GPU: {error}").format(
                    error=(job.worker.error_lines or ["unknown error"])[-1])

        try:
            self._probeJob = self.logic.startWorker(WorkerRequest(action="probe"), onEvent, onFinished)
        except RuntimeError as error:
            self.ui.deviceInfoLabel.text = str(error)

    # -- running ----------------------------------------------------------------------------------
    def restoreOptions(self) -> Dict[str, Any]:
        parameters = self._parameterNode
        options: Dict[str, Any] = {"seed": parameters.seed}
        if parameters.task == RestoreTask.MRI_SR:
            options["scale"] = parameters.scale
        if not parameters.useModelDefaults:
            options.update(steps=parameters.steps, fidelity=parameters.fidelity)
        if parameters.tileSize:
            options["tile_size"] = parameters.tileSize
        if parameters.uncertaintyMap:
            options["samples"] = parameters.samples
        if parameters.selfEnsemble:
            options["self_ensemble"] = True
        return options

    def setRunning(self, job: Optional[SlicerJob], status: str = "") -> None:
        self._job = job
        self.ui.progressBar.setVisible(job is not None)
        self.ui.progressBar.value = 0
        if status:
            self.ui.statusLabel.text = status
        self.updateGUI()

    def onWorkerEvent(self, event: Dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.ui.progressBar.value = int(1000 * float(event.get("fraction", 0.0)))
        if kind in ("progress", "status", "warning") and event.get("message"):
            self.ui.statusLabel.text = event["message"]
        if kind == "warning":
            logging.warning(f"DiffCode Restore: {event.get('message')}")

    def onApplyButton(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.ui.statusLabel.text = _("Cancelling...")
            return
        parameters = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not start the restoration."), waitCursor=True):
            inputVolume, task = parameters.inputVolume, parameters.task.value
            job = self.logic.process(
                inputVolume, task, parameters.outputVolume, model=parameters.model or None, device=parameters.device,
                waitForCompletion=False, progressCallback=self.onWorkerEvent,
                completedCallback=lambda finishedJob: self.onRestoreFinished(finishedJob, inputVolume, task),
                **self.restoreOptions())
            self.setRunning(job, _("Starting ({task})...").format(task=get_task(task).title))

    def onRestoreFinished(self, job: SlicerJob, inputVolume, task: str) -> None:
        self.setRunning(None)
        self.refreshModels()  # a first run may have downloaded the weights
        error = job.error
        if error is None:
            self._lastInputID, self._lastResult = inputVolume.GetID(), job.outputNode
            slicer.util.setSliceViewerLayers(background=job.outputNode, foreground=None, fit=True)
            self.ui.statusLabel.text = _("Done in {seconds:.1f} s: '{name}'.").format(
                seconds=job.elapsed, name=job.outputNode.GetName())
            self.updateGUI()
            if self._parameterNode.referenceVolume is not None and not self.logic.missingPackages(METRICS_PACKAGES):
                self.onComputeMetrics()
            return
        kind = getattr(error, "kind", "internal")
        if kind == "cancelled":
            self.ui.statusLabel.text = _("Cancelled; nothing was changed.")
            return
        self.ui.statusLabel.text = str(error)
        if kind in ("out_of_memory", "no_gpu") and self._parameterNode.device != "cpu":
            question = {
                "out_of_memory": _("The GPU ran out of memory:\n{error}\n\nRestore on the CPU instead (slower)?"),
                "no_gpu": _("No usable GPU was found:\n{error}\n\nRestore on the CPU instead (slower)?"),
            }[kind].format(error=error)
            if slicer.util.confirmYesNoDisplay(question):
                self._parameterNode.device = "cpu"
                self.onApplyButton()
            return
        slicer.util.errorDisplay(str(error), windowTitle=_("DiffCode Restore"))

    # -- model buttons ----------------------------------------------------------------------------
    def onDownloadModel(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not start the download."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return

            def finished(job):
                self.setRunning(None)
                self.refreshModels()
                try:
                    outcome = job.worker.outcome()
                    self.ui.statusLabel.text = _("Weights ready ({source}): {folder}").format(
                        source=outcome.get("source"), folder=outcome.get("folder"))
                except WorkerError as error:
                    self.ui.statusLabel.text = str(error)
                    if error.kind != "cancelled":
                        slicer.util.errorDisplay(str(error), windowTitle=_("DiffCode Restore"))

            job = self.logic.downloadModel(self._parameterNode.model or None, self.onWorkerEvent, finished)
            self.setRunning(job, _("Fetching weights..."))

    def onImportWeights(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Import model weights"), "",
            _("Model weights (*.safetensors config.json);;All files (*)"))
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not import the weights."), waitCursor=True):
            if not self.logic.ensureDependencies(withTorch=False):
                return
            entry, missing = self.logic.importWeights(path)
            self.refreshModels()
            note = _(" Still missing: {files}.").format(files=", ".join(missing)) if missing else ""
            self.ui.statusLabel.text = _("Imported weights of '{name}'.").format(name=entry.name) + note

    def onOpenCacheFolder(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not open the cache folder.")):
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(self.logic.cacheFolder(self._parameterNode.model)))

    def onDeleteCachedModel(self) -> None:
        status = self.selectedModelStatus()
        if status is None or not slicer.util.confirmOkCancelDisplay(
                _("Delete the downloaded weights of '{name}'? They are downloaded again when needed.").format(
                    name=status.entry.name)):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not delete the cached weights.")):
            self.logic.deleteCachedModel(status.entry.name)
            self.refreshModels()

    # -- compare and measure ----------------------------------------------------------------------
    def onCompare(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not show the comparison.")):
            self.logic.showComparison(self._parameterNode.inputVolume, self.resultVolume(),
                                      self.ui.fadeSliderWidget.value)

    def onFade(self, value: float) -> None:
        result, inputVolume = self.resultVolume(), self._parameterNode.inputVolume if self._parameterNode else None
        if result is not None and inputVolume is not None:
            self.logic.setFade(inputVolume, result, value)

    def onComputeMetrics(self) -> None:
        parameters = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not compute PSNR/SSIM."), waitCursor=True):
            scores = self.logic.computeMetrics(self.resultVolume(), parameters.referenceVolume,
                                               parameters.task.value, parameters.inputVolume)
            lines = [
                _("{which} vs reference: PSNR {psnr:.2f} dB, SSIM {ssim:.4f}").format(
                    which=_("Result") if which == "result" else _("Input"), psnr=score.psnr, ssim=score.ssim)
                for which, score in scores.items()
            ]
            self.ui.metricsLabel.text = "\n".join(lines)


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
        if logic.missingPackages() or not logic.torchInstalled():
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
