"""The Hub model card (README.md) written beside the exported weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..models import DiffCodeModel
from .config import split_for

CITATION = """@inproceedings{chen2025diffcode,
  title     = {DiffCode: Diffusion-based Codebook Prior for All-in-One Medical Image Restoration},
  author    = {Chen and Yang and Hou and Zhang and Wei and Zhou and Xu},
  booktitle = {Medical Image Computing and Computer Assisted Intervention (MICCAI)},
  year      = {2025},
  note      = {arXiv:2507.19874}
}"""


def _training_summary(run_dir: Path) -> str:
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    lines = []
    for stage in ("stage1", "stage2"):
        rs = [r for r in records if r["stage"] == stage]
        if rs:
            lines.append(f"- {stage}: {rs[-1]['step']} iterations, {rs[-1]['elapsed_s'] / 60:.0f} min of compute")
        usage = [r["code_usage"] for r in rs if "code_usage" in r]
        if usage:
            lines.append(f"  - codebook usage at the end of stage 1 (share of codes used recently, per task): {usage[-1]}")
    return "\n".join(lines)


def _range(values, unit: str = "", fmt: str = "g") -> str:
    low, high = values
    return f"{low:{fmt}}-{high:{fmt}}{unit}"


def _data_lines(train_cfg: dict) -> str:
    """The degradation ranges and synthetic share of each trained task, read from the recipe of its split
    (``data/recipes.py``), so the card cannot drift from what the run trained on."""
    from ..data.recipes import parameters

    data_split = train_cfg.get("data_split", "train")
    lines = []
    for task in train_cfg["tasks"]:
        split = split_for(data_split, task)
        p = parameters(task, split)
        if task == "ct-denoise":
            what = (f"pixels {_range(p['pixel_mm'], ' mm')}, matrices {_range(p['size_px'])}, added soft-tissue noise "
                    f"{_range(p['noise_hu'], ' HU')}")
        elif task == "mri-sr":
            what = (f"pixels {_range(p['pixel_mm'], ' mm')}, matrices {_range(p['size_px'])}, reference SNR "
                    f"{_range(p['snr'])}, k-space factors {', '.join(str(f) for f in p['factors'])}")
        else:
            dose = [f"1/{1 / d:.0f}" for d in sorted(p["dose_fraction"], reverse=True)]
            what = f"dose {dose[0]}-{dose[1]}, full counts {_range(p['full_counts'], fmt='.0e')}"
        synthetic = p.get("synthetic")
        if synthetic:
            what += (f"; plus {synthetic['cases']} x {synthetic['slices_per_case']} domain-randomised synthetic slices "
                     f"(`data/synth`: {', '.join(synthetic['shares'])}; random contrast, texture, geometry and dose)")
        lines.append(f"  - `{task}` split `{split}`: {what}.\n")
    return "".join(lines)


def _reproduce(train_cfg: dict, run_dir: Path) -> str:
    export = "`python -m DiffCodeRestoreLib.training export RUN_DIR OUT`."
    if not train_cfg.get("base"):
        return (f"Reproduce: `python -m DiffCodeRestoreLib.training train --config {train_cfg['model']} --variant "
                f"{train_cfg['variant']} --stage1-iters {train_cfg['stage1_iters']} --stage2-iters "
                f"{train_cfg['stage2_iters']}` (iterations, not wall-clock caps, end each stage), then {export}")
    base_file = run_dir / "base.json"
    base = json.loads(base_file.read_text(encoding="utf-8")) if base_file.is_file() else {}
    data_split = train_cfg.get("data_split", "train")
    split = data_split if isinstance(data_split, str) else ",".join(f"{t}={s}" for t, s in data_split.items())
    return (f"Continued from `{train_cfg['base']}` (revision {base.get('revision') or 'local'}, SHA-256 "
            f"`{base.get('sha256', '?')}`): stage 2 only, its codebooks frozen. Reproduce: `python -m "
            f"DiffCodeRestoreLib.training train --config {train_cfg.get('preset_name') or 'small-mixed'} "
            f"--base {train_cfg['base']} --data-split {split}`, then {export}")


def write_model_card(folder: Path, model: DiffCodeModel, run_dir: Path, results_md: Optional[Path]) -> Path:
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    train_cfg = json.loads((run_dir / "train_config.json").read_text(encoding="utf-8"))
    results = results_md.read_text(encoding="utf-8") if results_md and results_md.is_file() else (
        "_No benchmark results were attached to this export._")
    card = f"""---
license: apache-2.0
library_name: diffcode-restore
tags: [medical-imaging, image-restoration, super-resolution, denoising, mri, ct, pet, vq-codebook, diffusion]
---

# DiffCode Restore — `{train_cfg['model']}` model ({train_cfg['variant']})

One network for three medical image restoration tasks: **MRI super-resolution** (`mri-sr`), **CT low-dose
denoising** (`ct-denoise`) and **PET low-dose to full-dose synthesis** (`pet-synthesis`), working on 2D slices.

**This is an independent reimplementation of DiffCode (MICCAI 2025) from its published abstract.** No official code
or weights exist; architecture details, sizes and training recipe are this project's own choices and the numbers
below are not the paper's.

## Intended use and limits
- Research only. **Not for diagnosis or any clinical decision.** Restored images may contain plausible-looking
  structure that is not in the patient (hallucination) or lose small findings; always compare with the input.
- Trained on a handful of public volumes (below) with *simulated* degradations; real scanners, protocols, body
  regions and noise levels outside that range may be restored worse than by classical filters.
- PET was trained and tested on simulated brain PET only (no real PET data was available).

## Model
- Stage 1 (HQ prior): encoder -> task-adaptive bank of {cfg.num_codebooks} vector-quantised codebook(s) of
  {cfg.codebook_size} codes x {cfg.latent_dim} dims (EMA updates, k-means initialisation, dead-code restart) -> decoder.
- Stage 2 (restorer, the weights here): LQ encoder -> {cfg.diffusion_timesteps}-step latent diffusion
  (linear beta {cfg.beta_start}..{cfg.beta_end}, predicts the HQ latent) -> lookup in the task's codebook ->
  decoder fusing the prior with LQ features through a fidelity weight w in [0, 1] -> global residual.
- Prior: `{cfg.prior}`, diffusion: `{cfg.diffusion}`; {params / 1e6:.2f} M parameters; default steps
  {cfg.default_steps}, default fidelity {cfg.default_fidelity}.
- Input: one slice normalised as in `DiffCodeRestoreLib.tasks` (CT HU [-1024, 3071], PET SUV [0, 20], MRI robust
  99.5th percentile); H and W multiples of {cfg.size_multiple}.

## Training data and degradations
- CT: `lung1` chest CT (pyradiomics-bhklab 3.1.4) and the InVesalius `Cranium` head CT; projection-domain noise
  insertion (Poisson transmission counts, electronic noise, FBP) over a range of doses.
- MRI: MNI152 2009a T1 template (nilearn), the ITK example T1 head and BrainWeb-derived slices, with Rician noise
  added to the references; k-space truncation.
- PET: simulated FDG-like brain PET from the MNI152 tissue maps (+ AAL regions): PSF, attenuation, Poisson counts
  at full and reduced dose, the same MLEM reconstruction for both.
- Ranges per task, as the run's recipe has them:
{_data_lines(train_cfg)}- Public test subjects, never used for training: `lung2` chest CT, Colin27 T1, the ITK example tissue classes.
- Recipe: `{json.dumps(train_cfg)}`
{_training_summary(run_dir)}

{_reproduce(train_cfg, run_dir)}

## Results (public test split, AMIR protocol)
{results}

## Citation
```bibtex
{CITATION}
```
"""
    path = folder / "README.md"
    path.write_text(card, encoding="utf-8")  # the card has non-ASCII text; the locale may be C
    return path
