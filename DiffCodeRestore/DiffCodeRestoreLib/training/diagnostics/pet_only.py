"""Diagnostic: PET-only no-prior training with more cases and/or noiseless targets."""
import argparse, json, sys, time
from pathlib import Path
from types import SimpleNamespace
import numpy as np, torch
from DiffCodeRestoreLib.data import recipes
from DiffCodeRestoreLib.training.config import TrainConfig
from DiffCodeRestoreLib.training.loop import RunLog, train_stage2
from DiffCodeRestoreLib.training.patches import PatchSampler, normalise_cases

ap = argparse.ArgumentParser()
ap.add_argument("--cases", type=int, default=6)
ap.add_argument("--target", default="noisy", choices=["noisy", "clean", "mix"])
ap.add_argument("--iters", type=int, default=800)
ap.add_argument("--batch", type=int, default=12)
ap.add_argument("--variant", default="no-prior")
ap.add_argument("--out", required=True)
a = ap.parse_args()
torch.set_num_threads(2)
params = recipes.parameters("pet-synthesis", "train")
params["cases"] = a.cases
rng = np.random.default_rng(params["seed"])
anatomy, spacing = recipes._mni_anatomy(params, None)
cand = recipes.occupied(anatomy.brain > 0.5, keep=0.3)
counts = recipes._stratified_log(rng, params["full_counts"], a.cases)
doses = recipes._stratified_log(rng, params["dose_fraction"], a.cases)
t0 = time.time(); cases = []
for fc, df in zip(counts.tolist(), doses.tolist()):
    picks = np.sort(rng.choice(cand, params["slices_per_case"], replace=False))
    hq, lq, info, clean = recipes._pet_pairs(anatomy, picks, spacing, fc, df, params["iterations"], recipes._seed(rng), noise_free=True)
    tgt = {"noisy": hq, "clean": clean, "mix": df * lq + (1 - df) * clean}[a.target]
    cases.append(SimpleNamespace(hq=tgt, lq=lq))
print(f"simulated {a.cases} cases in {time.time()-t0:.1f}s", flush=True)
tc = TrainConfig(variant=a.variant, tasks=["pet-synthesis"], batch_per_task=a.batch, stage2_iters=a.iters)
sampler = PatchSampler({"pet-synthesis": normalise_cases("pet-synthesis", cases)}, tc.patch, tc.seed)
out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
t0 = time.time()
model = train_stage2(tc, sampler, None, out, RunLog(out / "log.jsonl"), torch.device("cpu"), progress=False)
model.save_pretrained(out / "final", fp16=False)
print(f"trained in {time.time()-t0:.1f}s", flush=True)
