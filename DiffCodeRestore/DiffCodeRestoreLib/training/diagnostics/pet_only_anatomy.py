"""Diagnostic: PET-only no-prior training on varied training anatomy (MNI only)."""
import argparse, time
from pathlib import Path
from types import SimpleNamespace
import numpy as np, torch
from scipy import ndimage
from DiffCodeRestoreLib.data import recipes
from DiffCodeRestoreLib.simulate import pet
from DiffCodeRestoreLib.training.config import TrainConfig
from DiffCodeRestoreLib.training.loop import RunLog, train_stage2
from DiffCodeRestoreLib.training.patches import PatchSampler, normalise_cases
from DiffCodeRestoreLib.data.planes import plane_stack
from DiffCodeRestoreLib.data.volumes import load_volume

ap = argparse.ArgumentParser()
ap.add_argument("--cases", type=int, default=6)
ap.add_argument("--hard", type=float, default=1.0, help="share of cases with hard classes")
ap.add_argument("--noise", type=float, nargs=2, default=[0.3, 0.7])
ap.add_argument("--warp", type=float, default=0.0, help="elastic displacement amplitude in px (0: none)")
ap.add_argument("--scale", type=float, nargs=2, default=[1.0, 1.0])
ap.add_argument("--texture", type=float, default=0.0, help="short-scale multiplicative uptake texture amplitude")
ap.add_argument("--iters", type=int, default=800)
ap.add_argument("--batch", type=int, default=12)
ap.add_argument("--out", required=True)
a = ap.parse_args()
torch.set_num_threads(2)
params = recipes.parameters("pet-synthesis", "train")
rng = np.random.default_rng(params["seed"])
anat, spacing = recipes._mni_anatomy(params, None)
t1 = plane_stack(load_volume("mni152_t1", None))[0]
g = recipes._on_grid({"t1": t1, "brain": plane_stack(load_volume("mni152_mask", None))[0]}, recipes.plane_stack(load_volume("mni152_mask", None))[1], params)[0]["t1"]
cand = recipes.occupied(anat.brain > 0.5, keep=0.3)
counts = recipes._stratified_log(rng, params["full_counts"], a.cases)
doses = recipes._stratified_log(rng, params["dose_fraction"], a.cases)

def warp(stack_list, rng):
    n, h, w = stack_list[0].shape
    s = rng.uniform(*a.scale)
    out = [np.empty_like(x) for x in stack_list]
    for i in range(n):
        yy, xx = np.mgrid[:h, :w].astype(np.float32)
        cy, cx = (h - 1) / 2, (w - 1) / 2
        dy = ndimage.gaussian_filter(rng.normal(size=(h, w)), 6) ; dx = ndimage.gaussian_filter(rng.normal(size=(h, w)), 6)
        if a.warp:
            dy *= a.warp / (dy.std() + 1e-9); dx *= a.warp / (dx.std() + 1e-9)
        else:
            dy[:] = 0; dx[:] = 0
        coords = [cy + (yy - cy) / s + dy, cx + (xx - cx) / s + dx]
        for k, x in enumerate(stack_list):
            out[k][i] = ndimage.map_coordinates(x[i], coords, order=1, mode="constant")
    return out

t0 = time.time(); cases = []
for fc, df in zip(counts.tolist(), doses.tolist()):
    picks = np.sort(rng.choice(cand, params["slices_per_case"], replace=False))
    gm, wm, brain, tt = anat.gm[picks], anat.wm[picks], anat.brain[picks], g[picks]
    if a.warp or a.scale != [1.0, 1.0]:
        gm, wm, brain, tt = warp([gm, wm, brain, tt], rng)
        brain = (brain > 0.5).astype(np.float32)
    if rng.uniform() < a.hard:
        inside = brain > 0.5
        csf = 1 - gm - wm
        means = np.array([np.median(tt[inside & (p > 0.9)]) for p in (csf, gm, wm)])
        noisy = tt + rng.normal(0.0, rng.uniform(*a.noise) * abs(means[2] - means[1]), tt.shape).astype(np.float32)
        label = np.argmin(np.abs(noisy[..., None] - means), axis=-1)
        gm, wm = (((label == k) & inside).astype(np.float32) for k in (1, 2))
    if a.texture:
        tex = np.exp(a.texture * np.stack([ndimage.gaussian_filter(rng.normal(size=gm.shape[1:]), 1.0) / 0.28 for _ in gm]))
        gm = gm * tex  # uptake texture inside grey matter
    an = recipes._Anatomy(gm, wm, brain, None if anat.regions is None else anat.regions[picks])
    hq, lq, info, _ = recipes._pet_pairs(an, np.arange(len(picks)), spacing, fc, df, params["iterations"], recipes._seed(rng))
    cases.append(SimpleNamespace(hq=hq, lq=lq))
print(f"simulated {a.cases} cases in {time.time()-t0:.1f}s", flush=True)
tc = TrainConfig(variant="no-prior", tasks=["pet-synthesis"], batch_per_task=a.batch, stage2_iters=a.iters)
sampler = PatchSampler({"pet-synthesis": normalise_cases("pet-synthesis", cases)}, tc.patch, tc.seed)
out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
t0 = time.time()
model = train_stage2(tc, sampler, None, out, RunLog(out / "log.jsonl"), torch.device("cpu"), progress=False)
model.save_pretrained(out / "final", fp16=False)
print(f"trained in {time.time()-t0:.1f}s", flush=True)
