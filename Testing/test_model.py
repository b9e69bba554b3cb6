"""The DiffCode network: codebook bank, few-step diffusion, restore, and safe persistence."""

import json

import pytest
import torch

from DiffCodeRestoreLib.models import DiffCodeConfig, DiffCodeModel, HQAutoencoder, WeightsError
from DiffCodeRestoreLib.models.codebook import CodebookBank
from DiffCodeRestoreLib.models.diffusion import FewStepSchedule


def test_lookup_returns_nearest_code_of_each_tasks_own_book():
    torch.manual_seed(0)
    bank = CodebookBank(num_books=3, size=16, dim=4)
    z = torch.randn(3, 4, 5, 5)
    task = torch.tensor([0, 1, 2])
    quant, idx = bank.lookup(z, task)
    for b in range(3):
        flat = z[b].permute(1, 2, 0).reshape(-1, 4)
        expected = torch.cdist(flat, bank.codes[b]).argmin(-1)
        assert torch.equal(idx[b].reshape(-1), expected)
        assert torch.allclose(quant[b].permute(1, 2, 0).reshape(-1, 4), bank.codes[b][expected])


def test_shared_codebook_ignores_task():
    bank = CodebookBank(num_books=1, size=8, dim=4)
    z = torch.randn(1, 4, 3, 3)
    assert torch.equal(bank.lookup(z, torch.tensor([0]))[1], bank.lookup(z, torch.tensor([2]))[1])


def test_ema_pulls_codes_to_latents_and_restarts_dead_codes():
    torch.manual_seed(0)
    bank = CodebookBank(num_books=2, size=4, dim=2, decay=0.5).train()
    target = torch.tensor([3.0, -3.0])
    z = target.view(1, 2, 1, 1).expand(1, 2, 4, 4).clone()
    for _ in range(20):
        bank(z, torch.tensor([1]))
    dist = (bank.codes[1] - target).norm(dim=-1)
    assert dist.min() < 1e-2  # the used code moved onto the latent
    assert torch.all(bank.usage[1] > 0)  # dead codes were restarted, not left unused
    assert bank.cluster_size[0].abs().sum() == 0


def test_kmeans_init_uses_every_code():
    torch.manual_seed(0)
    bank = CodebookBank(num_books=1, size=8, dim=2)
    z = torch.randn(4, 2, 8, 8) * 3
    bank.init_from_latents(z, torch.zeros(4, dtype=torch.long))
    _, idx = bank.lookup(z, torch.zeros(4, dtype=torch.long))
    assert idx.unique().numel() == 8


def test_schedule_steps_and_determinism():
    s = FewStepSchedule(4, 0.1, 0.99)
    assert s.step_indices(4) == [3, 2, 1, 0] and s.step_indices(1) == [3] and s.step_indices(2) == [3, 0]
    with pytest.raises(ValueError):
        s.step_indices(5)
    c = torch.randn(2, 3, 4, 4)
    f = lambda z, t: 0.5 * z + c  # noqa: E731
    a = s.sample(f, c, 4, torch.Generator().manual_seed(1))
    b = s.sample(f, c, 4, torch.Generator().manual_seed(1))
    d = s.sample(f, c, 4, torch.Generator().manual_seed(2))
    assert a.shape == c.shape and torch.equal(a, b) and not torch.equal(a, d)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return DiffCodeModel(DiffCodeConfig.preset("tiny")).eval()


def test_restore_shapes_seed_and_bad_options(tiny_model):
    x = torch.rand(2, 1, 24, 32)
    y1 = tiny_model.restore(x, 1, generator=torch.Generator().manual_seed(3))
    y2 = tiny_model.restore(x, 1, generator=torch.Generator().manual_seed(3))
    y3 = tiny_model.restore(x, 1, generator=torch.Generator().manual_seed(4))
    assert y1.shape == x.shape and torch.equal(y1, y2) and not torch.equal(y1, y3)
    assert (y1 >= 0).all()
    with pytest.raises(ValueError, match="fidelity"):
        tiny_model.restore(x, 1, fidelity=1.5)
    with pytest.raises(ValueError, match="multiples of 4"):
        tiny_model.restore(torch.rand(1, 1, 30, 32), 1)
    with pytest.raises(ValueError, match="task_index"):
        tiny_model.restore(x, 3)


def test_save_load_round_trip_is_identical(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path, fp16=False)
    loaded = DiffCodeModel.from_pretrained(tmp_path)
    x = torch.rand(1, 1, 16, 16)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(tiny_model.restore(x, 2, generator=g()), loaded.restore(x, 2, generator=g()))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "diffcode-restore" and config["prior"] == "bank"


def test_fp16_weights_are_close(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path, fp16=True)
    loaded = DiffCodeModel.from_pretrained(tmp_path)
    x = torch.rand(1, 1, 16, 16)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.allclose(tiny_model.restore(x, 0, generator=g()), loaded.restore(x, 0, generator=g()), atol=1e-2)


def test_corrupted_or_pickled_weights_are_refused(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(WeightsError, match="not a valid safetensors"):
        DiffCodeModel.from_pretrained(tmp_path)
    pickled = tmp_path / "model.pt"
    torch.save(tiny_model.state_dict(), pickled)
    with pytest.raises(WeightsError, match="only .safetensors"):
        DiffCodeModel.from_pretrained(pickled)
    (tmp_path / "config.json").unlink()
    with pytest.raises(WeightsError, match="needs config.json"):
        DiffCodeModel.from_pretrained(tmp_path)


def test_weights_that_do_not_match_the_config_are_refused(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["latent_dim"] = 12
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError):
        DiffCodeModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("variant", [dict(prior="shared"), dict(prior="bank", diffusion=False),
                                     dict(prior="none", diffusion=False)])
def test_ablation_variants_run(variant):
    model = DiffCodeModel(DiffCodeConfig.preset("tiny", **variant)).eval()
    assert model.restore(torch.rand(1, 1, 16, 16), 0).shape == (1, 1, 16, 16)
    assert (model.codebook is None) == (variant["prior"] == "none")
    assert (model.denoiser is None) == (not variant.get("diffusion", True))


def test_invalid_config_is_refused():
    with pytest.raises(ValueError, match="prior"):
        DiffCodeConfig(prior="mixed")
    with pytest.raises(ValueError, match="diffusion"):
        DiffCodeConfig(prior="none", diffusion=True)


def test_stage1_prior_transfers_to_restorer():
    cfg = DiffCodeConfig.preset("tiny")
    ae = HQAutoencoder(cfg)
    model = DiffCodeModel(cfg)
    model.load_prior(ae)
    assert torch.equal(model.codebook.codes, ae.codebook.codes)
    assert not any(p.requires_grad for p in model.codebook.parameters())


def test_half_precision_weights_run(tiny_weights):
    model = DiffCodeModel.from_pretrained(tiny_weights, dtype=torch.bfloat16)
    y = model.restore(torch.rand(1, 1, 16, 16, dtype=torch.bfloat16), 1)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
