"""The module's panel: Qt and MRML glue only.

Why apart from the module file: the module file stays a thin entry point (description, this widget,
the logic, the self-test), as Slicer's best extensions do. Every decision the panel makes that can go
wrong without Qt (what Apply shows, what follows a run, the parameter-node binding, which model buttons
apply) lives in ``panel.py`` and is tested without Slicer; this file maps those answers to widgets.
"""

import logging
import os
from typing import Any, Dict, List, Optional

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from DiffCodeRestoreLib import mrml
from DiffCodeRestoreLib.tasks import get_task
from DiffCodeRestoreLib.worker import WorkerError, WorkerRequest
from DiffCodeRestoreSlicerLib.job import PolledJob
from DiffCodeRestoreSlicerLib.logic import DiffCodeRestoreLogic
from DiffCodeRestoreSlicerLib.panel import ParameterNodeBinding, apply_state, model_buttons, restore_follow_up
from DiffCodeRestoreSlicerLib.parameters import RestoreTask


class DiffCodeRestoreWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        # State first: without a parent, the base class runs setup() inside its __init__.
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._binding = ParameterNodeBinding(
            lambda node: node.connectGui(self.ui),
            lambda node, tag: node.disconnectGui(tag),
            lambda node: self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUI),
            lambda node: self.removeObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUI),
        )
        self._job: Optional[PolledJob] = None
        self._lastInputID = None
        self._lastResult = None
        self._suggestedForID = None
        self._modelStatuses: Dict[str, Any] = {}
        self._localModels: Dict[str, Any] = {}
        self._adaptJob: Optional[PolledJob] = None
        self._probeJob: Optional[PolledJob] = None
        self._probedWithTorch = False
        ScriptedLoadableModuleWidget.__init__(self, parent)

    @property
    def _parameterNode(self):
        """The bound parameter node; None while the scene is being closed (and after, if not shown)."""
        return self._binding.node

    # -- set-up -----------------------------------------------------------------------------------
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DiffCodeRestore.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DiffCodeRestoreLogic()
        self.logic.installer.on_busy.append(self.onInstallBusy)
        self.logic.installer.on_installed.append(self.onInstalled)

        self.ui.progressBar.setRange(0, 1000)
        self.ui.progressBar.hide()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.adaptButton.connect("clicked(bool)", self.onAdaptButton)
        self.ui.adaptVolumesSelector.setMRMLScene(slicer.mrmlScene)
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
        """Stop this panel's workers now and delete their folders (they hold a copy of the input)."""
        for job in (self._job, self._probeJob):
            if job is not None:
                job.close()
        self._job = self._probeJob = None
        if self.logic is not None:
            for listeners, callback in ((self.logic.installer.on_busy, self.onInstallBusy),
                                        (self.logic.installer.on_installed, self.onInstalled)):
                if callback in listeners:
                    listeners.remove(callback)
        self._binding.unbind()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        if not self._probedWithTorch and self.logic.torchInstalled():  # installed elsewhere meanwhile
            self.probeDevices()

    def exit(self) -> None:
        self._binding.release()

    def onSceneStartClose(self, caller, event) -> None:
        self._binding.unbind()
        self.updateGUI()

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
        self._binding.bind(parameterNode)
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
        installing = self.logic.installer.busy if self.logic else None
        job = self._job
        state = apply_state(job is not None, installing, parameters is not None and parameters.inputVolume is not None,
                            cancelling=job is not None and job.cancelling)
        self.ui.applyButton.text = {
            "apply": _("Apply"), "cancel": _("Cancel"), "cancelling": _("Cancelling..."),
            "installing": _("Installing..."),
        }[state.mode]
        self.ui.applyButton.enabled = state.enabled
        self.ui.applyButton.toolTip = {
            "apply": _("Restore the input volume. While running, this button cancels."),
            "cancel": _("Stop the running job; nothing is changed."),
            "cancelling": _("The worker was asked to stop; it is stopped for good in a few seconds."),
            "installing": _("Python packages are being installed: {what}").format(what=installing),
        }[state.mode]
        for widget in (self.ui.inputsCollapsibleButton, self.ui.modelCollapsibleButton,
                       self.ui.advancedCollapsibleButton):
            widget.setEnabled(job is None and not installing)
        adapting = job is not None and job is self._adaptJob
        self.ui.adaptButton.text = _("Cancel adaptation") if adapting else _("Adapt")
        self.ui.adaptButton.enabled = not installing and (adapting or job is None)
        if parameters is None:
            return
        isMri = parameters.task == RestoreTask.MRI_SR
        self.ui.scaleLabel.setVisible(isMri)
        self.ui.scaleComboBox.setVisible(isMri)
        for widget in (self.ui.stepsSpinBox, self.ui.fidelitySliderWidget, self.ui.stepsLabel, self.ui.fidelityLabel):
            widget.setEnabled(not parameters.useModelDefaults)
        self.ui.samplesSpinBox.setEnabled(parameters.uncertaintyMap)
        self.ui.samplesLabel.setEnabled(parameters.uncertaintyMap)
        result = self.resultVolume()
        self.ui.compareButton.enabled = result is not None and parameters.inputVolume is not None
        self.ui.fadeSliderWidget.enabled = self.ui.compareButton.enabled
        self.ui.computeMetricsButton.enabled = result is not None and parameters.referenceVolume is not None
        if self.ui.modelComboBox.currentData != parameters.model:
            index = self.ui.modelComboBox.findData(parameters.model)
            if index >= 0:
                self.ui.modelComboBox.setCurrentIndex(index)

    def onInstallBusy(self, what: Optional[str]) -> None:
        """Packages start or stop installing: Apply is disabled meanwhile and the status says what."""
        if what:
            self.ui.statusLabel.text = _("Installing {what}... (details in the Python console)").format(what=what)
        self.updateGUI()
        if what:
            slicer.app.processEvents()  # show it before pip blocks; Apply is already disabled

    def onInstalled(self, names: List[str]) -> None:
        """New packages are in Slicer's Python: the model list and the device line can now say more."""
        self.ui.statusLabel.text = _("Installed: {names}.").format(names=", ".join(names))
        self.refreshModels()
        if "torch" in names:
            self.probeDevices()

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
            self._localModels = {model.name: model for model in self.logic.localModels()}
            for model in self._localModels.values():  # adapted to a scanner here, or imported
                combo.addItem(_("{name} (yours: {summary})").format(name=model.name, summary=model.summary), model.name)
            if not statuses and not self._localModels:
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
        local = self._localModels.get(self.ui.modelComboBox.currentData or "")
        if status is None:
            self.ui.modelStatusLabel.text = _("Your model in {folder}: {summary}.").format(
                folder=local.folder, summary=local.summary) if local else ""
            self.ui.deleteCachedModelButton.enabled = False
            return
        entry = status.entry
        where = {
            "cached": _("Downloaded and ready."),
            "bundled": _("Bundled with the extension; works offline."),
            "to download": _("Will be downloaded on first use ({size:.0f} MB).").format(size=entry.size / 2**20),
        }[status.state]
        buttons = model_buttons(status)
        damage = {
            "cache": _("The downloaded copy is damaged ({what}): click 'Delete cached', then 'Download' or "
                       "'Import weights...'. ").format(what="; ".join(status.cache_damage)),
            "bundled": _("The bundled copy is damaged ({what}): reinstall the extension or use 'Import "
                         "weights...'. ").format(what="; ".join(status.bundled_damage)),
        }.get(buttons.damaged, "")
        self.ui.modelStatusLabel.text = damage + _("{where} Tasks: {tasks}. Licence: {licence}.").format(
            where=where, tasks=", ".join(entry.tasks), licence=entry.licence or "-")
        self.ui.deleteCachedModelButton.enabled = buttons.can_delete
        self.ui.downloadModelButton.text = _("Verify") if buttons.verify else _("Download")

    def probeDevices(self) -> None:
        """Ask a worker what torch sees (kept out of Slicer's process), shown beside the device choice.

        Run at set-up and again once torch has been installed, so the line is right without a restart.
        """
        if self._probeJob is not None:
            self._probeJob.close()
            self._probeJob = None
        self._probedWithTorch = self.logic.torchInstalled()
        if not self._probedWithTorch:
            self.ui.deviceInfoLabel.text = _("PyTorch is not installed yet; it is installed on first use.")
            return
        self.ui.deviceInfoLabel.text = _("Looking for GPUs...")

        def onEvent(event):
            if event.get("event") != "probe":
                return
            gpus = ", ".join(f"{gpu['name']} ({gpu['memory_gib']} GiB)" for gpu in event.get("gpus", []))
            found = gpus or (_("Apple GPU (MPS)") if event.get("mps") else _("no GPU usable by PyTorch"))
            self.ui.deviceInfoLabel.text = _("Found: {found}. 'auto' uses {auto}; PyTorch {torch}.").format(
                found=found, auto=event.get("auto"), torch=event.get("torch"))

        def onFinished(job):
            if self._probeJob is job:
                self._probeJob = None
            if job.worker.returncode not in (0, None):
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

    def setRunning(self, job: Optional[PolledJob], status: str = "") -> None:
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
        if self.logic.installer.busy:  # a click that reached us while pip runs: never a second install
            return
        if self._job is not None:
            self._job.cancel()
            self.ui.statusLabel.text = _("Cancelling...")
            self.updateGUI()
            return
        parameters = self._parameterNode
        if parameters is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not start the restoration."), waitCursor=True):
            inputVolume, task = parameters.inputVolume, parameters.task.value
            job = self.logic.process(
                inputVolume, task, parameters.outputVolume, model=parameters.model or None, device=parameters.device,
                waitForCompletion=False, progressCallback=self.onWorkerEvent,
                completedCallback=lambda finishedJob: self.onRestoreFinished(finishedJob, inputVolume, task),
                **self.restoreOptions())
            self.setRunning(job, _("Starting ({task})...").format(task=get_task(task).title))

    def onRestoreFinished(self, job: PolledJob, inputVolume, task: str) -> None:
        """The run has ended. The scene may have been closed meanwhile (no parameter node then):
        ``restore_follow_up`` decides from what is there now."""
        self.setRunning(None)
        self.refreshModels()  # a first run may have downloaded the weights
        error = job.error
        parameters = self._parameterNode
        kind = None if error is None else getattr(error, "kind", "internal")
        followUp = restore_follow_up(kind, parameters, self.logic.metricsAvailable())
        if error is None:
            self._lastInputID, self._lastResult = inputVolume.GetID(), job.outputNode
            slicer.util.setSliceViewerLayers(background=job.outputNode, foreground=None, fit=True)
            self.ui.statusLabel.text = _("Done in {seconds:.1f} s: '{name}'.").format(
                seconds=job.elapsed, name=job.outputNode.GetName())
            self.updateGUI()
            if followUp.compute_metrics:
                self.onComputeMetrics()
            return
        if kind == "cancelled":
            self.ui.statusLabel.text = _("Cancelled; nothing was changed.")
            return
        self.ui.statusLabel.text = str(error)
        if followUp.offer_cpu:
            question = {
                "out_of_memory": _("The GPU ran out of memory:\n{error}\n\nRestore on the CPU instead (slower)?"),
                "no_gpu": _("No usable GPU was found:\n{error}\n\nRestore on the CPU instead (slower)?"),
            }[kind].format(error=error)
            if slicer.util.confirmYesNoDisplay(question) and self._parameterNode is parameters:
                parameters.device = "cpu"
                self.onApplyButton()
        elif followUp.show_error:
            slicer.util.errorDisplay(str(error), windowTitle=_("DiffCode Restore"))

    # -- adapting to the user's scanner ------------------------------------------------------------
    def onAdaptButton(self) -> None:
        """Start an adaptation in a worker (progress and Cancel like a restore), or cancel the running one."""
        if self.logic.installer.busy:
            return
        if self._job is not None:
            if self._job is self._adaptJob:
                self._job.cancel()
                self.ui.statusLabel.text = _("Cancelling; the best model so far stays for resuming...")
                self.updateGUI()
            return
        parameters = self._parameterNode
        if parameters is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not start the adaptation."), waitCursor=True):
            task = parameters.task.value
            name = self.ui.adaptNameLineEdit.text.strip() or f"my-{task}"
            job = self.logic.adapt(list(self.ui.adaptVolumesSelector.checkedNodes()), task, name,
                                   minutes=self.ui.adaptMinutesSpinBox.value,
                                   level=self.ui.adaptLevelSpinBox.value or None, model=parameters.model or None,
                                   device=parameters.device, waitForCompletion=False,
                                   progressCallback=self.onWorkerEvent, completedCallback=self.onAdaptFinished)
            self._adaptJob = job
            self.ui.adaptResultLabel.text = ""
            self.setRunning(job, _("Adapting to your scans ({task})...").format(task=get_task(task).title))

    def onAdaptFinished(self, job: PolledJob) -> None:
        """Show the held-out figures and offer the new model; the scene may have been closed meanwhile."""
        self._adaptJob = None
        self.setRunning(None)
        self.refreshModels()
        error = job.error
        kind = None if error is None else getattr(error, "kind", "internal")
        if error is None:
            name = os.path.basename(job.result.get("folder", ""))
            self.ui.adaptResultLabel.text = _("New model '{name}' ({gain:+.2f} dB over its base on held-out slices; "
                                              "chosen in Model above):\n{table}").format(
                name=name, gain=job.result.get("gain_db", 0.0), table=job.result.get("table", ""))
            self.ui.statusLabel.text = _("Adapted in {minutes:.1f} min.").format(minutes=job.elapsed / 60)
            index = self.ui.modelComboBox.findData(name)
            if index >= 0:
                self.ui.modelComboBox.setCurrentIndex(index)
            return
        if kind == "cancelled":
            self.ui.statusLabel.text = _("Adaptation cancelled; adapt again with the same settings to resume.")
            return
        self.ui.adaptResultLabel.text = str(error)
        self.ui.statusLabel.text = str(error)
        if kind not in ("refused", "input"):
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

            model = self._parameterNode.model if self._parameterNode else None
            job = self.logic.downloadModel(model or None, self.onWorkerEvent, finished)
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
        """Works before the first install: the folder is known without huggingface_hub."""
        with slicer.util.tryWithErrorDisplay(_("Could not open the cache folder.")):
            model = self._parameterNode.model if self._parameterNode else None
            folder = self.logic.cacheFolder(model or None)
            self.ui.statusLabel.text = _("Weights are kept in {folder}").format(folder=folder)
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(folder))

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
        if self._parameterNode is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not show the comparison.")):
            self.logic.showComparison(self._parameterNode.inputVolume, self.resultVolume(),
                                      self.ui.fadeSliderWidget.value)

    def onFade(self, value: float) -> None:
        result, inputVolume = self.resultVolume(), self._parameterNode.inputVolume if self._parameterNode else None
        if result is not None and inputVolume is not None:
            self.logic.setFade(inputVolume, result, value)

    def onComputeMetrics(self) -> None:
        parameters = self._parameterNode
        if parameters is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not compute PSNR/SSIM."), waitCursor=True):
            scores = self.logic.computeMetrics(self.resultVolume(), parameters.referenceVolume,
                                               parameters.task.value, parameters.inputVolume)
            lines = [
                _("{which} vs reference: PSNR {psnr:.2f} dB, SSIM {ssim:.4f}").format(
                    which=_("Result") if which == "result" else _("Input"), psnr=score.psnr, ssim=score.ssim)
                for which, score in scores.items()
            ]
            self.ui.metricsLabel.text = "\n".join(lines)
