"""Reading and writing volumes: NRRD, NIfTI, MHA files and DICOM series folders in; NRRD/NIfTI out.

Why a module of its own: every way a file can be wrong (unreadable, 4D, RGB, empty, constant, NaN)
must end as one clear line before any work starts, and an output must appear complete or not at
all (written under a temporary name in the same folder, then renamed), so an interrupted run never
leaves a half-written file and the input is never opened for writing.

Geometry stays in SimpleITK's LPS convention; NIfTI (RAS on disk) is converted by ITK both ways.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Union

import numpy as np
import SimpleITK as sitk

PathLike = Union[str, "os.PathLike[str]"]

INPUT_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
OUTPUT_SUFFIXES = (".nrrd", ".nii", ".nii.gz")
DICOM_MODALITY_TAG = "0008|0060"
PROVENANCE_PREFIX = "DiffCode_"


class VolumeError(ValueError):
    """A volume that cannot be restored or written; the message is one line saying what to do."""


def suffix_of(path: PathLike) -> str:
    """The format suffix, with ``.nii.gz`` as one suffix."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def stem_of(path: PathLike) -> str:
    name = Path(path).name
    return name[: len(name) - len(suffix_of(path))]


def is_image_file(path: PathLike) -> bool:
    return Path(path).is_file() and suffix_of(path) in INPUT_SUFFIXES


def dicom_series_ids(folder: PathLike) -> List[str]:
    """Series instance UIDs of the DICOM files directly inside ``folder`` (empty if none)."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK prints "No Series were found" on stderr
    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def read_volume(path: PathLike) -> sitk.Image:
    """Read an image file or a folder holding one DICOM series, checked for restorability.

    The DICOM Modality of a series is copied to the image's metadata under ``0008|0060`` (as
    SimpleITK does for single DICOM files) so that callers can suggest a task.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeError(f"{path}: no such file or folder.")
    if path.is_dir():
        image = _read_dicom_series(path)
    else:
        image = _read_file(path)
    image = _drop_trailing_singleton_axes(image, path)
    check_volume(image, str(path))
    return image


def _read_file(path: Path) -> sitk.Image:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise VolumeError(
            f"{path}: cannot read this file; give a NRRD, NIfTI, MHA file or a DICOM series folder."
        ) from None
    _check_header(reader.GetDimension(), reader.GetNumberOfComponents(), reader.GetSize(), str(path))
    try:
        return reader.Execute()
    except RuntimeError:
        raise VolumeError(f"{path}: the file is damaged or truncated (its header reads, its voxels do not).") from None


def _read_dicom_series(folder: Path) -> sitk.Image:
    series = dicom_series_ids(folder)
    if not series:
        raise VolumeError(f"{folder}: the folder holds no DICOM series; give an image file or a DICOM series folder.")
    if len(series) > 1:
        raise VolumeError(
            f"{folder}: the folder holds {len(series)} DICOM series; put each series in its own folder."
        )
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError:
        raise VolumeError(f"{folder}: the DICOM series cannot be read (damaged or unsupported files).") from None
    _check_header(image.GetDimension(), image.GetNumberOfComponentsPerPixel(), image.GetSize(), str(folder))
    if reader.HasMetaDataKey(0, DICOM_MODALITY_TAG):
        image.SetMetaData(DICOM_MODALITY_TAG, reader.GetMetaData(0, DICOM_MODALITY_TAG).strip())
    return image


def _check_header(dimension: int, components: int, size, label: str) -> None:
    if components > 1:
        raise VolumeError(
            f"{label}: a vector/RGB image ({components} components per voxel); give a scalar (grey-value) volume."
        )
    effective = [s for s in size[3:] if s != 1]
    if dimension > 3 and effective:
        raise VolumeError(
            f"{label}: a {dimension}D image (e.g. a time series); restore one 3D volume at a time."
        )


def _drop_trailing_singleton_axes(image: sitk.Image, path: Path) -> sitk.Image:
    """A (x, y, z, 1) NIfTI is a 3D volume; extract it so the rest of the code sees 3D."""
    if image.GetDimension() <= 3:
        return image
    size = list(image.GetSize())
    extract_size = size[:3] + [0] * (len(size) - 3)
    return sitk.Extract(image, extract_size, [0] * len(size), sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX)


def check_volume(image: sitk.Image, label: str = "input") -> None:
    """Raise ``VolumeError`` unless ``image`` is a non-empty, finite, non-constant 2D/3D scalar image."""
    _check_header(image.GetDimension(), image.GetNumberOfComponentsPerPixel(), image.GetSize(), label)
    if image.GetDimension() < 2 or image.GetDimension() > 3:
        raise VolumeError(f"{label}: a {image.GetDimension()}D image; give a 2D image or a 3D volume.")
    if "complex" in image.GetPixelIDTypeAsString():
        raise VolumeError(f"{label}: complex-valued voxels; give a magnitude (real) image.")
    if min(image.GetSize()) == 0:
        raise VolumeError(f"{label}: the volume is empty (size {tuple(image.GetSize())}).")
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "f":
        for plane in array.reshape((-1,) + array.shape[-2:]):  # per slice: no full-volume boolean copy
            if not np.isfinite(plane).all():
                raise VolumeError(f"{label}: the volume contains NaN or infinite values; fix or mask them first.")
    low, high = array.min(), array.max()
    if low == high:
        raise VolumeError(f"{label}: the volume is constant (every voxel is {low}); there is nothing to restore.")


def image_from_array(
    array: np.ndarray,
    spacing=None,
    origin=None,
    direction=None,
) -> sitk.Image:
    """A SimpleITK image from an array indexed like ``SimpleITK.GetArrayFromImage`` ([k, j, i]).

    ``spacing``/``origin`` are in SimpleITK's (i, j, k) order in mm, ``direction`` a row-major
    3x3 (or 2x2) matrix whose columns are the index axes in LPS.
    """
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise VolumeError(f"array input: shape {array.shape}; give a 2D (H, W) or 3D (slices, H, W) array.")
    if array.dtype.kind not in "iuf":
        raise VolumeError(f"array input: dtype {array.dtype}; give an integer or floating-point array.")
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    image = sitk.GetImageFromArray(array, isVector=False)
    dim = array.ndim
    if spacing is not None:
        spacing = [float(s) for s in spacing]
        if len(spacing) != dim or min(spacing) <= 0:
            raise VolumeError(f"array input: spacing {spacing} must be {dim} positive numbers in (i, j, k) order.")
        image.SetSpacing(spacing)
    if origin is not None:
        image.SetOrigin([float(o) for o in origin])
    if direction is not None:
        matrix = np.asarray(direction, dtype=float).reshape(dim, dim)
        if abs(abs(np.linalg.det(matrix)) - 1.0) > 1e-3:
            raise VolumeError("array input: the direction matrix must be orthonormal (unit columns, det +-1).")
        image.SetDirection(matrix.ravel().tolist())
    return image


def provenance_items(metadata: Mapping[str, object]) -> Dict[str, str]:
    """Flat string key/values for an image's metadata dictionary (NRRD ``key:=value`` fields)."""
    items = {}
    for key, value in metadata.items():
        items[PROVENANCE_PREFIX + key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return items


def read_provenance(image: sitk.Image) -> Dict[str, object]:
    """The provenance written by ``write_volume`` into a NRRD file, decoded."""
    found: Dict[str, object] = {}
    for key in image.GetMetaDataKeys():
        if key.startswith(PROVENANCE_PREFIX):
            raw = image.GetMetaData(key)
            try:
                found[key[len(PROVENANCE_PREFIX):]] = json.loads(raw)
            except ValueError:
                found[key[len(PROVENANCE_PREFIX):]] = raw
    return found


def sidecar_path(path: PathLike) -> Path:
    """BIDS-style JSON sidecar beside a NIfTI file (NIfTI headers have no room for provenance)."""
    path = Path(path)
    return path.with_name(stem_of(path) + ".json")


def check_output_path(path: PathLike, overwrite: bool = False, inputs: Optional[List[PathLike]] = None) -> Path:
    """Refuse an output that would replace the input, exist already, or have the wrong format."""
    path = Path(path)
    if suffix_of(path) not in OUTPUT_SUFFIXES:
        raise VolumeError(f"{path}: the output must end with .nrrd, .nii or .nii.gz.")
    for source in inputs or []:
        source = Path(source)
        same = path.resolve() == source.resolve() or (path.exists() and source.exists() and os.path.samefile(path, source))
        if same:
            raise VolumeError(f"{path}: the output would replace the input; choose another output path.")
    if path.exists() and not overwrite:
        raise VolumeError(f"{path}: the output exists already; pass --overwrite to replace it.")
    if suffix_of(path) != ".nrrd" and sidecar_path(path).exists() and not overwrite:
        raise VolumeError(f"{sidecar_path(path)}: the provenance sidecar of this output exists already; "
                          "pass --overwrite to replace it.")
    if not path.parent.is_dir():
        raise VolumeError(f"{path.parent}: the output folder does not exist.")
    return path


def write_volume(
    image: sitk.Image,
    path: PathLike,
    metadata: Optional[Mapping[str, object]] = None,
    overwrite: bool = False,
) -> Path:
    """Write atomically (temporary name in the same folder, then rename), with provenance.

    NRRD keeps the provenance as ``DiffCode_<key>`` header fields; NIfTI gets a JSON sidecar.
    The metadata dictionary of ``image`` is edited in place (copying it would copy the voxels):
    keys a reader added for another file are removed, provenance keys are set.
    """
    path = check_output_path(path, overwrite)
    suffix = suffix_of(path)
    _drop_reader_metadata(image)
    if metadata and suffix == ".nrrd":
        for key, value in provenance_items(metadata).items():
            image.SetMetaData(key, value)
    temporary = path.with_name(f".{stem_of(path)}.{uuid.uuid4().hex[:8]}.partial{suffix}")
    try:
        sitk.WriteImage(image, str(temporary), useCompression=True)
        if metadata and suffix != ".nrrd":
            _write_text_atomically(sidecar_path(path), json.dumps(dict(metadata), indent=2, sort_keys=True) + "\n")
        os.replace(temporary, path)
    except RuntimeError as error:
        raise VolumeError(f"{path}: cannot write ({_first_line(error)}).") from None
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def _write_text_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def _drop_reader_metadata(image: sitk.Image) -> None:
    """Keys that readers add describe the file read, not the one being written."""
    for key in image.GetMetaDataKeys():
        if key.startswith(("ITK_", "NRRD_")) or key == DICOM_MODALITY_TAG:
            image.EraseMetaData(key)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
