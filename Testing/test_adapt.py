"""Adaptation to a user's scans (``adapt``): a tiny model on a small real CT, the folder it writes,
refusal, cancel and resume, the level from a real low-quality scan, bad input, and a two-process run.

The volume is a crop of TotalSegmentator's abdomen CT from the data cache (``make data``); the base is
the session's random tiny model, so any real adaptation beats it and the runs take seconds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DiffCodeRestoreLib.adapt import AdaptRefused, adapt
from DiffCodeRestoreLib.adapt_data import AdaptCancelled, estimate_level, read_inputs
from DiffCodeRestoreLib.cli import main
from DiffCodeRestoreLib.data.volumes import load_volume
from cli_checks import assert_one_line_error
from images import write_dicom_series

QUICK = {"patch": 32, "batch_per_task": 2, "lr": 3e-3, "warmup_iters": 2, "ema_decay": 0.9, "checkpoint_minutes": 0.0,
         "log_every": 1}
PATIENT = "Doe^Jane_0042"  # a file name like a patient's: it must not reach the model card


def abdomen_crop(rows=slice(5, 69), cols=slice(30, 94), slices=slice(40, 56)) -> sitk.Image:
    """16 real abdominal CT slices of 64 x 64 pixels at 3 mm (LPS), with air in front of the belly."""
    volume = load_volume("ts_abdomen_ct")
    return volume[cols, rows, slices]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model is fastest on one thread, and the test machines' cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hq") / f"{PATIENT}.nrrd"
    sitk.WriteImage(abdomen_crop(), str(path))
    return path


@pytest.fixture(scope="module")
def adapted(ct_file, tiny_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapted") / "my-ct-model"
    updates = []
    result = adapt([ct_file], "ct-denoise", out, base=str(tiny_weights), iterations=30, training=QUICK,
                   progress=updates.append)
    return result, updates


def test_tiny_model_adapts_on_a_real_ct_and_its_loss_falls(adapted, tiny_weights):
    result, updates = adapted
    losses = result.losses
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert result.scores["adapted model"].psnr > result.scores["base model"].psnr  # else it would not be written
    assert result.best_step > 0 and result.level == 5e4 and result.level_source == "headline default"
    assert "slices 15-16 of volume 1" in result.held_out  # one volume: a held-out block, a gap before it
    phases = [u.phase for u in updates]
    assert phases[0] == "reading" and "training" in phases and phases[-1] == "done"
    fractions = [u.fraction for u in updates]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert not result.run_dir.exists()  # removed once the model was written


def test_adapted_folder_is_a_verified_hub_folder_without_patient_names(adapted, tiny_weights):
    from DiffCodeRestoreLib.hub import sha256_of, verify_folder

    result, _ = adapted
    folder = result.folder
    names = {p.name for p in folder.iterdir()}
    assert names == {"config.json", "model.safetensors", "README.md", "adaptation.json", "checksums.sha256"}
    assert set(verify_folder(folder)) == names - {"checksums.sha256"}
    card = (folder / "README.md").read_text(encoding="utf-8")
    facts = json.loads((folder / "adaptation.json").read_text(encoding="utf-8"))
    base_sha = sha256_of(tiny_weights / "model.safetensors")
    assert base_sha in card and facts["base"]["sha256"] == base_sha
    assert "I0 = 5e+04" in card and facts["degradation"] == {"i0": 5e4, "source": "headline default"}
    assert facts["data"] == [{"volume": "volume 1", "grid": "64x64x16", "pixel_mm": [3.0, 3.0], "slice_mm": 3.0,
                              "slices_with_anatomy": 16, "training_slices": 12, "held_out_slices": 2}]
    umask = os.umask(0)
    os.umask(umask)
    assert {oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {oct(0o666 & ~umask)}  # not private
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    for text in (card, json.dumps(facts)):
        assert PATIENT not in text and "Doe" not in text and str(result.run_dir.parent) not in text


def test_adapted_folder_round_trips_through_restore_and_damage_is_refused(adapted, ct_file, tmp_path, capsys):
    result, _ = adapted
    restored = tmp_path / "restored.nrrd"
    assert main(["restore", str(ct_file), str(restored), "--task", "ct-denoise", "--model", str(result.folder),
                 "--quiet"]) == 0
    image = sitk.ReadImage(str(restored))
    assert image.GetSize() == (64, 64, 16)
    capsys.readouterr()
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for item in result.folder.iterdir():
        (damaged / item.name).write_bytes(item.read_bytes())
    weights = bytearray((damaged / "model.safetensors").read_bytes())
    weights[-5] ^= 0xFF
    (damaged / "model.safetensors").write_bytes(bytes(weights))
    code = main(["restore", str(ct_file), str(tmp_path / "again.nrrd"), "--task", "ct-denoise", "--model",
                 str(damaged), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "damaged" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "again.nrrd").exists()


def test_weights_import_takes_the_adapted_folder_and_restore_finds_it_by_name(adapted, ct_file, tmp_path, capsys,
                                                                              monkeypatch):
    result, _ = adapted
    monkeypatch.setenv("DIFFCODE_MODELS_DIR", str(tmp_path / "models"))
    assert main(["weights", "import", str(result.folder)]) == 0
    capsys.readouterr()
    assert main(["weights", "list"]) == 0
    listed = capsys.readouterr().out
    assert "my-ct-model" in listed and "adapted for ct-denoise; held-out PSNR" in listed
    restored = tmp_path / "by-name.nrrd"
    assert main(["restore", str(ct_file), str(restored), "--task", "ct-denoise", "--model", "my-ct-model",
                 "--quiet"]) == 0
    assert sitk.ReadImage(str(restored)).GetSize() == (64, 64, 16)


def test_a_model_no_better_than_its_base_is_refused_then_forced_without_training(ct_file, tiny_weights, tmp_path):
    """lr 0 leaves the weights as they are: the held-out scores tie, which is not better."""
    out = tmp_path / "same"
    options = {**QUICK, "lr": 0.0}
    with pytest.raises(AdaptRefused, match=r"not better than .* nothing was written.*--force"):
        adapt([ct_file], "ct-denoise", out, base=str(tiny_weights), iterations=3, training=options)
    assert not out.exists() and (tmp_path / "same.run" / "stage2.ckpt").is_file()
    result = adapt([ct_file], "ct-denoise", out, base=str(tiny_weights), iterations=3, training=options, force=True)
    assert result.folder == out and (out / "model.safetensors").is_file()
    assert len(result.losses) == 0  # the finished run was read back, not trained again


class CancelAfter:
    """Cancels once the progress callback has seen ``step`` training steps (as a GUI's Cancel would)."""

    def __init__(self, step: int):
        self.step, self.cancelled = step, False

    def __call__(self, update) -> None:
        if update.phase == "training" and update.step >= self.step:
            self.cancelled = True


def test_cancel_keeps_the_checkpoint_and_the_same_call_resumes(ct_file, tiny_weights, tmp_path):
    out = tmp_path / "resumed"
    cancel = CancelAfter(4)
    with pytest.raises(AdaptCancelled, match="stopped at step 4; .*again with the same settings to resume"):
        adapt([ct_file], "ct-denoise", out, base=str(tiny_weights), iterations=8, training=QUICK, progress=cancel,
              cancel=cancel, keep_run=True)
    assert not out.exists()
    result = adapt([ct_file], "ct-denoise", out, base=str(tiny_weights), iterations=8, training=QUICK, keep_run=True)
    steps = [r["step"] for r in map(json.loads, (result.run_dir / "log.jsonl").read_text().splitlines())
             if r["stage"] == "stage2"]
    assert steps == list(range(1, 9)) and len(result.losses) == 4  # steps 5-8 in the second call
    with pytest.raises(ValueError, match="other settings .*level"):
        adapt([ct_file], "ct-denoise", tmp_path / "other", base=str(tiny_weights), iterations=8, training=QUICK,
              i0=1e4, run_dir=result.run_dir)


def test_like_estimates_the_level_from_a_real_low_quality_scan(tmp_path):
    from DiffCodeRestoreLib.adapt_data import degrade
    from DiffCodeRestoreLib.simulate import mri

    volume = load_volume("ts_abdomen_ct")
    folder = tmp_path
    hq_path, lq_path = folder / "hq.nrrd", folder / "lq.nrrd"
    sitk.WriteImage(volume[:, :, 30:60], str(hq_path))
    low = volume[:, :, 70:76]  # other slices of the patient: a "real" low-dose scan made at I0 = 2e4
    array = sitk.GetArrayFromImage(low).astype(np.float32)
    noisy = sitk.GetImageFromArray(np.round(degrade("ct-denoise", array, (3.0, 3.0), 2e4, 1)).astype(np.int16))
    noisy.CopyInformation(low)
    sitk.WriteImage(noisy, str(lq_path))
    volumes = read_inputs([hq_path], "ct-denoise")
    level, what = estimate_level("ct-denoise", lq_path, volumes)
    assert 2e4 / 1.5 < level < 2e4 * 1.5, (level, what)
    assert "soft-tissue noise" in what and "HU" in what

    brain = load_volume("mni152_t1")  # MRI: the k-space band of a scan made at factor 3
    sitk.WriteImage(brain[:, :, 60:90], str(folder / "t1.nrrd"))
    part = brain[:, :, 100:106]
    lq = sitk.GetImageFromArray(mri.kspace_truncate(sitk.GetArrayFromImage(part), 3.0))
    lq.CopyInformation(part)
    sitk.WriteImage(lq, str(folder / "t1-lq.nrrd"))
    level, what = estimate_level("mri-sr", folder / "t1-lq.nrrd", read_inputs([folder / "t1.nrrd"], "mri-sr"))
    assert 2.5 < level < 3.6 and "spectrum" in what, (level, what)


def test_pet_pairs_insert_the_noise_of_fewer_counts():
    """A full-dose PET made by the project's emission simulator at 3e6 counts stands for the user's scan:
    the counts are read back from its noise, and the pairs add the noise of 1/12 of them."""
    from DiffCodeRestoreLib.adapt_data import HQVolume, degrade, pet_counts, relative_noise
    from DiffCodeRestoreLib.simulate import pet

    yy, xx = np.mgrid[:64, :64]
    brain = (((yy - 32) / 26.0) ** 2 + ((xx - 32) / 21.0) ** 2 < 1).astype(np.float32)
    grey = brain * (((yy - 32) / 26.0) ** 2 + ((xx - 32) / 21.0) ** 2 > 0.55)
    gm, wm, mask = (np.repeat(a[None], 4, 0) for a in (grey, brain - grey, brain))
    activity = pet.activity_from_tissues(gm, wm, mask, 2.0, seed=1)
    mu = pet.attenuation_from_tissues(mask, 2.0)
    full, _ = pet.simulate_pair(activity, mu, 2.0, 3e6, 1.0, seed=2)
    volume = HQVolume("volume 1", Path("pet.nrrd"), full, np.arange(4), (2.0, 2.0), 2.0, (64, 64, 4))
    counts = pet_counts([volume])
    assert 3e6 / 2.5 < counts < 3e6 * 2.5, counts
    lq = degrade("pet-synthesis", full, (2.0, 2.0), 1 / 12, 0, counts)
    assert lq.shape == full.shape and lq.min() >= 0
    assert relative_noise(lq, "pet-synthesis") > 2 * relative_noise(full, "pet-synthesis")
    inside = mask > 0
    assert abs(lq[inside].mean() / full[inside].mean() - 1) < 0.05  # noise, not a change of uptake


def test_bad_inputs_are_refused_in_one_line(run, ct_file, tiny_weights, tmp_path):
    base = ["--base", str(tiny_weights), "--iterations", "2", "--quiet"]
    labels = sitk.GetImageFromArray((np.arange(16 * 64 * 64).reshape(16, 64, 64) // 8192 % 4).astype(np.uint8))
    sitk.WriteImage(labels, str(tmp_path / "labels.nrrd"))
    code, _, err = run("adapt", str(tmp_path / "labels.nrrd"), "--task", "ct-denoise", "--out", str(tmp_path / "a"),
                       *base)
    assert_one_line_error(code, err, "looks like a label map", only_line=False)
    code, _, err = run("adapt", str(ct_file), "--task", "mri-sr", "--out", str(tmp_path / "b"), *base)
    assert_one_line_error(code, err, r"volume 1 .* looks like CT low-dose denoising .* not MRI super-resolution",
                          only_line=False)
    sitk.WriteImage(abdomen_crop(slices=slice(40, 45)), str(tmp_path / "short.nrrd"))
    code, _, err = run("adapt", str(tmp_path / "short.nrrd"), "--task", "ct-denoise", "--out", str(tmp_path / "c"),
                       *base)
    assert_one_line_error(code, err, "too few slices: volume 1 has 5", only_line=False)
    brain = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 800, (12, 64, 64)).astype(np.float32))
    series = write_dicom_series(sitk.Cast(brain, sitk.sitkInt16), tmp_path / "mr-series", modality="MR")
    code, _, err = run("adapt", str(ct_file), str(series), "--task", "ct-denoise", "--out", str(tmp_path / "d"), *base)
    assert_one_line_error(code, err, r"volume 2 .* looks like MRI super-resolution \(DICOM modality MR\)",
                          only_line=False)
    code, _, err = run("adapt", str(ct_file), "--task", "ct-denoise", "--out", str(tmp_path / "e"), "--scale", "2",
                       *base)
    assert_one_line_error(code, err, "--scale is the level of mri-sr", exits=(2,), only_line=False)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    code, _, err = run("adapt", str(ct_file), "--task", "ct-denoise", "--out", str(tmp_path / "taken"), *base)
    assert_one_line_error(code, err, "already exists: give a new folder", only_line=False)
    assert not any((tmp_path / name).exists() for name in "abcde")


def test_command_line_adapts_and_prints_the_held_out_table(run, ct_file, tiny_weights, tmp_path):
    out = tmp_path / "cli-model"
    code, stdout, err = run("adapt", str(ct_file), "--task", "ct-denoise", "--out", str(out), "--base",
                            str(tiny_weights), "--iterations", "3", "--force", "--quiet", "--i0", "3e4")
    assert code == 0, err
    assert re.search(r"base model \(tiny-weights\d*\) +\d+\.\d\d", stdout) and "best filter: " in stdout
    assert f"--model {out}" in stdout and (out / "checksums.sha256").is_file()
    assert json.loads((out / "adaptation.json").read_text())["degradation"]["i0"] == 3e4


CHILD = """
import hashlib, sys
from pathlib import Path
from types import SimpleNamespace
import numpy as np, SimpleITK as sitk, torch
from DiffCodeRestoreLib.adapt import adapt
from DiffCodeRestoreLib.training import distributed
from DiffCodeRestoreLib.training.config import TrainConfig
from DiffCodeRestoreLib.training.loop import RunLog, train_stage1, train_stage2
from DiffCodeRestoreLib.training.patches import PatchSampler, normalise_cases

def digest(module):
    tensors = list(module.parameters()) + list(module.buffers())
    return hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in tensors)).hexdigest()

hq, base, out, report, runs = sys.argv[1:6]
runs = Path(runs)
# the training stages (stage 1 with its codebook k-means and EMA statistics, then stage 2) on the CT,
# then adaptation in the same process group (adapt joins it, and leaves it at the end)
dist, device = distributed.setup("cpu")
hq_slices = sitk.GetArrayFromImage(sitk.ReadImage(hq)).astype(np.float32)
noisy = hq_slices + np.random.default_rng(0).normal(0, 40, hq_slices.shape).astype(np.float32)
positive = SimpleNamespace(hq=(hq_slices + 1024) / 50, lq=np.clip(noisy + 1024, 0, None) / 50)  # as MRI and PET
cases = {"ct-denoise": normalise_cases("ct-denoise", [SimpleNamespace(hq=hq_slices, lq=noisy)]),
         "mri-sr": normalise_cases("mri-sr", [positive]), "pet-synthesis": normalise_cases("pet-synthesis", [positive])}
sampler = PatchSampler(cases, 32, seed=dist.rank)
tc = TrainConfig.preset("tiny", stage1_iters=6, stage2_iters=3, codebook_warmup=2)
log = RunLog(runs / "log.jsonl", enabled=dist.is_main)
ae = train_stage1(tc, sampler, runs, log, device, progress=False, dist=dist)
model = train_stage2(tc, sampler, ae, runs, log, device, progress=False, dist=dist)
result = adapt([hq], "ct-denoise", out, base=base, iterations=4, device="cpu", force=True,
               training={"patch": 32, "batch_per_task": 2, "lr": 3e-3, "warmup_iters": 1, "checkpoint_minutes": 0.0})
open(report, "w").write(f"{digest(result.final_model)} {result.steps} {result.folder} {digest(ae)} {digest(model)}")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_with_gloo_train_one_model(ct_file, tiny_weights, tmp_path):
    """What torchrun does, by hand: two processes, env:// rendezvous, gloo; adaptation and both training
    stages keep the replicas identical, and only rank 0 writes."""
    port, out = _free_port(), tmp_path / "ddp-model"
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(ct_file), str(tiny_weights), str(out),
                               str(tmp_path / f"rank{rank}.txt"), str(tmp_path / "train-run")],
                              env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    reports = [(tmp_path / f"rank{rank}.txt").read_text().split() for rank in range(2)]
    assert reports[0][0] == reports[1][0]  # the same weights and buffers on both processes: gradients were averaged
    assert reports[0][3:] == reports[1][3:]  # training's stage 1 (codebook statistics too) and stage 2 alike
    assert reports[0][1] == reports[1][1] == "4"
    assert reports[0][2] == reports[1][2] == str(out)
    assert (out / "checksums.sha256").is_file() and not (tmp_path / "ddp-model.run").exists()  # rank 0 wrote it
    assert sorted(p.name for p in (tmp_path / "train-run").iterdir()) == ["log.jsonl", "stage1.ckpt", "stage2.ckpt"]
    assert time.monotonic() - started < 60


def test_ctrl_c_on_the_command_line_stops_cleanly_and_keeps_the_checkpoint(ct_file, tiny_weights, tmp_path):
    out = tmp_path / "interrupted"
    command = [sys.executable, "-m", "DiffCodeRestoreLib", "adapt", str(ct_file), "--task", "ct-denoise", "--out",
               str(out), "--base", str(tiny_weights), "--iterations", "100000", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = tmp_path / "interrupted.run" / "log.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if log.is_file() and '"stage": "stage2"' in log.read_text():  # ten steps were logged
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert re.match(r"diffcode-restore: error: stopped at step \d+; .*again with the same settings to resume", last)
    saved = torch.load(tmp_path / "interrupted.run" / "stage2.ckpt", weights_only=True)
    assert saved["step"] >= 10 and not saved["finished"] and not out.exists()


def test_the_worker_adapts_with_progress_events(ct_file, tiny_weights, tmp_path):
    """The Slicer section's path: a worker process runs ``adapt`` and reports progress and the table."""
    from DiffCodeRestoreLib.worker import WorkerRequest, parse_event

    out = tmp_path / "worker-model"
    request = WorkerRequest(action="adapt", inputs=[str(ct_file)], output=str(out), task="ct-denoise",
                            model=str(tiny_weights), device="cpu", options={"iterations": 3, "level": 3e4,
                                                                            "force": True})
    (tmp_path / "request.json").write_text(request.validate().to_json())
    done = subprocess.run([sys.executable, "-m", "DiffCodeRestoreLib.worker", str(tmp_path / "request.json")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    events = [e for e in map(parse_event, done.stdout.splitlines()) if e]
    assert done.returncode == 0, done.stderr
    phases = [e["phase"] for e in events if e["event"] == "progress"]
    assert {"reading", "simulating", "scoring", "training", "done"} <= set(phases)
    final = events[-1]
    assert final["event"] == "done" and final["folder"] == str(out) and "adapted model" in final["table"]
    assert json.loads((out / "adaptation.json").read_text())["degradation"]["i0"] == 3e4


# ---- the installed Slicer extension: only the files DiffCodeRestore/CMakeLists.txt lists ----------------

INSTALLED_CHILD = """
import json, sys
from DiffCodeRestoreLib.worker import main
from DiffCodeRestoreSlicerLib import install

code = main(sys.argv[1:2])
ours = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())
        if module is not None and name.split(".")[0] in ("DiffCodeRestoreLib", "DiffCodeRestoreSlicerLib")}
print("INSTALLED " + json.dumps({"code": code, "path": sys.path, "ours": ours,
                                 "tops": sorted({name.split(".")[0] for name in sys.modules}),
                                 "adapt_file": str(install.ADAPT_REQUIREMENTS_FILE),
                                 "adapt": [str(r) for r in install.adapt_requirements()]}))
"""


def installed_extension(folder: Path) -> Path:
    """Exactly the files DiffCodeRestore/CMakeLists.txt ships (scripts and resources), laid out as Slicer
    installs a scripted module: one folder holding the module file, its packages and Resources/."""
    import shutil

    from test_slicer_packaging import MODULE_DIR, cmake_list

    cmake = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    for variable in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
        for relative in cmake_list(cmake, variable):
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(MODULE_DIR / relative, target)
    return folder


def distributions_installed_with(names) -> set:
    """The distributions pip installs for ``names``: them and their requirements (without extras), recursively."""
    import importlib.metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    closure, todo = set(), list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in closure:
            continue
        closure.add(name)
        try:
            wanted = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [r.name for r in map(Requirement, wanted) if r.marker is None or r.marker.evaluate({"extra": ""})]
    return closure


def site_packages_with_only(distributions, folder: Path) -> Path:
    """A site-packages folder holding only ``distributions``, as links to this environment's files (their
    packages, modules, shared libraries and metadata; a top-level folder shared with others comes whole)."""
    import importlib.metadata

    folder.mkdir()
    for name in sorted(distributions):
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for top in sorted({file.parts[0] for file in distribution.files or []} - {".."}):
            source = Path(distribution.locate_file(top))
            if source.exists() and not os.path.lexists(folder / top):
                (folder / top).symlink_to(source)
    return folder


def test_the_installed_extensions_files_suffice_to_adapt(ct_file, tiny_weights, tmp_path):
    """Slicer's "Adapt to my scans" path (a worker runs ``adapt``) from the installed extension's files alone,
    with the checkout unimportable and only the packages the module installs present: requirements.txt and
    requirements-adapt.txt (read from the installed Resources/) and what pip brings with them. Nothing of
    data/ or of the benchmark's BM3D/nilearn side is needed."""
    from DiffCodeRestoreLib.hub import verify_folder
    from DiffCodeRestoreLib.worker import WorkerRequest, parse_event
    from DiffCodeRestoreSlicerLib.install import read_requirements

    extension = installed_extension(tmp_path / "qt-scripted-modules").resolve()
    requirements = [r for name in ("requirements.txt", "requirements-adapt.txt")
                    for r in read_requirements(extension / "Resources" / name)]
    present = distributions_installed_with(r.name for r in requirements)
    assert {"torch", "scipy", "scikit-image", "pywavelets"} <= present and not {"bm3d", "nilearn"} & present
    site_packages = site_packages_with_only(present, tmp_path / "site-packages")
    out = tmp_path / "adapted"
    request = WorkerRequest(action="adapt", inputs=[str(ct_file)], output=str(out), task="ct-denoise",
                            model=str(tiny_weights), device="cpu", options={"iterations": 3, "force": True})
    (tmp_path / "request.json").write_text(request.validate().to_json())
    # -S: no site module, so neither this environment's site-packages nor its .pth files (the editable
    # install's path to the checkout) are seen; only the extension and the packages the module installs.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(extension), str(site_packages)]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-S", "-c", INSTALLED_CHILD, str(tmp_path / "request.json")],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("INSTALLED ")]
    report = json.loads(line.split(" ", 1)[1])
    events = [e for e in map(parse_event, done.stdout.splitlines()) if e]
    assert report["code"] == 0 and events[-1]["event"] == "done", done.stdout[-3000:] + done.stderr[-3000:]
    assert events[-1]["folder"] == str(out) and "adapted model" in events[-1]["table"]
    assert set(verify_folder(out)) == {"config.json", "model.safetensors", "README.md", "adaptation.json"}

    checkout = Path(__file__).resolve().parents[1]
    assert str(checkout / "DiffCodeRestore") not in report["path"] and str(checkout) not in report["path"]
    assert Path(report["ours"]["DiffCodeRestoreLib"]).is_relative_to(extension)
    assert all(Path(file).is_relative_to(extension) for file in report["ours"].values()), report["ours"]
    assert {"DiffCodeRestoreLib.training.loop", "DiffCodeRestoreLib.benchmark.baselines"} <= set(report["ours"])
    assert not [name for name in report["ours"] if name.startswith("DiffCodeRestoreLib.data")]
    assert not {"bm3d", "nilearn"} & set(report["tops"])
    assert Path(report["adapt_file"]) == extension / "Resources" / "requirements-adapt.txt"
    assert report["adapt"] == [str(r) for r in read_requirements(extension / "Resources" / "requirements-adapt.txt")]
    assert {"pywt", "skimage", "scipy"} <= set(report["tops"])  # what requirements-adapt.txt is for
