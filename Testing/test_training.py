"""Training mechanics on the tiny config: losses fall, checkpoints resume, patches are sane."""

import argparse
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from DiffCodeRestoreLib.training.config import TrainConfig
from DiffCodeRestoreLib.training.loop import RunLog, train_stage1, train_stage2
from DiffCodeRestoreLib.training.patches import PatchSampler, normalise_cases


def _phantom_cases(task, n=3, size=48, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    hq = np.stack([np.where((yy - 24) ** 2 + (xx - 24 + i) ** 2 < 300, 40.0, -1000.0) for i in range(n)]).astype(np.float32)
    if task != "ct-denoise":
        hq = (hq + 1000) / 50  # positive units
    noise = 30 if task == "ct-denoise" else 0.1
    return [SimpleNamespace(name="phantom", hq=hq, lq=(hq + rng.normal(0, noise, hq.shape)).astype(np.float32))]


class FixedBatch:
    """Always the same batch, so the loss must fall if the optimisation works."""

    def __init__(self, sampler):
        self.fixed = sampler.batch(2)

    def batch(self, per_task):
        return self.fixed


def _sampler(patch=32):
    cases = {t: normalise_cases(t, _phantom_cases(t)) for t in ("mri-sr", "ct-denoise", "pet-synthesis")}
    return PatchSampler(cases, patch=patch, seed=0)


def test_patches_cover_all_tasks_with_paired_augmentation():
    lq, hq, task = _sampler().batch(3)
    assert lq.shape == hq.shape == (9, 1, 32, 32) and task.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    ct = slice(3, 6)
    assert (lq[ct] - hq[ct]).abs().mean() < 0.05  # same crop and rotation for LQ and HQ


def test_training_on_a_subset_of_tasks():
    tc = TrainConfig.preset("tiny", tasks=["mri-sr"], batch_per_task=5)
    assert tc.model_config().num_tasks == 3  # the model keeps every task; only the data is a subset
    cases = {t: normalise_cases(t, _phantom_cases(t)) for t in tc.tasks}
    lq, _, task = PatchSampler(cases, patch=32, seed=0).batch(tc.batch_per_task)
    assert lq.shape[0] == 5 and set(task.tolist()) == {0}
    for bad in ([], ["mri-sr", "xray"]):
        with pytest.raises(ValueError, match="subset of"):
            TrainConfig.preset("tiny", tasks=bad).model_config()


def test_model_options_set_config_fields_over_the_preset():
    from DiffCodeRestoreLib.training.__main__ import _model_options, main

    tc = TrainConfig.preset("tiny", variant="no-prior", model_overrides={"codebook_size": 8})
    config = tc.model_config()
    assert config.codebook_size == 8 and config.prior == "none"  # the variant's switches still win
    assert tc.to_dict()["model_overrides"] == {"codebook_size": 8}  # recorded with the run
    assert _model_options(argparse.ArgumentParser(), ["codebook_size=64", "channels=[16, 32]"]) == {
        "codebook_size": 64, "channels": [16, 32]}
    with pytest.raises(SystemExit):
        main(["train", "--config", "tiny", "--model-option", "codebook_size"])


def _losses(path, stage):
    return [r["loss"] for r in map(json.loads, path.read_text().splitlines()) if r["stage"] == stage]


def test_tiny_training_loss_falls_and_resumes(tmp_path):
    torch.manual_seed(0)
    tc = TrainConfig.preset("tiny", stage1_iters=40, stage2_iters=40, lr=3e-3)
    sampler = FixedBatch(_sampler())
    log = RunLog(tmp_path / "log.jsonl")
    ae = train_stage1(tc, sampler, tmp_path, log, torch.device("cpu"), progress=False)
    s1 = _losses(tmp_path / "log.jsonl", "stage1")
    assert np.mean(s1[-5:]) < 0.7 * np.mean(s1[:5])
    model = train_stage2(tc, sampler, ae, tmp_path, log, torch.device("cpu"), progress=False)
    s2 = _losses(tmp_path / "log.jsonl", "stage2")
    assert np.mean(s2[-5:]) < 0.8 * np.mean(s2[:5])
    assert model.restore(torch.rand(1, 1, 16, 16), 1).shape == (1, 1, 16, 16)

    # Resume: a longer budget continues from the saved step instead of starting again.
    tc_more = TrainConfig.preset("tiny", stage1_iters=40, stage2_iters=45, lr=3e-3)
    train_stage2(tc_more, sampler, ae, tmp_path, log, torch.device("cpu"), progress=False)
    steps = [r["step"] for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines())
             if r["stage"] == "stage2"]
    assert steps[-6:] == [40, 41, 42, 43, 44, 45]
    saved = torch.load(tmp_path / "stage2.ckpt", weights_only=True)
    assert saved["step"] == 45 and saved["finished"]


def test_continued_training_starts_from_a_base_model_and_saves_snapshots(tmp_path, monkeypatch):
    """``base`` skips stage 1 and continues stage 2 from a trained, checksum-verified weights folder;
    ``snapshot_every`` leaves EMA weights folders along the way (the points of a learning curve)."""
    from DiffCodeRestoreLib.data import slices
    from DiffCodeRestoreLib.hub import verify_folder
    from DiffCodeRestoreLib.models import DiffCodeModel
    from DiffCodeRestoreLib.training.__main__ import save_weights_folder, train

    torch.manual_seed(0)
    base_folder = save_weights_folder(DiffCodeModel(TrainConfig.preset("tiny").model_config()), tmp_path / "base",
                                      fp16=False)
    splits = []
    monkeypatch.setattr(slices, "load_cases", lambda task, split, **kw: splits.append(split) or _phantom_cases(task))
    tc = TrainConfig.preset("tiny", base=str(base_folder), data_split="train-mixed", stage2_iters=4, snapshot_every=2)
    run = tmp_path / "run"
    final = train(tc, run, torch.device("cpu"), progress=False)
    assert set(splits) == {"train-mixed"}
    assert not (run / "stage1.ckpt").exists()  # no stage 1: the base's codebooks are the prior
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["step-00002", "step-00004"]
    for folder in [final, *(run / "snapshots").iterdir()]:
        verify_folder(folder)
    assert json.loads((run / "base.json").read_text())["sha256"]
    base, tuned = DiffCodeModel.from_pretrained(base_folder), DiffCodeModel.from_pretrained(final)
    assert torch.equal(base.codebook.codes, tuned.codebook.codes)  # frozen
    assert any(not torch.equal(a, b) for a, b in zip(base.state_dict().values(), tuned.state_dict().values()))


def test_without_a_stage1_encoder_the_refined_latent_is_held_to_its_nearest_code():
    """Continued training and adaptation have no HQ encoder to supervise z0; the commitment term is
    L1(z0, nearest code), so the latent stays where the frozen prior can be retrieved."""
    import torch.nn.functional as F

    from DiffCodeRestoreLib.models import DiffCodeModel
    from DiffCodeRestoreLib.training.loop import _Stage2Loss

    torch.manual_seed(0)
    tc = TrainConfig.preset("tiny")
    model = DiffCodeModel(tc.model_config())
    lq, hq, task = _sampler().batch(2)
    loss, metrics = _Stage2Loss(model, None, tc)(lq, hq, task, torch.ones(len(task)), torch.Generator().manual_seed(1))
    out = model(lq, task, steps=model.config.diffusion_timesteps, fidelity=torch.ones(len(task)),
                generator=torch.Generator().manual_seed(1))
    quant, _ = model.codebook.lookup(out["z0"], task)
    assert metrics["commitment_l1"].item() == pytest.approx(F.l1_loss(out["z0"], quant).item(), rel=1e-5)
    without, plain = _Stage2Loss(model, None, TrainConfig.preset("tiny", commitment_weight=0.0))(
        lq, hq, task, torch.ones(len(task)), torch.Generator().manual_seed(1))
    assert "commitment_l1" not in plain
    assert loss.item() == pytest.approx(without.item() + tc.commitment_weight * metrics["commitment_l1"].item(), rel=1e-5)


def test_the_data_split_is_chosen_for_every_task_or_per_task():
    from DiffCodeRestoreLib.training.__main__ import _data_split

    parser = argparse.ArgumentParser()
    assert _data_split(parser, "train-mixed") == "train-mixed" and _data_split(parser, None) is None
    per_task = _data_split(parser, "ct-denoise=train-mixed,pet-synthesis=train-mixed")
    assert [TrainConfig(data_split=per_task).split_for(t) for t in ("mri-sr", "ct-denoise", "pet-synthesis")] == [
        "train", "train-mixed", "train-mixed"]
    for bad in ("test", "xray=train", "ct-denoise=test"):
        with pytest.raises(SystemExit):
            _data_split(parser, bad)


def test_the_model_card_gives_each_tasks_ranges_from_its_split():
    """The card's data lines are read from the recipe of each task's split, so they follow --data-split."""
    from DiffCodeRestoreLib.training.model_card import _data_lines

    lines = _data_lines(TrainConfig(data_split={"ct-denoise": "train-wide-mixed"}).to_dict())
    assert ("`ct-denoise` split `train-wide-mixed`: pixels 0.3-3 mm, matrices 96-512, added soft-tissue noise "
            "5-400 HU; plus 16 x 6 domain-randomised synthetic slices") in lines
    assert "  - `mri-sr` split `train`: pixels 0.4-1.5 mm, matrices 128-512, reference SNR 20-400, k-space factors 2, 4.\n" in lines
    assert "  - `pet-synthesis` split `train`: dose 1/4-1/20, full counts 1e+06-1e+07.\n" in lines
