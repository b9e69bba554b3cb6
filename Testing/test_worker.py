"""The worker process the Slicer module starts: real subprocesses, real files, a tiny random model.

What a user would meet: progress lines while it runs, an output that appears complete or not at
all, Cancel that asks first (the worker stops cleanly and deletes partial downloads) and kills the
whole process tree only after a short grace, never blocking the caller; no temporary copy of the
patient volume left behind, and one clear line (plus a machine-readable kind) whenever something
is wrong.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DiffCodeRestoreLib.data.volumes import load_volume
from DiffCodeRestoreLib.hub import sha256_of
from DiffCodeRestoreLib.volume_io import read_provenance
from DiffCodeRestoreLib.worker import (
    EXIT_BAD_REQUEST,
    EXIT_CANCELLED,
    EXIT_ERROR,
    OWNER_FILE,
    UNOWNED_STALE_S,
    WORKDIR_PREFIX,
    WorkerError,
    WorkerJob,
    WorkerRequest,
    format_event,
    parse_event,
    sweep_stale_workdirs,
)

TIMEOUT = 120


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory):
    """A 3-slice crop of a real CT (HU, int16) with an oblique direction."""
    image = load_volume("lung2")[200:264, 200:264, 30:33]
    angle = np.deg2rad(15)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    image.SetDirection((rotation @ np.array(image.GetDirection()).reshape(3, 3)).ravel().tolist())
    path = tmp_path_factory.mktemp("input") / "ct.nrrd"
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture(scope="module")
def long_ct_file(tmp_path_factory):
    """A whole real CT (61 slices of 512 x 512): several model calls, so it is still running when cancelled."""
    path = tmp_path_factory.mktemp("long") / "ct_long.nrrd"
    sitk.WriteImage(load_volume("lung2"), str(path))
    return path


def run_job(request, timeout=TIMEOUT):
    job = WorkerJob(request).start()
    job.wait(timeout)
    return job, job.poll()


def test_restore_reports_progress_and_writes_a_complete_output(ct_file, tiny_weights, tmp_path):
    output = tmp_path / "restored.nrrd"
    checksum = sha256_of(ct_file)
    job, events = run_job(WorkerRequest(input=str(ct_file), output=str(output), task="ct-denoise",
                                        model=str(tiny_weights), device="cpu",
                                        options={"seed": 5, "self_ensemble": True}))
    try:
        assert job.returncode == 0, job.error_lines
        kinds = [event["event"] for event in events]
        assert kinds[0] == "start" and kinds[-1] == "done"
        fractions = [event["fraction"] for event in events if event["event"] == "progress"]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        outcome = job.outcome()
        assert outcome["output"] == str(output) and outcome["metadata"]["options"]["seed"] == 5
        assert outcome["metadata"]["options"]["self_ensemble"] is True
        restored, source = sitk.ReadImage(str(output)), sitk.ReadImage(str(ct_file))
        assert restored.GetSize() == source.GetSize() and restored.GetPixelID() == source.GetPixelID()
        np.testing.assert_allclose(restored.GetDirection(), source.GetDirection(), atol=1e-9)
        np.testing.assert_allclose(restored.GetOrigin(), source.GetOrigin(), atol=1e-9)
        np.testing.assert_allclose(restored.GetSpacing(), source.GetSpacing(), atol=1e-9)
        assert read_provenance(restored)["sha256"] == sha256_of(tiny_weights / "model.safetensors")
        assert sha256_of(ct_file) == checksum  # the input file is never touched
        assert sorted(p.name for p in tmp_path.iterdir()) == ["restored.nrrd"]  # no temporary leftovers
    finally:
        job.cleanup()
    assert not job.workdir.exists()


def test_cancel_kills_the_process_tree_and_leaves_no_output(long_ct_file, tiny_weights, tmp_path):
    output = tmp_path / "restored.nrrd"
    job = WorkerJob(WorkerRequest(input=str(long_ct_file), output=str(output), task="ct-denoise",
                                  model=str(tiny_weights), device="cpu")).start()
    try:
        deadline = time.monotonic() + TIMEOUT
        seen = []
        while not any(e["event"] == "progress" and e["done"] > 0 for e in seen):  # well into the restore
            assert time.monotonic() < deadline and not job.finished, (seen, job.error_lines)
            seen += job.poll()
            time.sleep(0.05)
        job.cancel()
        job.wait(30)
        assert job.returncode != 0
        with pytest.raises(ProcessLookupError):
            os.killpg(job.process.pid, 0)  # the whole process group is gone
        with pytest.raises(WorkerError) as caught:
            job.outcome()
        assert caught.value.kind == "cancelled"
        assert list(tmp_path.iterdir()) == []  # no output, no partial file
    finally:
        job.cleanup()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_sigterm_cancels_cleanly_with_a_cancelled_event(long_ct_file, tiny_weights, tmp_path):
    job = WorkerJob(WorkerRequest(input=str(long_ct_file), output=str(tmp_path / "out.nrrd"), task="ct-denoise",
                                  model=str(tiny_weights), device="cpu")).start()
    try:
        events = []
        deadline = time.monotonic() + TIMEOUT
        while not any(e["event"] == "progress" for e in events):
            assert time.monotonic() < deadline and not job.finished, job.error_lines
            events += job.poll()
            time.sleep(0.05)
        job.process.send_signal(signal.SIGTERM)
        assert job.wait(60) == EXIT_CANCELLED
        events += job.poll()
        assert events[-1]["event"] == "error" and events[-1]["kind"] == "cancelled"
        assert list(tmp_path.iterdir()) == []
    finally:
        job.cleanup()


@pytest.mark.parametrize(
    "case, kind, message",
    [
        ("missing input", "input", "no such file"),
        ("constant input", "input", "constant"),
        ("gpu on a cpu machine", "no_gpu", "CUDA"),
        ("not a weights folder", "weights", "not a weights folder"),
    ],
)
def test_failures_end_with_one_line_and_a_kind(case, kind, message, ct_file, tiny_weights, tmp_path):
    if case == "gpu on a cpu machine":
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("this machine has a CUDA GPU")
    source, model, device = str(ct_file), str(tiny_weights), "cpu"
    if case == "missing input":
        source = str(tmp_path / "nowhere.nrrd")
    elif case == "constant input":
        flat = sitk.Image(sitk.ReadImage(source))
        flat = sitk.Image(flat.GetSize(), flat.GetPixelID()) - 1000
        source = str(tmp_path / "flat.nrrd")
        sitk.WriteImage(flat, source)
    elif case == "gpu on a cpu machine":
        device = "cuda"
    else:
        model = str(tmp_path)
    output = tmp_path / "out" / "restored.nrrd"
    output.parent.mkdir()
    job, events = run_job(WorkerRequest(input=source, output=str(output), task="ct-denoise", model=model,
                                        device=device))
    try:
        assert job.returncode == EXIT_ERROR
        assert len(job.error_lines) == 1 and message in job.error_lines[0], job.error_lines
        assert job.error_lines[0].startswith("DiffCode Restore: ")
        assert events[-1]["event"] == "error" and events[-1]["kind"] == kind
        with pytest.raises(WorkerError, match=message) as caught:
            job.outcome()
        assert caught.value.kind == kind
        assert list(output.parent.iterdir()) == []
    finally:
        job.cleanup()


def test_bad_request_exits_2_with_one_line(tmp_path):
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"action": "restore", "input": "a.nrrd", "output": "b.nrrd", "task": "x-ray"}))
    import subprocess

    done = subprocess.run([sys.executable, "-m", "DiffCodeRestoreLib.worker", str(request)], capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == EXIT_BAD_REQUEST
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Unknown task 'x-ray'" in lines[0]
    assert done.stdout == ""


def test_probe_reports_what_torch_sees():
    job, events = run_job(WorkerRequest(action="probe"))
    try:
        assert job.returncode == 0, job.error_lines
        probe = next(event for event in events if event["event"] == "probe")
        import torch

        assert probe["torch"] == torch.__version__
        assert len(probe["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
        assert probe["auto"].split()[0] in ("cuda", "mps", "cpu")
    finally:
        job.cleanup()


def test_download_then_restore_with_the_hub_gone(ct_file, tiny_weights, tmp_path):
    """The Download button's path: a catalog model fetched by the worker with byte progress, then
    used from the cache by a restore while the Hub is unreachable."""
    from hub_server import HubServer

    from DiffCodeRestoreLib import hub

    server = HubServer()
    try:
        commit = server.add_repo("diffcode-test/tiny", {p.name: p.read_bytes() for p in tiny_weights.iterdir()})
        entry = hub.catalog_entry(tiny_weights, "tiny", "diffcode-test/tiny", commit, ["ct-denoise"], "Apache-2.0",
                                  None)
        hub.Catalog(tmp_path / "Models.json", "tiny", {"tiny": entry}).save()
        env = {**os.environ, "DIFFCODE_CATALOG": str(tmp_path / "Models.json"), "HF_ENDPOINT": server.endpoint,
               "HF_HUB_CACHE": str(tmp_path / "hf-cache")}
        job = WorkerJob(WorkerRequest(action="download"), env=env).start()
        job.wait(TIMEOUT)
        events = job.poll()
        done = job.outcome()
        assert done["source"] == "hub" and done["model"] == "tiny" and done["sha256"] == entry.sha256
        assert Path(done["folder"]).is_relative_to(tmp_path / "hf-cache")
        received = [event["done"] for event in events if event["event"] == "progress"]
        assert received == sorted(received) and received[-1] == entry.size
        job.cleanup()
    finally:
        server.stop()
    output = tmp_path / "restored.nrrd"
    job = WorkerJob(WorkerRequest(input=str(ct_file), output=str(output), task="ct-denoise", model="tiny",
                                  device="cpu"), env=env).start()
    try:
        job.wait(TIMEOUT)
        outcome = job.outcome()
        assert outcome["metadata"]["weights_source"] == "cache" and outcome["metadata"]["revision"] == commit
        assert output.is_file()
    finally:
        job.cleanup()


def test_request_and_event_format():
    assert parse_event(format_event("progress", fraction=0.5, message="slice 1 of 2")) == {
        "event": "progress", "fraction": 0.5, "message": "slice 1 of 2"}
    assert parse_event("Some library printed this") is None
    assert parse_event("DIFFCODE not json") is None
    request = WorkerRequest(input="/a.nrrd", output="/b.nrrd", task="mri-sr", options={"scale": 2})
    assert WorkerRequest.from_json(request.to_json()) == request
    with pytest.raises(ValueError, match="unknown request field"):
        WorkerRequest.from_json('{"action": "restore", "colour": "red"}')
    with pytest.raises(ValueError, match="unknown option"):
        WorkerRequest(input="a", output="b", task="mri-sr", options={"sharpen": 1}).validate()
    with pytest.raises(ValueError, match="needs input, output"):
        WorkerRequest(task="mri-sr").validate()
    units = WorkerRequest(input="a", output="b", task="pet-synthesis", options={"suv_factor": 2.5e-4, "hu_offset": 0})
    assert units.validate().options == {"suv_factor": 2.5e-4, "hu_offset": 0}


def wait_for(job, predicate, timeout=TIMEOUT):
    """Poll ``job`` until ``predicate(events so far)``; returns the events."""
    events = []
    deadline = time.monotonic() + timeout
    while not predicate(events):
        assert time.monotonic() < deadline and not job.finished, (events, job.error_lines)
        events += job.poll()
        time.sleep(0.05)
    return events


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_cancel_asks_first_returns_at_once_and_the_worker_stops_cleanly(long_ct_file, tiny_weights, tmp_path):
    output = tmp_path / "restored.nrrd"
    job = WorkerJob(WorkerRequest(input=str(long_ct_file), output=str(output), task="ct-denoise",
                                  model=str(tiny_weights), device="cpu")).start()
    try:
        events = wait_for(job, lambda seen: any(e["event"] == "progress" and e["done"] > 0 for e in seen))
        started = time.monotonic()
        job.cancel()
        assert time.monotonic() - started < 0.5  # the GUI thread is never held up
        assert job.wait(60) == EXIT_CANCELLED  # it stopped by itself: asked, not killed
        events += job.poll()
        assert events[-1]["event"] == "error" and events[-1]["kind"] == "cancelled"
        with pytest.raises(WorkerError) as caught:
            job.outcome()
        assert caught.value.kind == "cancelled"
        assert list(tmp_path.iterdir()) == []
    finally:
        job.cleanup()
    assert not job.workdir.exists()


def group_gone(pgid, timeout=10.0):
    """Whether the process group has no members left (killed orphans wait a moment for init to reap them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


class StubbornWorker(WorkerJob):
    """Ignores SIGTERM and has a child process: only the kill after the grace ends them."""

    def command(self, request_path):
        return [sys.executable, "-c", "import signal, subprocess, sys, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
                "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
                "print('DIFFCODE {\"event\": \"start\"}', flush=True)\n"
                "time.sleep(60)\n"]


@pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX")
def test_cancel_kills_the_tree_after_the_grace_when_the_worker_does_not_stop():
    job = StubbornWorker(WorkerRequest(action="probe")).start()
    try:
        wait_for(job, lambda seen: bool(seen), timeout=30)
        started = time.monotonic()
        job.cancel(grace=0.5)
        assert time.monotonic() - started < 0.2
        time.sleep(0.3)
        assert not job.finished  # still inside the grace: asked, not killed
        while not job.finished:  # the polling escalates
            assert time.monotonic() - started < 10
            time.sleep(0.05)
        assert job.returncode == -signal.SIGKILL
        assert group_gone(job.process.pid)  # the child went too
        with pytest.raises(WorkerError) as caught:
            job.outcome()
        assert caught.value.kind == "cancelled"
    finally:
        job.cleanup()
    assert not job.workdir.exists()


def test_a_worker_that_cannot_start_leaves_no_copy_of_the_input(tmp_path):
    job = WorkerJob(WorkerRequest(action="probe"), python=str(tmp_path / "PythonSlicer-missing"))
    Path(job.path("input.nrrd")).write_bytes(b"an uncompressed copy of the patient volume")
    with pytest.raises(OSError):
        job.start()
    assert not job.workdir.exists()
    bad = WorkerJob(WorkerRequest(action="restore", task="x-ray", input="a", output="b"))
    with pytest.raises(ValueError, match="Unknown task"):
        bad.start()
    assert not bad.workdir.exists()


class SlowHubServer:
    """The test Hub, sending file bodies in small pieces with pauses (a slow connection)."""

    def __new__(cls):
        from hub_server import HubServer, _Handler

        class SlowWriter:
            def __init__(self, raw):
                self.raw = raw

            def write(self, data):
                if len(data) < 4096:
                    return self.raw.write(data)
                for start in range(0, len(data), 8192):
                    self.raw.write(data[start:start + 8192])
                    self.raw.flush()
                    time.sleep(0.02)
                return len(data)

            def __getattr__(self, name):
                return getattr(self.raw, name)

        class SlowHandler(_Handler):
            def setup(self):
                super().setup()
                self.wfile = SlowWriter(self.wfile)

        class Server(HubServer):
            def start(self):
                from http.server import ThreadingHTTPServer
                import threading

                handler = type("Handler", (SlowHandler,), {"hub": self})
                self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
                self._server.daemon_threads = True
                self.port = self._server.server_address[1]
                threading.Thread(target=self._server.serve_forever, daemon=True).start()

        return Server()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_cancelled_download_leaves_no_partial_files(tiny_weights, tmp_path):
    """Cancel in Slicer during a download: the worker is asked first, so huggingface_hub's
    ``.incomplete`` files are deleted instead of staying in the cache."""
    from DiffCodeRestoreLib import hub

    server = SlowHubServer()
    try:
        commit = server.add_repo("diffcode-test/tiny", {p.name: p.read_bytes() for p in tiny_weights.iterdir()})
        entry = hub.catalog_entry(tiny_weights, "tiny", "diffcode-test/tiny", commit, ["ct-denoise"], "Apache-2.0",
                                  None)
        hub.Catalog(tmp_path / "Models.json", "tiny", {"tiny": entry}).save()
        cache = tmp_path / "hf-cache"
        env = {**os.environ, "DIFFCODE_CATALOG": str(tmp_path / "Models.json"), "HF_ENDPOINT": server.endpoint,
               "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_XET": "1"}
        job = WorkerJob(WorkerRequest(action="download"), env=env).start()
        try:
            wait_for(job, lambda seen: any(e["event"] == "progress" and 0 < e["done"] < entry.size for e in seen))
            job.cancel()
            assert job.wait(60) == EXIT_CANCELLED
            with pytest.raises(WorkerError) as caught:
                job.outcome()
            assert caught.value.kind == "cancelled"
        finally:
            job.cleanup()
        leftovers = [p.name for p in cache.rglob("*") if p.is_file() and p.name.endswith(".incomplete")]
        assert leftovers == []
    finally:
        server.stop()


def test_stale_job_folders_are_swept_and_live_ones_kept(tmp_path):
    """A Slicer killed during a run leaves its job folder (a patient volume) in the temp folder."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def folder(name, owner=None, age=0.0):
        path = tmp_path / name
        path.mkdir()
        (path / "input.nrrd").write_bytes(b"patient data")
        if owner is not None:
            (path / OWNER_FILE).write_text(json.dumps({"pid": owner}))
        if age:
            past = time.time() - age
            os.utime(path, (past, past))
        return path

    of_dead = folder(WORKDIR_PREFIX + "dead", owner=dead.pid)
    of_live = folder(WORKDIR_PREFIX + "live", owner=os.getpid())
    old_unowned = folder(WORKDIR_PREFIX + "old", age=UNOWNED_STALE_S + 60)
    new_unowned = folder(WORKDIR_PREFIX + "new")
    unrelated = folder("other-dead", owner=dead.pid)
    removed = sweep_stale_workdirs(str(tmp_path))
    assert sorted(removed) == sorted([of_dead, old_unowned])
    assert not of_dead.exists() and not old_unowned.exists()
    assert of_live.exists() and new_unowned.exists() and unrelated.exists()
    job = WorkerJob(WorkerRequest(action="probe"), workdir=str(tmp_path / (WORKDIR_PREFIX + "mine")))
    assert sweep_stale_workdirs(str(tmp_path)) == [] and job.workdir.exists()  # this process's job is live
    job.cleanup()
