"""Multi-task diagnostic with the PET training anatomy as hard classes (separate cache)."""
import os, sys
from pathlib import Path
import numpy as np
prob = float(sys.argv[1]); cache = Path(sys.argv[2]); argv = sys.argv[3:]
os.environ["DIFFCODE_CACHE_DIR"] = str(cache)
from DiffCodeRestoreLib.data import recipes, slices
recipes.PARAMETERS[("pet-synthesis", "train")]["hard_class_probability"] = prob
slices.build("pet-synthesis", "train", cache=cache)
if prob == 0:  # the default recipe must rebuild the very pairs the shipped model trained on
    old = Path.home() / ".cache/diffcode-restore/datasets/pet-synthesis/train"
    for f in sorted(old.glob("*.npz")):
        a, b = np.load(f), np.load(cache / "datasets/pet-synthesis/train" / f.name)
        print(f.name, all(np.array_equal(a[k], b[k]) for k in a.files))
    sys.exit(0)
from DiffCodeRestoreLib.training.__main__ import main
sys.exit(main(argv))
