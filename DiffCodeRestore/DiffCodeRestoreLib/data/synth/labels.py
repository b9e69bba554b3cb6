"""Label maps from the registry sources, with the tasks each may train.

Which source may train which task follows ``data-sources.md`` (train only on what it marks for
training) and keeps every public-test subject out:
- ``mni_tissue``: MNI152 2009 grey/white-matter maps and brain mask (nilearn), thresholded to
  CSF / GM / WM. Population average, training for MRI and the PET anatomy: all three tasks.
- ``aal``: the AAL atlas (mricron-data) on the MNI grid with the MNI white matter and CSF. Marked for
  PET (regional uptake) only. Not for MRI or CT: AAL was delineated on the Colin27 single-subject
  brain, which is the MRI public test volume (ch2.nii.gz), so its region boundaries trace that
  subject's gyri. ``ch2.nii.gz`` itself is never loaded here.
- ``itk_classes``: the ITK k-means tissue classes of the T1 head (insighttoolkit5-examples). MRI and
  CT only: these classes are the PET public-test anatomy.
- ``lung1_hu``: tissue classes of the training chest CT lung1 by HU (pyradiomics-bhklab); all tasks.
  ``lung2`` is the CT public test and is never loaded.
- ``totalsegmentator``: TotalSegmentator's organ segmentation ``example_seg.nii.gz`` of its training
  CT (its unlabelled body filled with that CT's HU classes), once a fetch puts it in
  ``<cache>/sources/totalsegmentator/``; ``label_volume`` reads any integer label volume the same way.
  The DICOM reference files next to it are reserved for evaluation and refused.
3D volumes are (axis0, axis1, axis2) arrays of an LPS-oriented image (``array[k]`` axial) with the
spacing per array axis in mm.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from .. import cache_dir
from ..fetch import is_fetched
from ..sources import SOURCES
from .params import TASK_NAMES, SeedLike, SynthParams
from .tissues import TOTALSEGMENTATOR_V2, check_classes, classes_from_names

ALL_TASKS = TASK_NAMES
# Files that hold public-test or evaluation-only images: no loader here may read them.
RESERVED_FILES = ("lung2_image.nrrd", "ch2.nii.gz", "example_seg_dicom.nii.gz")
RESERVED_FOLDERS = ("example_ct_dicom",)

# lung1 / TotalSegmentator CT -> classes, on HU smoothed by 1 pixel in-plane (class, upper HU bound).
HU_BINS: Tuple[Tuple[str, float], ...] = (
    ("air", -950.0), ("lung", -700.0), ("lung", -200.0), ("fat", -30.0), ("fluid", 25.0),
    ("soft_tissue", 70.0), ("blood", 200.0), ("marrow", 500.0), ("bone", float("inf")))


@dataclass(frozen=True)
class LabelMap:
    """An integer label map with its spacing (mm per array axis), tissue classes and permitted tasks."""

    name: str
    labels: np.ndarray
    spacing: Tuple[float, ...]
    classes: Mapping[int, str] = field(default_factory=dict)
    tasks: Tuple[str, ...] = ALL_TASKS
    brain_only: bool = False
    content: str = ""

    def __post_init__(self):
        if self.labels.ndim not in (2, 3) or len(self.spacing) != self.labels.ndim:
            raise ValueError(f"label map {self.name!r}: {self.labels.ndim}D labels need one spacing per axis")
        check_classes(self.classes)

    def check_task(self, task: str) -> None:
        if task not in self.tasks:
            raise ValueError(f"label map {self.name!r} may not train {task!r} (allowed: {', '.join(self.tasks)}); "
                             "see data-sources.md")

    def pair(self, task: str, seed: SeedLike, params: Optional[SynthParams] = None, grid=None):
        """``synth_pair`` of this map, after checking that it may train ``task``."""
        from .pairs import synth_pair

        self.check_task(task)
        return synth_pair(task, self.labels, self.spacing, params, seed, self.classes, self.brain_only, grid)


def _refuse_reserved(path: Path) -> None:
    if path.name in RESERVED_FILES or any(part in RESERVED_FOLDERS for part in path.parts):
        raise ValueError(f"{path} is a public-test / evaluation-only file (data-sources.md): not for training")


def _as_array(image) -> Tuple[np.ndarray, Tuple[float, ...]]:
    """(array in numpy axis order, spacing per array axis) of a SimpleITK image."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image), tuple(float(s) for s in reversed(image.GetSpacing()))


def _read(path: Path):
    import SimpleITK as sitk

    _refuse_reserved(path)
    image = sitk.ReadImage(str(path))
    return sitk.DICOMOrient(image, "LPS") if image.GetDimension() == 3 else image


def _compact(labels: np.ndarray) -> np.ndarray:
    return labels.astype(np.uint8 if labels.max() < 256 else np.int32)


def _frozen(array: np.ndarray) -> np.ndarray:
    """Cached maps are shared between calls: make them read-only so no caller edits them."""
    array.setflags(write=False)
    return array


def hu_classes(hu: np.ndarray, first_label: int = 1) -> Tuple[np.ndarray, Dict[int, str]]:
    """Tissue classes of a CT volume (n, rows, cols) by HU (``HU_BINS``): labels ``first_label``...,
    0 outside the body (largest connected region above -500 HU, holes filled per slice, so the lungs
    are inside and the table and air are not). HU are smoothed by 1 pixel in-plane first, so that
    noise does not speckle the classes."""
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim == 2:
        hu = hu[None]
    smooth = ndimage.gaussian_filter(hu, (0, 1, 1), truncate=3.0)
    components, count = ndimage.label(smooth > -500)
    if count == 0:
        return np.zeros(hu.shape, np.uint8), {}
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    body = components == int(np.argmax(sizes))
    body = np.stack([ndimage.binary_fill_holes(s) for s in body])
    bounds = np.array([upper for _, upper in HU_BINS[:-1]], dtype=np.float32)
    labels = (np.digitize(smooth, bounds) + first_label) * body
    classes = {first_label + i: name for i, (name, _) in enumerate(HU_BINS)}
    return _compact(labels), classes


def _cache(cache: Optional[Path]) -> Path:
    return Path(cache) if cache is not None else cache_dir()


def _require(source: str, cache: Optional[Path]) -> None:
    if not is_fetched(SOURCES[source], cache):
        raise FileNotFoundError(f"source {source!r} is not fetched: run `python -m DiffCodeRestoreLib.data.fetch "
                                f"--only {source}`")


@functools.lru_cache(maxsize=None)
def _mni_classes(cache: Optional[Path]) -> Tuple[np.ndarray, Tuple[float, ...]]:
    from ..volumes import load_volume

    _require("nilearn", cache)
    gm, spacing = _as_array(load_volume("mni152_gm", cache))
    wm, _ = _as_array(load_volume("mni152_wm", cache))
    mask, _ = _as_array(load_volume("mni152_mask", cache))
    brain = np.stack([ndimage.binary_fill_holes(s) for s in (mask > 0) | (gm > 0.5) | (wm > 0.5)])
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    labels = (np.argmax(np.stack([csf, gm, wm]), axis=0) + 1) * brain  # 1 CSF, 2 GM, 3 WM
    return _frozen(labels.astype(np.uint8)), spacing


MNI_CLASSES = {1: "fluid", 2: "brain_gm", 3: "brain_wm"}


def mni_tissue_labels(cache: Optional[Path] = None) -> LabelMap:
    """MNI152 2009 CSF / grey / white matter (labels 1/2/3) from nilearn's probability maps, 1 mm."""
    labels, spacing = _mni_classes(cache)
    return LabelMap("mni_tissue", labels, spacing, MNI_CLASSES, ALL_TASKS, brain_only=True,
                    content="MNI152 2009 tissue classes (CSF, GM, WM), 1 mm, skull-stripped")


@functools.lru_cache(maxsize=None)
def _aal_on_mni(cache: Optional[Path]) -> np.ndarray:
    import SimpleITK as sitk

    from ..volumes import load_volume

    _require("mricron", cache)
    _require("nilearn", cache)
    aal = sitk.Resample(load_volume("aal", cache), load_volume("mni152_t1", cache), sitk.Transform(),
                        sitk.sitkNearestNeighbor, 0)
    return _frozen(sitk.GetArrayFromImage(aal))


def aal_labels(cache: Optional[Path] = None) -> LabelMap:
    """AAL's 116 regions (labels 101-216, grey matter) over the MNI CSF/GM/WM classes (1/2/3). PET only."""
    tissue, spacing = _mni_classes(cache)
    aal = _aal_on_mni(cache).astype(np.int32)
    labels = np.where((aal > 0) & (tissue != 3), aal + 100, tissue.astype(np.int32))
    classes = dict(MNI_CLASSES)
    classes.update({int(v) + 100: "brain_gm" for v in np.unique(aal) if v > 0})
    return LabelMap("aal", labels.astype(np.uint8), spacing, classes, ("pet-synthesis",), brain_only=True,
                    content="AAL atlas regions on the MNI152 grid with MNI white matter and CSF (PET only)")


@functools.lru_cache(maxsize=None)
def _itk_classes(cache: Optional[Path]) -> Tuple[np.ndarray, Tuple[float, ...]]:
    from ..volumes import load_volume

    _require("itk-examples", cache)
    labels, spacing = _as_array(load_volume("itk_t1_classes", cache))
    return _frozen(labels), spacing


def itk_class_labels(cache: Optional[Path] = None) -> LabelMap:
    """ITK's k-means classes of the T1 head, 2 x 3 x 2 mm: 0-1 air, 2 the T1-dark rim around the brain
    (skull, taken as bone), 3 T1-bright tissue outside it (scalp fat, marrow; taken as fat), 4 CSF,
    5 GM, 6 WM. MRI and CT only: these classes are the PET public-test anatomy."""
    labels, spacing = _itk_classes(cache)
    classes = {0: "air", 1: "air", 2: "bone", 3: "fat", 4: "fluid", 5: "brain_gm", 6: "brain_wm"}
    return LabelMap("itk_classes", labels, spacing, classes,
                    ("mri-sr", "ct-denoise"), content="ITK k-means tissue classes of a T1 head (not for PET)")


@functools.lru_cache(maxsize=None)
def _lung1_classes(cache: Optional[Path]) -> Tuple[np.ndarray, Tuple[float, ...], Dict[int, str]]:
    from ..volumes import load_volume

    _require("pyradiomics", cache)
    hu, spacing = _as_array(load_volume("lung1", cache))
    labels, classes = hu_classes(hu)
    return _frozen(labels), spacing, classes


def lung1_hu_labels(cache: Optional[Path] = None) -> LabelMap:
    """Tissue classes of the training chest CT lung1 by HU (``HU_BINS``), 0.57 x 0.57 x 5 mm."""
    labels, spacing, classes = _lung1_classes(cache)
    return LabelMap("lung1_hu", labels, spacing, classes, ALL_TASKS,
                    content="lung1 chest CT tissue classes by HU (air, lung, fat, fluid, soft tissue, ...)")


def label_volume(source: Union[str, Path, np.ndarray], spacing: Optional[Sequence[float]] = None,
                 names: Optional[Mapping[int, str]] = None, classes: Optional[Mapping[int, str]] = None,
                 fill_hu: Union[str, Path, np.ndarray, None] = None, tasks: Sequence[str] = ALL_TASKS,
                 name: Optional[str] = None) -> LabelMap:
    """Any integer label volume (a file SimpleITK reads, or an array with ``spacing``) as a LabelMap.

    names: {label: structure name} (e.g. TotalSegmentator's): tissue classes follow from the names
    (:func:`.tissues.tissue_for_name`); classes: explicit {label: tissue class}, which win. Labels
    with neither draw a class at random. fill_hu: a CT volume on the same grid whose HU classes fill
    the unlabelled (0) body, so a segmentation of organs gets fat, muscle, lung and air around them.
    Files of the evaluation-only sets (``RESERVED_FILES``, ``RESERVED_FOLDERS``) are refused.
    """
    if isinstance(source, np.ndarray):
        if spacing is None:
            raise ValueError("an array label volume needs its spacing (mm per axis)")
        labels, spacing = source, tuple(float(s) for s in spacing)
        name = name or "labels"
    else:
        path = Path(source)
        labels, spacing = _as_array(_read(path))
        name = name or path.name.split(".")[0]
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or not np.array_equal(labels, np.round(labels)):
            raise ValueError(f"{name}: a label volume must hold integers, got {labels.dtype} values")
    labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise ValueError(f"{name}: labels must be non-negative")
    table = classes_from_names(names or {})
    table.update({int(k): v for k, v in (classes or {}).items()})
    if fill_hu is not None:
        hu = fill_hu if isinstance(fill_hu, np.ndarray) else _as_array(_read(Path(fill_hu)))[0]
        if hu.shape != labels.shape:
            raise ValueError(f"{name}: fill_hu has shape {hu.shape}, the labels {labels.shape}")
        first = max([int(labels.max())] + list(table)) + 1  # above every label and every named label
        filled, fill_classes = hu_classes(hu, first)
        labels = np.where(labels == 0, filled.astype(np.int64), labels)
        table.update(fill_classes)
    return LabelMap(name, _compact(labels), tuple(spacing), table, tuple(tasks),
                    content=f"integer label volume {name}")


def combine_masks(masks: Mapping[str, Union[str, Path]], fill_hu: Union[str, Path, None] = None,
                  tasks: Sequence[str] = ALL_TASKS, name: str = "masks") -> LabelMap:
    """Binary masks on one grid ({structure name: file}, e.g. TotalSegmentator's per-structure
    outputs) as one label volume, labels 1.. in the given order (later masks win overlaps)."""
    labels, spacing, names = None, None, {}
    for index, (structure, path) in enumerate(masks.items(), start=1):
        array, this_spacing = _as_array(_read(Path(path)))
        if labels is None:
            labels, spacing = np.zeros(array.shape, np.int64), this_spacing
        elif array.shape != labels.shape:
            raise ValueError(f"mask {structure!r} has shape {array.shape}, the first {labels.shape}")
        labels[array > 0] = index
        names[index] = structure
    if labels is None:
        raise ValueError("no masks given")
    return label_volume(labels, spacing, names, fill_hu=fill_hu, tasks=tasks, name=name)


TOTALSEGMENTATOR_FOLDER = "totalsegmentator"


def totalsegmentator_labels(cache: Optional[Path] = None) -> LabelMap:
    """TotalSegmentator's ``example_seg.nii.gz`` (v2 "total" labels) with its training CT
    ``example_ct.nii.gz`` filling the unlabelled body, from ``<cache>/sources/totalsegmentator/``."""
    folder = _cache(cache) / "sources" / TOTALSEGMENTATOR_FOLDER
    seg, ct = folder / "example_seg.nii.gz", folder / "example_ct.nii.gz"
    if not seg.is_file():
        raise FileNotFoundError(f"{seg} is not there yet (TotalSegmentator source not fetched)")
    fill = ct if ct.is_file() else None
    return label_volume(seg, names=TOTALSEGMENTATOR_V2, fill_hu=fill, name="totalsegmentator",
                        tasks=ALL_TASKS)


LOADERS: Dict[str, Tuple[Callable[[Optional[Path]], LabelMap], Tuple[str, ...]]] = {
    "mni_tissue": (mni_tissue_labels, ALL_TASKS),
    "aal": (aal_labels, ("pet-synthesis",)),
    "itk_classes": (itk_class_labels, ("mri-sr", "ct-denoise")),
    "lung1_hu": (lung1_hu_labels, ALL_TASKS),
    "totalsegmentator": (totalsegmentator_labels, ALL_TASKS),
}


def label_sources_present(task: str, cache: Optional[Path] = None) -> List[str]:
    """Names of the label maps that ``training_label_maps`` would return, from the cache's state
    alone (nothing is loaded): for a dataset key, so that a newly fetched source rebuilds the bank."""
    root = _cache(cache)
    present = {
        "mni_tissue": is_fetched(SOURCES["nilearn"], cache),
        "aal": is_fetched(SOURCES["nilearn"], cache) and is_fetched(SOURCES["mricron"], cache),
        "itk_classes": is_fetched(SOURCES["itk-examples"], cache),
        "lung1_hu": is_fetched(SOURCES["pyradiomics"], cache),
        "totalsegmentator": (root / "sources" / TOTALSEGMENTATOR_FOLDER / "example_seg.nii.gz").is_file(),
    }
    return [name for name, (_, tasks) in LOADERS.items() if task in tasks and present[name]]


def training_label_maps(task: str, cache: Optional[Path] = None, names: Optional[Sequence[str]] = None
                        ) -> Dict[str, LabelMap]:
    """The label maps that may train ``task`` and are in the cache now ({name: map}); missing
    sources are skipped (the Debian ones and TotalSegmentator are optional)."""
    out = {}
    for name, (loader, tasks) in LOADERS.items():
        if task not in tasks or (names is not None and name not in names):
            continue
        try:
            out[name] = loader(cache)
        except FileNotFoundError:
            continue
    return out
