"""The worker process that does the heavy work for the Slicer module, and the module's handle on it.

Why a separate process: restoration (torch, minutes on a CPU) and weight downloads must not freeze
Slicer, must be cancellable at any moment (killing the process tree is the only cancel that always
works, even inside a CUDA kernel or a stalled download), and a crash or out-of-memory in torch must
not take the user's scene with it.

The worker side (run it with Slicer's ``PythonSlicer`` or any Python that has the package)::

    python -m DiffCodeRestoreLib.worker REQUEST.json

reads one request (JSON: ``action`` restore | download | probe, and its fields, see
``WorkerRequest``), prints machine-readable events on stdout, one per line::

    DIFFCODE {"event": "progress", "fraction": 0.25, "message": "slice 3 of 12"}

writes its output atomically (temporary name, then rename; nothing on cancel or error) and exits
0, or non-zero with one clear line on stderr (and an ``error`` event saying which kind: input,
weights, no_gpu, out_of_memory, internal). SIGTERM/SIGINT cancel cleanly.

The client side, ``WorkerJob``, is Qt-free: it starts the process in its own process group, reads
its output on background threads, hands parsed events to whoever polls (the module polls from a
QTimer, so the UI stays responsive). Cancel asks first (SIGTERM to the process group, so the worker
can delete half-downloaded files) and kills the whole process tree only if it is still running after
a short grace; it never blocks, the polling escalates. The job's temporary folder (it holds an
uncompressed copy of the patient volume) is always removed by ``cleanup``, also when the start
fails, and ``sweep_stale_workdirs`` removes those left by a Slicer that was killed.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .errors import CancelToken, one_line

EVENT_PREFIX = "DIFFCODE "
ACTIONS = ("restore", "download", "probe", "adapt")
OPTION_NAMES = ("scale", "steps", "fidelity", "seed", "samples", "self_ensemble", "tile_size", "suv_factor",
                "hu_offset")
# "level": the task's degradation level (MRI k-space factor, CT photons per ray, PET dose fraction).
ADAPT_OPTION_NAMES = ("minutes", "iterations", "level", "hu_offset", "suv_factor", "force")
EXIT_OK, EXIT_ERROR, EXIT_BAD_REQUEST, EXIT_CANCELLED = 0, 1, 2, 130
ERROR_KINDS = ("input", "weights", "no_gpu", "out_of_memory", "cancelled", "refused", "internal")
PACKAGE_PARENT = Path(__file__).resolve().parent.parent  # the folder that holds DiffCodeRestoreLib


class WorkerError(RuntimeError):
    """The worker failed; ``kind`` is one of ``ERROR_KINDS`` so the caller can offer a remedy."""

    def __init__(self, message: str, kind: str = "internal"):
        super().__init__(message)
        self.kind = kind


# ----------------------------------------------------------------------------------------------------
# The request


@dataclass
class WorkerRequest:
    """What the worker is asked to do. Paths are absolute; ``options`` go to the pipeline call (restore) or
    to ``adapt.adapt`` (adapt: ``inputs`` are the high-quality volumes, ``output`` the new weights folder)."""

    action: str = "restore"
    input: Optional[str] = None
    inputs: List[str] = field(default_factory=list)
    output: Optional[str] = None
    task: Optional[str] = None
    uncertainty_output: Optional[str] = None
    model: Optional[str] = None  # catalog name or weights folder; None: the catalog's default
    device: str = "auto"
    options: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "WorkerRequest":
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}: choose one of {', '.join(ACTIONS)}.")
        allowed = ADAPT_OPTION_NAMES if self.action == "adapt" else OPTION_NAMES
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)}: allowed are {', '.join(allowed)}.")
        if self.action in ("restore", "adapt"):
            needed = ("input", "output", "task") if self.action == "restore" else ("inputs", "output", "task")
            missing = [name for name in needed if not getattr(self, name)]
            if missing:
                raise ValueError(f"a {self.action} request needs {', '.join(missing)}.")
            from .tasks import get_task

            get_task(self.task)
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "WorkerRequest":
        try:
            data = json.loads(text)
        except ValueError as error:
            raise ValueError(f"the request is not valid JSON ({error}).") from None
        if not isinstance(data, dict):
            raise ValueError("the request must be a JSON object.")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown request field(s): {', '.join(unknown)}.")
        return cls(**data).validate()


# ----------------------------------------------------------------------------------------------------
# Events (both sides)


def format_event(event: str, **fields: Any) -> str:
    return EVENT_PREFIX + json.dumps({"event": event, **fields}, sort_keys=True)


def parse_event(line: str) -> Optional[Dict[str, Any]]:
    """The event carried by one stdout line, or None for any other output (library chatter)."""
    line = line.strip()
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        event = json.loads(line[len(EVENT_PREFIX):])
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def emit(event: str, **fields: Any) -> None:
    print(format_event(event, **fields), flush=True)


# ----------------------------------------------------------------------------------------------------
# The worker side


def _classify(error: BaseException) -> str:
    from .errors import WeightsError
    from .volume_io import VolumeError

    if isinstance(error, WeightsError):
        return "weights"
    if isinstance(error, VolumeError):
        return "input"
    if type(error).__name__ == "AdaptRefused":  # the adapted model was not better than its base: not written
        return "refused"
    try:
        from .device import is_out_of_memory

        if is_out_of_memory(error):
            return "out_of_memory"
    except ImportError:  # no torch: cannot be an out-of-memory error
        pass
    text = str(error)
    if isinstance(error, ValueError) and ("CUDA" in text or "'mps'" in text):
        return "no_gpu"
    if isinstance(error, ValueError):
        return "input"
    return "internal"


def _probe() -> None:
    """Report what hardware torch sees, for the module's device selector."""
    import torch

    from .device import describe, mps_available, resolve_device

    gpus = [
        {"index": i, "name": torch.cuda.get_device_name(i),
         "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
        for i in range(torch.cuda.device_count())
    ] if torch.cuda.is_available() else []
    emit("probe", torch=torch.__version__, cuda=torch.version.cuda, gpus=gpus, mps=mps_available(),
         auto=describe(resolve_device("auto")))


def _byte_progress(done: int, total: int) -> None:
    emit("progress", fraction=(done / total) if total else 0.0,
         message=f"downloading weights: {done / 2**20:.1f} of {total / 2**20:.1f} MB", done=done, total=total)


def _download(request: WorkerRequest, cancel: CancelToken) -> None:
    from .hub import resolve

    weights = resolve(request.model, progress=_byte_progress, cancel=cancel,
                      message=lambda text: emit("warning", message=text))
    emit("done", model=weights.name, folder=str(weights.folder), source=weights.source, sha256=weights.sha256)


def _restore(request: WorkerRequest, cancel: CancelToken) -> None:
    from .pipeline import DiffCodePipeline, RestoreCancelled
    from .volume_io import read_volume, write_volumes

    image = read_volume(request.input)
    emit("status", message="loading the model")
    pipeline = DiffCodePipeline.from_pretrained(
        request.model, device=request.device, progress=_byte_progress, cancel=cancel,
        message=lambda text: emit("warning", message=text),
    )
    emit("status", message=f"restoring on {pipeline.device.type}", device=pipeline.device.type)

    def on_progress(done: int, total: int) -> None:
        emit("progress", fraction=(done / total) if total else 0.0, message=f"slice {done} of {total}",
             done=done, total=total)

    try:
        result = pipeline(image, task=request.task, progress=on_progress, cancel=cancel, **request.options)
    except RestoreCancelled:
        raise KeyboardInterrupt from None
    if cancel.cancelled:
        raise KeyboardInterrupt
    outputs = [(result.image, request.output, result.metadata)]
    uncertainty = None
    if request.uncertainty_output and result.uncertainty is not None:
        uncertainty = request.uncertainty_output
        outputs.append((result.uncertainty, uncertainty, {**result.metadata, "map": "uncertainty (std)"}))
    write_volumes(outputs, overwrite=True)  # one unit: the result never without its uncertainty map
    emit("done", output=request.output, uncertainty=uncertainty, metadata=result.metadata)


def _adapt(request: WorkerRequest, cancel: CancelToken) -> None:
    """Fine-tune the model on the user's high-quality volumes (``adapt.adapt``), reporting its progress."""
    from .adapt import adapt
    from .adapt_data import LEVELS

    options = dict(request.options)
    if options.get("level") is not None:
        options[LEVELS[request.task]] = options.pop("level")
    options.pop("level", None)

    def on_progress(progress) -> None:
        emit("progress", fraction=progress.fraction, message=progress.message, phase=progress.phase,
             eta_s=progress.eta_s)

    result = adapt(request.inputs, request.task, request.output, base=request.model, device=request.device,
                   progress=on_progress, cancel=cancel, message=lambda text: emit("warning", message=text),
                   **options)
    emit("done", folder=str(result.folder), table=result.table(), gain_db=result.gain_db, task=result.task)


def run(request: WorkerRequest) -> int:
    """Carry out one request in this process; return the exit code (events go to stdout)."""
    cancel = CancelToken()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: cancel.cancel())
    emit("start", action=request.action, pid=os.getpid())
    try:
        actions = {"restore": _restore, "download": _download, "probe": lambda r, c: _probe(), "adapt": _adapt}
        actions[request.action](request, cancel)
        return EXIT_OK
    except KeyboardInterrupt:
        emit("error", kind="cancelled", message="cancelled; no output was written.")
        return EXIT_CANCELLED
    except Exception as error:  # every failure ends as one line, never a traceback
        kind = "cancelled" if type(error).__name__ in ("DownloadCancelled", "AdaptCancelled") else _classify(error)
        message = one_line(error)
        emit("error", kind=kind, message=message)
        print(f"DiffCode Restore: {message}", file=sys.stderr, flush=True)
        return EXIT_CANCELLED if kind == "cancelled" else EXIT_ERROR


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .runtime import configure_own_process

    configure_own_process()
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m DiffCodeRestoreLib.worker REQUEST.json", file=sys.stderr)
        return EXIT_BAD_REQUEST
    try:
        request = WorkerRequest.from_json(Path(argv[0]).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"DiffCode Restore: bad request {argv[0]}: {one_line(error)}", file=sys.stderr, flush=True)
        return EXIT_BAD_REQUEST
    return run(request)


# ----------------------------------------------------------------------------------------------------
# The client side

WORKDIR_PREFIX = "diffcode-"
OWNER_FILE = "owner.json"  # in each job folder: the process that made it, for the stale-folder sweep
CANCEL_GRACE_S = 5.0  # SIGTERM first; killed if still running this long after
CLEANUP_GRACE_S = 2.0  # shorter when Slicer closes the module or quits: the user is waiting
UNOWNED_STALE_S = 24 * 3600.0  # folders without an owner file (older versions) are swept after a day


def _signal_group(process: "subprocess.Popen", signum: int) -> None:
    """Send ``signum`` to the worker's process group (the worker leads it; launchers spawn children)."""
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def terminate_process_tree(process: "subprocess.Popen") -> None:
    """Ask a worker started by ``WorkerJob`` (and its children) to stop: it cancels cleanly on SIGTERM.

    On Windows, where a console-less process cannot be sent a catchable signal, this kills at once.
    """
    if os.name == "nt":
        kill_process_tree(process)
    else:
        _signal_group(process, signal.SIGTERM)


def kill_process_tree(process: "subprocess.Popen") -> None:
    """Kill a worker started by ``WorkerJob`` and everything it started (launchers spawn children).

    The group is signalled even when the leader has already exited: a launcher (PythonSlicer) can
    die on SIGTERM while its Python child is still running.
    """
    if os.name == "nt":
        if process.poll() is None:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
    else:
        _signal_group(process, signal.SIGKILL)
    process.wait()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (without signalling it: on Windows os.kill would end it)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        try:
            code = ctypes.c_ulong()
            kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_stale_workdirs(tempdir: Optional[str] = None, now: Optional[float] = None) -> List[Path]:
    """Delete job folders whose owner process is gone (Slicer crashed or was killed during a run).

    Why: such a folder holds an uncompressed copy of a patient volume in the shared temp folder.
    A folder whose owner still runs (another Slicer, a restore in progress) is left alone; one
    without an owner file (made by an older version) only once it is a day old. Returns the
    folders removed.
    """
    base = Path(tempdir or tempfile.gettempdir())
    now = time.time() if now is None else now
    removed = []
    try:
        candidates = [path for path in base.iterdir() if path.name.startswith(WORKDIR_PREFIX)]
    except OSError:
        return removed
    for folder in candidates:
        try:
            if folder.is_symlink() or not folder.is_dir():
                continue
            owner_file = folder / OWNER_FILE
            if owner_file.is_file():
                try:
                    owner = json.loads(owner_file.read_text(encoding="utf-8"))
                    stale = not pid_alive(int(owner["pid"]))
                except (OSError, ValueError, KeyError, TypeError):
                    stale = now - folder.stat().st_mtime > UNOWNED_STALE_S
            else:
                stale = now - folder.stat().st_mtime > UNOWNED_STALE_S
        except OSError:
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    return removed


class WorkerJob:
    """One worker process: ``start``, then ``poll`` for events until ``finished``; ``cancel`` stops it.

    The job owns a temporary folder (``workdir``) for the request and the files exchanged with the
    worker; ``cleanup`` removes it (``start`` removes it itself when the worker cannot be started).
    ``python`` is the interpreter to run (in Slicer: PythonSlicer).
    """

    def __init__(self, request: WorkerRequest, python: Optional[str] = None, env: Optional[Dict[str, str]] = None,
                 workdir: Optional[str] = None):
        self.request = request
        self.python = python or sys.executable
        self.env = dict(os.environ if env is None else env)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / OWNER_FILE).write_text(json.dumps({"pid": os.getpid()}), encoding="utf-8")
        self.process: Optional[subprocess.Popen] = None
        self.cancelled = False
        self.error_lines: List[str] = []
        self.log_lines: List[str] = []
        self.result: Optional[Dict[str, Any]] = None
        self.error: Optional[Dict[str, Any]] = None
        self._queue: "queue.Queue[Optional[Dict[str, Any]]]" = queue.Queue()
        self._readers: List[threading.Thread] = []
        self._kill_at: Optional[float] = None  # set by cancel: when the grace ends

    def path(self, name: str) -> str:
        """A path inside the job's folder, for files passed to or from the worker."""
        return str(self.workdir / name)

    def command(self, request_path: str) -> List[str]:
        return [self.python, "-m", "DiffCodeRestoreLib.worker", request_path]

    def start(self) -> "WorkerJob":
        """Start the worker; if that fails, the job folder (with any input copy) is removed first."""
        try:
            return self._start()
        except BaseException:
            self.cleanup()
            raise

    def _start(self) -> "WorkerJob":
        request_path = self.path("request.json")
        Path(request_path).write_text(self.request.validate().to_json(), encoding="utf-8")
        env = dict(self.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        kwargs: Dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True
        self.process = subprocess.Popen(
            self.command(request_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, encoding="utf-8", errors="replace", env=env, cwd=str(self.workdir), **kwargs
        )
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        return self

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            event = parse_event(line)
            if event is None:
                if line.strip():
                    self.log_lines.append(line.rstrip())
                continue
            if event["event"] == "done":
                self.result = event
            elif event["event"] == "error":
                self.error = event
            self._queue.put(event)

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            if line.strip():
                self.error_lines.append(line.rstrip())

    def _escalate(self) -> None:
        """Kill the process tree once the grace after ``cancel`` is over and it is still running."""
        if self._kill_at is None or self.process is None or time.monotonic() < self._kill_at:
            return
        if self.process.poll() is None or any(reader.is_alive() for reader in self._readers):
            kill_process_tree(self.process)
        self._kill_at = None

    def poll(self) -> List[Dict[str, Any]]:
        """Events received since the last call (never blocks)."""
        self._escalate()
        events = []
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                return events

    @property
    def finished(self) -> bool:
        """The process has exited and all its output has been read."""
        self._escalate()
        if self.process is None or self.process.poll() is None:
            return False
        return not any(reader.is_alive() for reader in self._readers)

    @property
    def returncode(self) -> Optional[int]:
        return None if self.process is None else self.process.poll()

    @property
    def running(self) -> bool:
        return self.process is not None and not self.finished

    def cancel(self, grace: float = CANCEL_GRACE_S) -> None:
        """Ask the worker to stop (it deletes partial files and writes no output) and return at once.

        If it is still running ``grace`` seconds later, the next ``poll``/``finished``/``wait``/
        ``cleanup`` kills its process tree. A second cancel does not extend the grace.
        """
        self.cancelled = True
        if self.process is None or self._kill_at is not None or self.process.poll() is not None:
            return
        self._kill_at = time.monotonic() + max(0.0, grace)
        terminate_process_tree(self.process)

    def wait(self, timeout: Optional[float] = None) -> int:
        """Block until the worker has exited and its output is read; return the exit code."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the worker did not finish within {timeout} s.")
            time.sleep(0.05)
        return self.process.returncode

    def outcome(self) -> Dict[str, Any]:
        """The ``done`` event of a finished job; else raise ``WorkerError`` with one clear line."""
        if self.cancelled:
            raise WorkerError("Cancelled; nothing was changed.", "cancelled")
        if self.result is not None and self.returncode == EXIT_OK:
            return self.result
        if self.error is not None:
            raise WorkerError(self.error.get("message", "the worker failed."), self.error.get("kind", "internal"))
        last = (self.error_lines or self.log_lines or [f"the worker exited with code {self.returncode}"])[-1]
        raise WorkerError(last, "internal")

    def cleanup(self, grace: float = CLEANUP_GRACE_S) -> None:
        """Stop the worker if still running (asked first, killed after ``grace`` s; this blocks at most
        that long) and delete the job's folder (input/output copies), whatever happened before."""
        try:
            if self.process is not None and not self.finished:
                self.cancel(grace)
                deadline = time.monotonic() + max(0.0, grace)
                while not self.finished and time.monotonic() < deadline:
                    time.sleep(0.02)
                if not self.finished:
                    kill_process_tree(self.process)
                for reader in self._readers:
                    reader.join(timeout=1.0)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
