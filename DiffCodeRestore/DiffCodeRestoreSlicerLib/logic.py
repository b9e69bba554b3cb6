"""The module's logic: everything the panel does, callable from Slicer's Python console for batch use.

Blocking by default::

    logic = slicer.util.getModuleLogic("DiffCodeRestore")   # or DiffCodeRestoreLogic()
    output = logic.process(inputVolume)                      # task suggested from the volume
    output = logic.process(inputVolume, "mri-sr", scale=2)   # exact 2x finer in-plane grid

Why here and not in the module file: the module file stays a thin panel; the Qt-free decisions this
logic relies on (``install``, ``job``, ``cache``) are tested without Slicer.
"""

import importlib.util
import logging
import shutil
import subprocess
from typing import Any, Dict, List, Optional

import qt
import slicer
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from DiffCodeRestoreLib import mrml
from DiffCodeRestoreLib.tasks import get_task
from DiffCodeRestoreLib.worker import WorkerJob, WorkerRequest, sweep_stale_workdirs

from .cache import default_hub_cache_dir, model_cache_folder
from .install import LIGHT_THE_TORCH, DependencyInstaller, adapt_requirements, install_torch, metrics_requirements
from .job import JOBS, PolledJob, WorkerRunner
from .parameters import DiffCodeRestoreParameterNode

COMPARE_VIEWS = ("DiffCodeInput", "DiffCodeResult")
REQUESTER = "DiffCode Restore"

_installer: Optional[DependencyInstaller] = None


def _qtTimer(intervalMs: int, callback) -> "qt.QTimer":
    timer = qt.QTimer()
    timer.setInterval(intervalMs)
    timer.connect("timeout()", callback)
    return timer


def _confirmInstall(wanted: List[str]) -> bool:
    return slicer.util.confirmOkCancelDisplay(
        _("DiffCode Restore needs these Python packages, which are not installed yet (or too old):\n\n"
          "{packages}\n\nInstall them now? This needs an internet connection and can take several minutes.").format(
            packages="\n".join(wanted)),
        _("Install dependencies"),
    )


def _pipInstall(requirements: List[str]) -> None:
    """Slicer 5.12+: ``slicer.packaging.pip_ensure`` (progress dialog, restart prompt); older: pip_install."""
    try:
        try:
            import slicer.packaging as packaging

            ensure = packaging.pip_ensure
        except (ImportError, AttributeError):  # Slicer before 5.12
            with slicer.util.WaitCursor():
                slicer.util.pip_install(requirements)
            return
        ensure(requirements, requester=REQUESTER, prompt_install=False)
    except subprocess.CalledProcessError as error:
        raise RuntimeError(_("pip could not install {packages} (exit code {code}): check the internet connection "
                             "and the Python console, then try again.").format(
            packages=", ".join(requirements), code=error.returncode)) from None


def _installTorch(requirement: str) -> None:
    """torch alone, through light-the-torch as the PyTorch extension installs it; never imported here."""
    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        raise RuntimeError(_("The PyTorch extension is missing: install 'PyTorch' from the Extensions Manager, "
                             "restart Slicer and try again.")) from None
    installLightTheTorch = getattr(PyTorchUtils.PyTorchUtilsLogic, "_installLightTheTorch", None)
    if installLightTheTorch is None:
        def installLightTheTorch():
            slicer.util.pip_install(LIGHT_THE_TORCH)
    runModule = getattr(slicer.util, "executePythonModule", None) or slicer.util._executePythonModule
    try:
        with slicer.util.WaitCursor():
            install_torch(requirement, runModule, installLightTheTorch,
                          lambda name: importlib.util.find_spec(name) is not None)
    except subprocess.CalledProcessError as error:
        raise RuntimeError(_("PyTorch ({requirement}) could not be installed (exit code {code}): see the Python "
                             "console, or install it in the PyTorch Utils module, then try again.").format(
            requirement=requirement, code=error.returncode)) from None


def dependencyInstaller() -> DependencyInstaller:
    """One installer for the whole session: the panel and the console share its busy state."""
    global _installer
    if _installer is None:
        _installer = DependencyInstaller(_pipInstall, _installTorch, _confirmInstall)
    return _installer


def cleanupAllJobs() -> None:
    """Stop every running worker and delete its folder (module cleanup, application exit)."""
    JOBS.close_all()


def sweepStaleFolders() -> None:
    """Delete the job folders a crashed or killed Slicer left in the temp folder (patient data)."""
    for folder in sweep_stale_workdirs():
        logging.info(f"DiffCode Restore: removed the stale temporary folder {folder}")


class DiffCodeRestoreLogic(ScriptedLoadableModuleLogic):
    """Everything the panel does, callable from Slicer's Python console; see the module docstring."""

    def getParameterNode(self):
        return DiffCodeRestoreParameterNode(super().getParameterNode())

    # -- dependencies (asked on first use, never at import) ---------------------------------------
    @property
    def installer(self) -> DependencyInstaller:
        return dependencyInstaller()

    def missingPackages(self, extra=(), withTorch: bool = False) -> List[str]:
        """The unmet requirements (versions are compared, nothing is imported)."""
        return self.installer.plan(withTorch, extra).describe()

    def torchInstalled(self) -> bool:
        """torch at the required version, seen from its metadata: it is not imported into Slicer."""
        return self.installer.torch_installed()

    def ensureDependencies(self, extra=(), withTorch: bool = True, askConfirmation: bool = True,
                           includeBase: bool = True) -> bool:
        """Install what is missing after one confirmation; False if the user declines (or in tests).

        ``extra``: further requirements (e.g. ``metrics_requirements()``); ``includeBase=False`` checks
        only those. Raises ``InstallInProgress`` (one line) while another install runs.
        """
        installer = self.installer
        if not installer.busy and not installer.plan(withTorch, extra, includeBase):
            return True
        if not installer.busy and slicer.app.testingEnabled():
            return False
        return installer.ensure(withTorch, extra, askConfirmation, includeBase)

    # -- the worker process -----------------------------------------------------------------------
    @staticmethod
    def pythonExecutable() -> str:
        """Slicer's own Python launcher, so the worker sees the packages installed in Slicer."""
        executable = shutil.which("PythonSlicer")
        if not executable:
            raise RuntimeError(_("PythonSlicer was not found next to Slicer: reinstall Slicer."))
        return executable

    runner: Optional[WorkerRunner] = None  # set one to start workers differently (tests, other hosts)

    def workerRunner(self) -> WorkerRunner:
        """The injected runner, else Slicer's: PythonSlicer, the start-up environment and a QTimer."""
        if self.runner is None:
            self.runner = WorkerRunner(self.pythonExecutable(), slicer.util.startupEnvironment(), _qtTimer)
        return self.runner

    def startWorker(self, request: WorkerRequest, onEvent=None, onFinished=None, prepare=None) -> PolledJob:
        """Start a worker (its folder is removed again if preparing or starting it fails)."""
        return self.workerRunner().start(request, onEvent, onFinished, prepare)

    def process(self, inputVolume, task: Optional[str] = None, outputVolume=None, model: Optional[str] = None,
                device: str = "auto", waitForCompletion: bool = True, progressCallback=None,
                completedCallback=None, **options):
        """Restore ``inputVolume`` in a worker process; see the module docstring.

        ``options``: ``scale`` (MRI 1, 2, 4), ``steps``, ``fidelity``, ``seed``, ``samples`` (>1 adds an
        uncertainty map), ``self_ensemble`` (average the 8 flips/rotations, 8x the time), ``tile_size``.
        Blocking (default): returns the output node, raises on error
        (``WorkerError.kind`` says why: input, weights, no_gpu, out_of_memory, cancelled, internal).
        Non-blocking: returns the running job; ``completedCallback(job)`` is called when it ends,
        with ``job.outputNode`` or ``job.error`` set.
        """
        mrml.check_input_node(inputVolume)
        mrml.check_output_node(outputVolume, inputVolume)
        task = get_task(task).name if task else mrml.suggest_task(inputVolume).task
        if not self.ensureDependencies():
            raise RuntimeError(_("DiffCode Restore cannot run without its Python packages: click Apply again and "
                                 "accept the installation."))
        request = WorkerRequest(action="restore", task=task, model=model or None, device=device, options=options)

        def prepare(worker: WorkerJob) -> None:
            request.input = mrml.write_node_to_file(inputVolume, worker.path("input.nrrd")).as_posix()
            request.output = worker.path("output.nrrd")
            if int(options.get("samples", 1)) > 1:
                request.uncertainty_output = worker.path("uncertainty.nrrd")

        def collect(job: PolledJob) -> None:
            outcome = job.worker.outcome()
            job.outputNode = mrml.load_result_file(inputVolume, outcome["output"], task, outcome.get("metadata"),
                                                   outputVolume, outcome.get("uncertainty"))

        job = self._runWorker(request, prepare, collect, progressCallback, completedCallback, waitForCompletion)
        return job if not waitForCompletion else job.outputNode

    def _runWorker(self, request: WorkerRequest, prepare, collect, progressCallback, completedCallback,
                   waitForCompletion: bool) -> PolledJob:
        """Start a worker; when it ends, ``collect(job)`` takes its outcome (an error lands in ``job.error``)
        and ``completedCallback(job)`` runs. Blocking: waits, and raises the error if there was one."""
        def finished(job: PolledJob) -> None:
            try:
                collect(job)
            except Exception as error:
                job.error = error
            if completedCallback:
                completedCallback(job)

        job = self.startWorker(request, progressCallback, finished, prepare)
        if waitForCompletion:
            job.wait()
            if job.error is not None:
                raise job.error
        return job

    # -- adapting to the user's scanner ------------------------------------------------------------
    def adapt(self, volumeNodes, task: str, name: str, minutes: float = 10.0, level: Optional[float] = None,
              model: Optional[str] = None, device: str = "auto", waitForCompletion: bool = True,
              progressCallback=None, completedCallback=None):
        """Fine-tune the model for ``task`` on high-quality volume nodes, in a worker (``adapt.adapt``).

        The volumes go to the worker as files without their names; the new weights folder is
        ``hub.local_models_dir()/name`` and appears in the model selector. What only adapting needs
        (``Resources/requirements-adapt.txt``: scipy, scikit-image, PyWavelets) is installed with the
        module's packages after one confirmation; declined, a one-line ``RuntimeError`` says so.
        ``level``: the task's degradation (MRI k-space factor, CT photons per ray, PET dose fraction;
        None: the headline).
        Blocking (default): returns the worker's result (``folder``, ``table``, ``gain_db``) and raises
        ``WorkerError`` (``kind`` "refused" when the adapted model was not better than its base).
        Non-blocking: returns the job; ``completedCallback(job)`` gets ``job.result`` or ``job.error``.
        """
        from DiffCodeRestoreLib import hub

        nodes = [node for node in (volumeNodes or []) if node is not None]
        if not nodes:
            raise mrml.VolumeNodeError(_("Check at least one high-quality volume to adapt to."))
        for node in nodes:
            mrml.check_input_node(node)
        task = get_task(task).name
        folder = hub.new_local_model_folder(name)
        needs = adapt_requirements()
        if not self.ensureDependencies(needs):
            raise RuntimeError(_("Adapting to your scans needs Python packages that are not installed ({packages}): "
                                 "click Adapt again and accept the installation.").format(
                packages="; ".join(self.missingPackages(needs, withTorch=True))))
        options: Dict[str, Any] = {"minutes": float(minutes)}
        if level:
            options["level"] = float(level)
        request = WorkerRequest(action="adapt", task=task, output=str(folder), model=model or None, device=device,
                                options=options)

        def prepare(worker: WorkerJob) -> None:  # no names: the files are hq0.nrrd, hq1.nrrd, ...
            request.inputs = [mrml.write_node_to_file(node, worker.path(f"hq{index}.nrrd")).as_posix()
                              for index, node in enumerate(nodes)]

        def collect(job: PolledJob) -> None:
            job.result = job.worker.outcome()

        job = self._runWorker(request, prepare, collect, progressCallback, completedCallback, waitForCompletion)
        return job if not waitForCompletion else job.result

    @staticmethod
    def localModels():
        """Models of one's own (adapted here or imported): ``hub.LocalModel`` each, without huggingface_hub."""
        from DiffCodeRestoreLib import hub

        return hub.local_models()

    # -- models -----------------------------------------------------------------------------------
    @staticmethod
    def catalog():
        from DiffCodeRestoreLib import hub

        return hub.Catalog.load()

    def modelStatuses(self):
        """``hub.ModelStatus`` per catalog model (cached / bundled / to download); needs no huggingface_hub."""
        from DiffCodeRestoreLib import hub

        return hub.model_status(self.catalog(), cache_dir=default_hub_cache_dir())

    def downloadModel(self, name: Optional[str] = None, onEvent=None, onFinished=None) -> PolledJob:
        """Download (or verify the cached copy of) a catalog model in a worker; cancellable."""
        return self.startWorker(WorkerRequest(action="download", model=name or None), onEvent, onFinished)

    def importWeights(self, path: str):
        """Import a weights file (and a ``config.json`` beside it) into the cache, checked by SHA-256."""
        import os

        from DiffCodeRestoreLib import hub

        entry, missing = hub.import_weights(path, cache_dir=default_hub_cache_dir())
        sibling = os.path.join(os.path.dirname(path), "config.json")
        if "config.json" in missing and os.path.isfile(sibling):
            entry, missing = hub.import_weights(sibling, cache_dir=default_hub_cache_dir())
        return entry, missing

    def deleteCachedModel(self, name: Optional[str] = None) -> bool:
        from DiffCodeRestoreLib import hub

        return hub.clear_cache(self.catalog().get(name or None), cache_dir=default_hub_cache_dir())

    def cacheFolder(self, name: Optional[str] = None) -> str:
        """The model's folder in the Hub cache if downloaded, else the cache itself (created if needed,
        so it can be opened before anything was downloaded). Needs no huggingface_hub."""
        folder = model_cache_folder(name, self.catalog())
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    # -- showing and measuring --------------------------------------------------------------------
    @staticmethod
    def showComparison(inputVolume, resultVolume, fade: float = 0.0) -> None:
        """Input (left, with the result faded in by ``fade``) and result (right) in linked slice views.

        Slicer's own CompareVolumes module lays the views out and links them (its user-layout slot,
        the volumes' orientation); only the fade of the result over the input is set here.
        """
        import CompareVolumes

        CompareVolumes.CompareVolumesLogic().viewerPerVolume(
            volumeNodes=[inputVolume, resultVolume], viewNames=list(COMPARE_VIEWS), layout=[1, 2])
        composite = slicer.app.layoutManager().sliceWidget(COMPARE_VIEWS[0]).mrmlSliceCompositeNode()
        composite.SetForegroundVolumeID(resultVolume.GetID())
        composite.SetForegroundOpacity(fade)

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

    def metricsAvailable(self) -> bool:
        return not self.installer.plan(False, metrics_requirements(), include_base=False)

    def computeMetrics(self, resultVolume, referenceVolume, task: str, inputVolume=None) -> Dict[str, Any]:
        """PSNR/SSIM of the result (and of the input, when on the same grid) against the reference."""
        if not self.ensureDependencies(metrics_requirements(), withTorch=False, includeBase=False):
            raise RuntimeError(_("PSNR/SSIM need scikit-image, which was not installed: click Compute again and "
                                 "accept the installation."))
        scores = {"result": mrml.compare_to_reference(resultVolume, referenceVolume, task)}
        if inputVolume is not None:
            try:
                scores["input"] = mrml.compare_to_reference(inputVolume, referenceVolume, task)
            except mrml.VolumeNodeError:  # e.g. MRI super-resolution: the input is on a coarser grid
                pass
        return scores
