"""The Slicer module's own code that runs without the Slicer application (DiffCodeRestoreSlicerLib).

What a Slicer user would meet: one install at a time with Apply disabled meanwhile, packages
checked by version (an old huggingface_hub is upgraded, not kept), torch installed alone and never
imported into Slicer, the device line probed again after the install, the cache folder known before
anything is installed, no AttributeError when the scene was closed during a run, no observer
warnings on re-entry, and no patient data left in the temp folder by a Slicer that quits or fails
to start a worker.
"""

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from DiffCodeRestoreLib.worker import WorkerJob, WorkerRequest
from DiffCodeRestoreSlicerLib import install, panel
from DiffCodeRestoreSlicerLib.install import DependencyInstaller, InstallInProgress, Requirement
from DiffCodeRestoreSlicerLib.job import JobRegistry, PolledJob, WorkerRunner

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "DiffCodeRestore"
REQUIREMENTS = MODULE_DIR / "Resources" / "requirements.txt"
ADAPT_REQUIREMENTS = MODULE_DIR / "Resources" / "requirements-adapt.txt"
ALL_INSTALLED = {"torch": "2.6.0+cu126", "numpy": "1.26.4", "SimpleITK": "2.4.0", "huggingface_hub": "1.2.0",
                 "safetensors": "0.4.5", "tqdm": "4.66.0", "scikit-image": "0.24.0"}


def run_python(code, env=None, timeout=120):
    """Run ``code`` in a fresh interpreter (imports and environment of its own); return stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def make_installer(versions, calls, on_pip=None, on_torch=None):
    def pip_install(requirements):
        calls.append(("pip", list(requirements)))
        if on_pip:
            on_pip()
        for requirement in requirements:
            versions[install.parse_requirement(requirement).name] = "9.0"

    def install_torch(requirement):
        calls.append(("torch", requirement))
        if on_torch:
            on_torch()
        versions["torch"] = "2.12.1"

    return DependencyInstaller(pip_install, install_torch, lambda wanted: calls.append(("ask", wanted)) or True,
                               version_of=lambda name: versions.get(name))


# ---- requirements: one file, read by pyproject.toml and by the module --------------------------


def test_one_requirements_file_feeds_pyproject_and_the_module():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "dependencies" in config["project"]["dynamic"] and "dependencies" not in config["project"]
    files = config["tool"]["setuptools"]["dynamic"]["dependencies"]["file"]
    assert [ROOT / name for name in files] == [REQUIREMENTS]
    assert install.REQUIREMENTS_FILE == REQUIREMENTS
    floors = {r.name: r.specifier for r in install.read_requirements()}
    assert floors["huggingface_hub"] == ">=1.1"  # hf_hub_download(tqdm_class=...) exists from 1.1.0 on
    assert set(floors) == {"torch", "numpy", "SimpleITK", "huggingface_hub", "safetensors", "tqdm"}
    try:
        import importlib.metadata

        declared = importlib.metadata.requires("diffcode-restore") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the package is not installed (pip install -e .)")
    assert "huggingface_hub>=1.1" in declared, "reinstall with pip install -e . to refresh the metadata"


@pytest.mark.parametrize("requirement, version, ok", [
    ("huggingface_hub>=1.1", "0.20.3", False),
    ("huggingface_hub>=1.1", "1.1.0", True),
    ("huggingface_hub>=1.1", "1.0.1", False),
    ("huggingface_hub>=1.1", None, False),
    ("torch>=2.0,<2.13", "2.12.1+cu130", True),
    ("torch>=2.0,<2.13", "2.13.0", False),
    ("torch>=2.0", "1.13.1", False),
    ("tqdm>=4.60", "4.66.0", True),
    ("numpy>=1.22", "2.0.0rc1", True),
    ("safetensors~=0.4", "0.4.9", True),
    ("safetensors~=0.4", "1.0", False),
    ("scikit-image==0.24.*", "0.24.1", True),
])
def test_versions_are_compared_with_the_floors(requirement, version, ok):
    assert install.parse_requirement(requirement).satisfied_by(version) is ok


def test_a_bad_requirement_line_says_how_to_write_it():
    with pytest.raises(ValueError, match="write NAME or NAME>=VERSION"):
        install.parse_requirement("huggingface_hub[cli]>=1.1; python_version<'3.9'")


def test_an_old_huggingface_hub_is_upgraded_not_kept():
    """A Slicer with huggingface_hub 0.20 has the package, but every download would fail."""
    versions = dict(ALL_INSTALLED, huggingface_hub="0.20.3")
    calls = []
    installer = make_installer(versions, calls)
    assert installer.plan().pip == [Requirement("huggingface_hub", ">=1.1")]
    assert installer.ensure() is True
    assert calls == [("ask", ["huggingface_hub>=1.1"]), ("pip", ["huggingface_hub>=1.1"])]


def test_metrics_check_only_their_own_package_and_slicers_packages_are_never_reinstalled():
    versions = dict(ALL_INSTALLED)
    del versions["huggingface_hub"], versions["scikit-image"], versions["SimpleITK"]  # no metadata in this Slicer
    installer = make_installer(versions, [])
    metrics = install.metrics_requirements()  # scikit-image's line of requirements-adapt.txt
    assert metrics == [Requirement("scikit-image", ">=0.19")]
    assert installer.plan(False, metrics, include_base=False).describe() == ["scikit-image>=0.19"]
    assert installer.plan(False).describe() == ["huggingface_hub>=1.1"]
    versions["numpy"] = "1.19.5"  # a Slicer far too old: say so instead of pip-installing over its numpy
    with pytest.raises(RuntimeError, match=r"numpy>=1.22 \(installed: 1.19.5\) is too old .*install a newer Slicer"):
        installer.ensure()


def test_installed_version_reads_metadata_of_real_packages():
    assert install.installed_version("huggingface-hub") == install.installed_version("huggingface_hub") is not None
    assert install.installed_version("no-such-package-diffcode") is None


# ---- one install at a time; the panel is told what is being installed -----------------------------


def test_a_click_during_pip_does_not_start_a_second_install():
    """Slicer 5.8/5.10 pump events while pip runs: a second Apply reaches ensure() again."""
    versions = dict(ALL_INSTALLED)
    del versions["safetensors"]
    calls, seen, nested = [], [], []
    installer = None

    def click_again():
        states = panel.apply_state(running=False, installing=installer.busy, has_input=True)
        seen.append((installer.busy, states))
        with pytest.raises(InstallInProgress, match="being installed .*safetensors>=0.4.*wait"):
            installer.ensure()
        nested.append(True)

    installer = make_installer(versions, calls, on_pip=click_again)
    busy_changes = []
    installer.on_busy.append(busy_changes.append)
    assert installer.ensure() is True
    assert [call for call in calls if call[0] == "pip"] == [("pip", ["safetensors>=0.4"])]
    assert nested == [True]
    busy, state = seen[0]
    assert busy == "safetensors>=0.4" and state == panel.ApplyState("installing", False)
    assert busy_changes == ["safetensors>=0.4", None] and installer.busy is None


def test_apply_button_states():
    assert panel.apply_state(False, None, True) == panel.ApplyState("apply", True)
    assert panel.apply_state(False, None, False) == panel.ApplyState("apply", False)
    assert panel.apply_state(True, None, True) == panel.ApplyState("cancel", True)
    assert panel.apply_state(True, None, True, cancelling=True) == panel.ApplyState("cancelling", False)
    assert panel.apply_state(True, "torch", True) == panel.ApplyState("installing", False)


def test_a_failed_install_says_what_to_do_and_frees_the_installer():
    versions = dict(ALL_INSTALLED)
    del versions["tqdm"]

    def pip_install(requirements):
        raise RuntimeError("pip could not install tqdm>=4.60 (exit code 1): check the internet connection.")

    installer = DependencyInstaller(pip_install, lambda r: None, lambda w: True, version_of=versions.get)
    with pytest.raises(RuntimeError, match="check the internet connection"):
        installer.ensure()
    assert installer.busy is None  # the next click can try again
    installer.pip_install = lambda requirements: None  # pip "succeeds" but nothing appears
    with pytest.raises(RuntimeError, match=r"^tqdm>=4.60 could not be installed: see the Python console"):
        installer.ensure()


def test_declining_installs_nothing():
    versions = dict(ALL_INSTALLED)
    del versions["torch"]
    calls = []
    installer = DependencyInstaller(lambda r: calls.append(r), lambda r: calls.append(r), lambda w: False,
                                    version_of=versions.get)
    assert installer.ensure() is False and calls == []


# ---- adapting to one's scans: its own packages, installed on demand like the module's ----------------


def test_adapt_requirements_are_one_file_shipped_with_the_module_and_the_adapt_extra():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "optional-dependencies" in config["project"]["dynamic"] and "optional-dependencies" not in config["project"]
    extras = config["tool"]["setuptools"]["dynamic"]["optional-dependencies"]
    assert [ROOT / name for name in extras["adapt"]["file"]] == [ADAPT_REQUIREMENTS]
    assert ROOT / extras["dev"]["file"][0] == ADAPT_REQUIREMENTS  # development has everything adapting has
    assert install.ADAPT_REQUIREMENTS_FILE == ADAPT_REQUIREMENTS
    adapt = install.adapt_requirements()
    # estimate_sigma (the NLM filter's noise level) needs PyWavelets, which scikit-image does not install
    assert {r.name for r in adapt} == {"scipy", "scikit-image", "PyWavelets"}
    assert not {r.key for r in adapt} & {r.key for r in install.read_requirements()}  # one floor per package
    try:
        import importlib.metadata

        declared = importlib.metadata.requires("diffcode-restore") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the package is not installed (pip install -e .)")
    assert {f'{r}; extra == "adapt"' for r in adapt} <= set(declared), "reinstall with pip install -e ."


def test_adapting_installs_torch_and_its_packages_after_one_confirmation():
    """A fresh Slicer: one question lists everything adapting needs; torch the PyTorch way, the rest with pip."""
    versions = dict(ALL_INSTALLED)
    del versions["torch"], versions["scikit-image"]
    calls, installed = [], []
    installer = make_installer(versions, calls)
    installer.on_installed.append(installed.append)
    adapt = install.adapt_requirements()
    wanted = [str(r) for r in adapt]
    question = ["PyTorch: torch>=2.0,<2.13 (through the PyTorch extension)", *wanted]
    assert installer.plan(True, adapt).describe() == question
    assert installer.ensure(True, adapt) is True
    assert calls == [("ask", question), ("torch", "torch>=2.0,<2.13"), ("pip", wanted)]
    assert installed == [["torch", "scipy", "scikit-image", "PyWavelets"]]
    assert installer.ensure(True, adapt) is True and len(calls) == 3  # all there now: nothing asked again


def test_an_old_scikit_image_is_upgraded_for_adapting_and_declining_installs_nothing():
    versions = dict(ALL_INSTALLED, **{"scikit-image": "0.18.3", "scipy": "1.13.1", "PyWavelets": "1.6.0"})
    calls = []
    installer = DependencyInstaller(lambda r: calls.append(r), lambda r: calls.append(r),
                                    lambda wanted: calls.append(("ask", wanted)) or False, version_of=versions.get)
    adapt = install.adapt_requirements()
    assert installer.plan(True, adapt).describe() == ["scikit-image>=0.19"]
    assert installer.ensure(True, adapt) is False  # the logic then raises its one-line error, naming these
    assert calls == [("ask", ["scikit-image>=0.19"])] and installer.busy is None
    assert installer.plan(True, adapt).describe() == ["scikit-image>=0.19"]


def test_a_failed_install_of_the_adapt_packages_is_one_line_and_frees_the_installer():
    versions = dict(ALL_INSTALLED)
    installer = DependencyInstaller(lambda requirements: None, lambda r: None, lambda w: True,
                                    version_of=versions.get)  # pip "succeeds" but nothing appears
    with pytest.raises(RuntimeError) as error:
        installer.ensure(True, install.adapt_requirements())
    message = str(error.value)
    assert "\n" not in message and message.startswith("scipy>=") and "could not be installed" in message
    assert installer.busy is None


def test_the_logic_installs_what_adapting_needs_instead_of_refusing():
    """logic.adapt (Slicer-only) asks the installer for the adapt requirements with the module's own,
    before any worker starts, and says in one line what to do when that was declined."""
    logic = (MODULE_DIR / "DiffCodeRestoreSlicerLib" / "logic.py").read_text(encoding="utf-8")
    assert "ADAPT_NEEDS" not in logic and "find_spec(name) is None" not in logic
    adapt = _module_functions()["DiffCodeRestoreLogic.adapt"]
    asked = adapt.index("needs = adapt_requirements()")
    ensure = adapt.index("if not self.ensureDependencies(needs):")
    refusal = adapt.index("raise RuntimeError(", ensure)
    assert asked < ensure < refusal < adapt.index("WorkerRequest(action='adapt'")
    assert "click Adapt again and accept the installation" in adapt[refusal:]
    assert "self.missingPackages(needs, withTorch=True)" in adapt[refusal:]
    metrics = _module_functions()["DiffCodeRestoreLogic.computeMetrics"]
    assert "self.ensureDependencies(metrics_requirements(), withTorch=False, includeBase=False)" in metrics


# ---- torch: only torch, a requirement that installs, never imported into Slicer ----------------


def test_torch_install_asks_only_for_torch_with_a_requirement_known_to_install():
    versions = dict(ALL_INSTALLED)
    del versions["torch"]
    calls, installed = [], []
    installer = make_installer(versions, calls)
    installer.on_installed.append(installed.append)
    assert installer.ensure() is True
    assert ("torch", "torch>=2.0,<2.13") in calls  # the floor from requirements.txt, capped (light-the-torch#176)
    assert installed == [["torch"]]  # the panel probes the devices again on this
    assert install.torch_install_arguments("torch>=2.0,<2.13") == ["install", "torch>=2.0,<2.13"]
    ran = []
    install.install_torch("torch>=2.0,<2.13", lambda module, args: ran.append((module, args)),
                          lambda: ran.append("install light-the-torch"), lambda name: False)
    assert ran == ["install light-the-torch", ("light_the_torch", ["install", "torch>=2.0,<2.13"])]
    assert not any("torchvision" in str(item) for item in ran)


def test_a_torch_the_user_has_is_kept_even_above_the_install_cap():
    versions = dict(ALL_INSTALLED, torch="2.13.0")
    installer = make_installer(versions, [])
    assert installer.torch_installed() and not installer.plan()


def test_checking_and_installing_torch_never_imports_it():
    """Slicer's process must not hold torch: only the worker uses it."""
    out = run_python(
        "import sys\n"
        "from DiffCodeRestoreSlicerLib.install import DependencyInstaller, install_torch\n"
        "installer = DependencyInstaller(lambda r: None, lambda r: None, lambda w: True)\n"
        "assert installer.torch_installed()\n"
        "installer.plan()\n"
        "install_torch('torch>=2.0,<2.13', lambda m, a: None, lambda: None, lambda n: True)\n"
        "print('torch' in sys.modules, 'huggingface_hub' in sys.modules)\n")
    assert out == "False False"


# ---- the cache folder without huggingface_hub -----------------------------------------------------


@pytest.mark.parametrize("env", [
    {},
    {"HF_HOME": "/tmp/hf-home"},
    {"XDG_CACHE_HOME": "/tmp/xdg"},
    {"HF_HUB_CACHE": "~/hub-cache"},
    {"HUGGINGFACE_HUB_CACHE": "/tmp/legacy-cache", "HF_HOME": "/tmp/ignored"},
    {"HF_HOME": "$DIFFCODE_TEST_BASE/hf", "DIFFCODE_TEST_BASE": "/tmp/base"},
])
def test_cache_folder_is_the_one_huggingface_hub_uses(env):
    names = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME")
    clean = {key: value for key, value in os.environ.items() if key not in names}
    code = ("from DiffCodeRestoreSlicerLib.cache import default_hub_cache_dir\n"
            "from huggingface_hub import constants\n"
            "print(default_hub_cache_dir()); print(constants.HF_HUB_CACHE)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**clean, **env})
    ours, theirs = done.stdout.split()
    assert Path(ours) == Path(theirs)


def test_open_cache_folder_works_before_huggingface_hub_is_installed(tmp_path):
    """The "Open cache folder" button's path: huggingface_hub made unimportable, as on a fresh Slicer."""
    out = run_python(
        "import sys\n"
        "sys.modules['huggingface_hub'] = None  # not installed yet\n"
        "from DiffCodeRestoreLib import hub\n"
        "from DiffCodeRestoreSlicerLib.cache import model_cache_folder\n"
        "print(model_cache_folder(None))\n"
        "from DiffCodeRestoreSlicerLib.cache import default_hub_cache_dir\n"
        "print(len(hub.model_status(hub.Catalog.load(), cache_dir=default_hub_cache_dir())))\n",
        env={"HF_HOME": str(tmp_path / "home")})
    folder, count = out.splitlines()
    assert Path(folder) == tmp_path / "home" / "hub" and int(count) >= 1


# ---- after a run: the scene may have been closed ----------------------------------------------------


@pytest.mark.parametrize("kind", ["out_of_memory", "no_gpu", "internal", "input", "cancelled"])
def test_a_message_after_the_scene_was_closed_needs_no_parameter_node(kind):
    follow = panel.restore_follow_up(kind, None)  # the old widget read parameters.device here
    assert not follow.offer_cpu and not follow.compute_metrics and not follow.show_error


def test_follow_up_with_the_panel_bound():
    gpu = SimpleNamespace(device="auto", referenceVolume=None)
    assert panel.restore_follow_up("out_of_memory", gpu).offer_cpu
    assert panel.restore_follow_up("no_gpu", gpu).offer_cpu
    cpu = SimpleNamespace(device="cpu", referenceVolume=None)
    assert panel.restore_follow_up("out_of_memory", cpu) == panel.FollowUp(show_error=True)
    assert panel.restore_follow_up("weights", gpu) == panel.FollowUp(show_error=True)
    with_reference = SimpleNamespace(device="auto", referenceVolume=object())
    assert panel.restore_follow_up(None, with_reference) == panel.FollowUp(show_result=True, compute_metrics=True)
    assert panel.restore_follow_up(None, with_reference, metrics_available=False) == panel.FollowUp(show_result=True)
    assert panel.restore_follow_up(None, None) == panel.FollowUp(show_result=True)
    assert panel.restore_follow_up("cancelled", gpu) == panel.FollowUp()


# ---- the parameter node binding: each observer added and removed once ------------------------------


class FakeWrapper:
    """What the panel needs of a parameterNodeWrapper: connectGui/disconnectGui, observers on its node."""

    def __init__(self, node):
        self.node = node
        self.connected = set()
        self._next = 0

    def connectGui(self, gui):
        self._next += 1
        self.connected.add(self._next)
        return self._next

    def disconnectGui(self, tag):
        self.connected.remove(tag)

    def AddObserver(self, event, callback, priority=0.0):
        return self.node.AddObserver(event, callback, priority)

    def RemoveObserver(self, tag):
        self.node.RemoveObserver(tag)


def test_entering_leaving_and_closing_the_scene_never_warns():
    slicer = pytest.importorskip("slicer")
    vtk = pytest.importorskip("vtk")

    class Panel(slicer.util.VTKObservationMixin):
        def __init__(self):
            super().__init__()
            self.updates = 0
            self.binding = panel.ParameterNodeBinding(
                lambda node: node.connectGui(self), lambda node, tag: node.disconnectGui(tag),
                lambda node: self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.update),
                lambda node: self.removeObserver(node, vtk.vtkCommand.ModifiedEvent, self.update))

        def update(self, caller=None, event=None):
            self.updates += 1

    node = slicer.vtkMRMLScriptedModuleNode()
    view = Panel()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Slicer's mixin warns "does not have observer" on a second removal
        first = FakeWrapper(node)
        view.binding.bind(first)            # enter
        view.binding.release()              # exit
        second = FakeWrapper(node)          # enter again: the logic hands out a new wrapper
        view.binding.bind(second)
        view.binding.bind(second)           # entered twice without leaving: nothing doubles
        view.binding.release()              # exit
        view.binding.unbind()               # scene closes while the module is not shown
        view.binding.unbind()
        third = FakeWrapper(node)
        view.binding.bind(third)
        node.Modified()
        assert view.updates == 1            # one observer, not two
        view.binding.unbind()
        node.Modified()
        assert view.updates == 1
    assert not first.connected and not second.connected and not third.connected
    assert view.binding.node is None and view.Observations == []


# ---- jobs: no patient data left behind ----------------------------------------------------------


class FakeTimer:
    def __init__(self, interval, callback):
        self.callback, self.active = callback, False

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


class StubbornWorker(WorkerJob):
    """A worker that runs for a minute and ignores the polite request to stop."""

    def command(self, request_path):
        return [sys.executable, "-c", "import signal, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('DIFFCODE {\"event\": \"start\"}', flush=True)\n"
                "time.sleep(60)\n"]


def test_a_failed_start_removes_the_copy_of_the_input(tmp_path):
    written = []

    def prepare(worker):
        Path(worker.path("input.nrrd")).write_bytes(b"patient data")
        written.append(worker.workdir)

    worker = WorkerJob(WorkerRequest(action="probe"), python=str(tmp_path / "no-python-here"))
    registry = JobRegistry()
    job = PolledJob(worker, makeTimer=FakeTimer, prepare=prepare, registry=registry)
    with pytest.raises(OSError):
        job.start()
    assert written and not written[0].exists()
    assert not job.running and registry.jobs == [] and not job.timer.active


def test_a_failing_prepare_removes_the_folder_and_starts_nothing():
    def prepare(worker):
        Path(worker.path("input.nrrd")).write_bytes(b"half a volume")
        raise ValueError("the input volume has no image data: choose another volume.")

    worker = WorkerJob(WorkerRequest(action="probe"))
    with pytest.raises(ValueError, match="choose another volume"):
        PolledJob(worker, makeTimer=FakeTimer, prepare=prepare, registry=JobRegistry()).start()
    assert not worker.workdir.exists() and worker.process is None


@pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX")
def test_quitting_slicer_during_a_run_stops_the_worker_and_removes_its_folder():
    registry = JobRegistry()
    finished = []
    worker = StubbornWorker(WorkerRequest(action="probe"))
    job = PolledJob(worker, onFinished=finished.append, makeTimer=FakeTimer, registry=registry,
                    prepare=lambda w: Path(w.path("input.nrrd")).write_bytes(b"patient data")).start()
    deadline = time.monotonic() + 30
    while not worker.poll() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert registry.jobs == [job] and worker.workdir.exists()
    started = time.monotonic()
    registry.close_all(grace=0.5)  # what application exit and module cleanup call
    assert time.monotonic() - started < 5
    assert worker.returncode is not None and not worker.workdir.exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(worker.process.pid, 0)
    assert registry.jobs == [] and not job.running and finished == []  # no callbacks into a closing panel


def test_a_finished_job_runs_its_callback_once_and_leaves_nothing():
    """Started through an injected runner, as the logic starts every worker."""
    registry = JobRegistry()
    events, finished = [], []
    runner = WorkerRunner(sys.executable, makeTimer=FakeTimer, registry=registry)
    job = runner.start(WorkerRequest(action="probe"), onEvent=events.append, onFinished=finished.append)
    assert job.worker.python == sys.executable
    assert job.timer.active and registry.jobs == [job]
    deadline = time.monotonic() + 120
    while job.running and time.monotonic() < deadline:
        job.poll()  # the timer's tick
        time.sleep(0.05)
    job.poll()
    assert finished == [job] and not job.timer.active and registry.jobs == []
    assert any(event["event"] == "probe" for event in events)
    assert not job.worker.workdir.exists()


def test_owner_file_names_this_process():
    worker = WorkerJob(WorkerRequest(action="probe"))
    try:
        assert json.loads((worker.workdir / "owner.json").read_text())["pid"] == os.getpid()
    finally:
        worker.cleanup()


# ---- the module file uses the above where Slicer calls it -------------------------------------------


def _module_functions():
    import ast

    functions = {}
    for source in (MODULE_DIR / "DiffCodeRestore.py", MODULE_DIR / "DiffCodeRestoreSlicerLib" / "widget.py",
                   MODULE_DIR / "DiffCodeRestoreSlicerLib" / "logic.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for cls in (node for node in tree.body if isinstance(node, ast.ClassDef)):
            for node in cls.body:
                if isinstance(node, ast.FunctionDef):
                    functions[f"{cls.name}.{node.name}"] = ast.unparse(node)
    return functions


def test_the_module_cleans_up_at_start_up_exit_and_cleanup():
    functions = _module_functions()
    init = functions["DiffCodeRestore.__init__"]
    assert "slicer.app.connect('startupCompleted()', sweepStaleFolders)" in init
    assert "slicer.app.connect('aboutToQuit()', cleanupAllJobs)" in init
    assert "job.close()" in functions["DiffCodeRestoreWidget.cleanup"]
    assert "self._binding.release()" in functions["DiffCodeRestoreWidget.exit"]
    assert "self._binding.unbind()" in functions["DiffCodeRestoreWidget.onSceneStartClose"]


def test_the_panel_listens_to_the_installer():
    """Apply is disabled while packages install, and the device line is probed again once torch is in."""
    functions = _module_functions()
    setup = functions["DiffCodeRestoreWidget.setup"]
    assert "installer.on_busy.append(self.onInstallBusy)" in setup
    assert "installer.on_installed.append(self.onInstalled)" in setup
    assert "self.updateGUI()" in functions["DiffCodeRestoreWidget.onInstallBusy"]
    installed = functions["DiffCodeRestoreWidget.onInstalled"]
    assert "'torch' in names" in installed and "self.probeDevices()" in installed
    assert functions["DiffCodeRestoreWidget.onApplyButton"].lstrip().startswith(
        "def onApplyButton(self) -> None:\n    if self.logic.installer.busy:")


def test_callbacks_after_a_run_never_dereference_the_parameter_node_unchecked():
    """The timer calls these after the scene may have been closed (no parameter node then)."""
    functions = _module_functions()
    for name in ("onRestoreFinished", "onWorkerEvent", "setRunning", "onInstallBusy", "onInstalled", "onAdaptFinished"):
        source = functions[f"DiffCodeRestoreWidget.{name}"]
        assert "self._parameterNode." not in source, f"{name} reads the parameter node without a check"
    assert "restore_follow_up(" in functions["DiffCodeRestoreWidget.onRestoreFinished"]
    update = functions["DiffCodeRestoreWidget.updateGUI"]
    assert update.index("apply_state(") < update.index("if parameters is None:")  # Apply is reset even then


def test_a_damaged_cached_copy_can_be_deleted_from_the_panel(tmp_path, tiny_weights):
    """The real hub status of a cached copy with one flipped bit: the panel offers Delete and says why."""
    import shutil

    from DiffCodeRestoreLib import hub

    entry = hub.catalog_entry(tiny_weights, "tiny", "org/tiny", None, ["ct-denoise"], "Apache-2.0", None)
    catalog = hub.Catalog(tmp_path / "Models.json", "tiny", {"tiny": entry})
    snapshot = hub.snapshot_folder(entry, tmp_path / "cache")
    snapshot.mkdir(parents=True)
    for name in hub.REQUIRED_FILES:
        shutil.copy(tiny_weights / name, snapshot / name)
    good = panel.model_buttons(hub.model_status(catalog, tmp_path / "cache")[0])
    assert good == panel.ModelButtons(can_delete=True, verify=True, damaged=None)
    data = bytearray((snapshot / hub.WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0x01
    (snapshot / hub.WEIGHTS_FILE).write_bytes(bytes(data))
    damaged = panel.model_buttons(hub.model_status(catalog, tmp_path / "cache")[0])
    assert damaged == panel.ModelButtons(can_delete=True, verify=False, damaged="cache")
