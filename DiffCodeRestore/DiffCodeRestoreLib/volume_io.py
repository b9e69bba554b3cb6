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
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from .errors import one_line
from .files import partial_path, remove, stem_of, suffix_of

PathLike = Union[str, "os.PathLike[str]"]

INPUT_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd", ".png", ".tif", ".tiff")
OUTPUT_SUFFIXES = (".nrrd", ".nii", ".nii.gz")
DICOM_MODALITY_TAG = "0008|0060"
PROVENANCE_PREFIX = "DiffCode_"
READER_PREFIX = "DiffCode:"  # facts a reader found about the file (e.g. the PET SUV factor), never written out
POSITION_TOLERANCE_MM = 0.01  # DICOM positions are written with about 6 decimals; allow for rounding


class VolumeError(ValueError):
    """A volume that cannot be restored or written; the message is one line saying what to do."""


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
    check_series_positions(files, str(folder))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError:
        raise VolumeError(f"{folder}: the DICOM series cannot be read (damaged or unsupported files).") from None
    _check_header(image.GetDimension(), image.GetNumberOfComponentsPerPixel(), image.GetSize(), str(folder))
    if reader.HasMetaDataKey(0, DICOM_MODALITY_TAG):
        modality = reader.GetMetaData(0, DICOM_MODALITY_TAG).strip()
        image.SetMetaData(DICOM_MODALITY_TAG, modality)
        if modality.upper() == "PT":
            _note_suv_factor(image, files[0])
    return image


def _tag(reader, key: str) -> Optional[str]:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else None


def check_series_positions(files: Sequence[str], label: str) -> None:
    """Refuse a series that ITK would silently put on a wrong regular grid.

    ITK stacks the slices with their mean spacing: a missing slice shifts every slice after it, and
    several volumes under one series UID (echoes, time points, diffusion directions) are
    interleaved. Both are refused with the slice positions named; series without position tags
    (secondary captures) are left to ITK.
    """
    if len(files) < 2:
        return
    reader = sitk.ImageFileReader()
    positions, orientations = [], []
    for name in files:
        reader.SetFileName(str(name))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise VolumeError(f"{label}: {Path(name).name} cannot be read (damaged DICOM file).") from None
        position, orientation = _tag(reader, "0020|0032"), _tag(reader, "0020|0037")
        if not position or not orientation:
            return
        try:
            positions.append([float(v) for v in position.split("\\")])
            orientations.append([float(v) for v in orientation.split("\\")])
        except ValueError:
            return
    orientations_array = np.asarray(orientations)
    if np.abs(orientations_array - orientations_array[0]).max() > 1e-3:
        raise VolumeError(f"{label}: the slices of this series have different orientations (a localizer or "
                          "several stacks in one series); put each stack in its own folder.")
    row, column = orientations_array[0, :3], orientations_array[0, 3:]
    depth = np.sort(np.asarray(positions) @ np.cross(row, column))
    steps = np.diff(depth)
    distinct = 1 + int(np.sum(steps > POSITION_TOLERANCE_MM))
    if distinct < len(files):
        raise VolumeError(
            f"{label}: {len(files)} images at only {distinct} slice positions: several volumes share this series "
            "(echoes, time points or diffusion directions); split them into one folder per volume (e.g. by Echo "
            "Number 0018,0086) and restore each.")
    typical = float(np.median(steps))
    worst = int(np.argmax(np.abs(steps - typical)))
    if abs(steps[worst] - typical) > max(POSITION_TOLERANCE_MM, 0.01 * typical):
        raise VolumeError(
            f"{label}: the slices are not evenly spaced: {depth[worst]:.4g} mm to {depth[worst + 1]:.4g} mm is a "
            f"step of {steps[worst]:.4g} mm where the others are {typical:.4g} mm (a missing slice?); export the "
            "complete series, or resample it onto a regular grid first.")


def _note_suv_factor(image: sitk.Image, first_file: str) -> None:
    """Record the SUVbw factor of a PET series (or why there is none) for ``input_rules``."""
    from .input_rules import SUV_FACTOR_KEY, SUV_REASON_KEY, suv_bw_factor

    try:
        import pydicom
    except ImportError:
        image.SetMetaData(SUV_REASON_KEY, "pydicom is not installed to read them")
        return
    try:
        dataset = pydicom.dcmread(str(first_file), stop_before_pixels=True)
        image.SetMetaData(SUV_FACTOR_KEY, repr(suv_bw_factor(dataset)))
    except Exception as error:  # any unreadable or missing tag: say which, the rules refuse Bq/mL without it
        image.SetMetaData(SUV_REASON_KEY, one_line(error))


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
    if not all_finite(image):
        raise VolumeError(f"{label}: the volume contains NaN or infinite values; fix or mask them first.")
    array = sitk.GetArrayViewFromImage(image)
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
    """Refuse, before any work, an output that would replace the input, exist already, be a folder,
    have the wrong format or lie in a folder that cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise VolumeError(f"{path}: is a folder; give an output file ending with .nrrd, .nii or .nii.gz.")
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
    check_writable_folder(path.parent)
    return path


def check_writable_folder(folder: Path) -> None:
    """Create and delete a file in ``folder``: the only check that also holds for read-only mounts."""
    try:
        with tempfile.NamedTemporaryFile(dir=str(folder), prefix=".diffcode-write-test-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise VolumeError(f"{folder}: cannot write into this folder ({reason}); choose another output folder.") from None


def write_volume(
    image: sitk.Image,
    path: PathLike,
    metadata: Optional[Mapping[str, object]] = None,
    overwrite: bool = False,
) -> Path:
    """Write one volume atomically with its provenance (see ``write_volumes``)."""
    return write_volumes([(image, path, metadata)], overwrite)[0]


def write_volumes(
    items: Sequence[Tuple[sitk.Image, PathLike, Optional[Mapping[str, object]]]],
    overwrite: bool = False,
) -> List[Path]:
    """Write a set of outputs (a result, its uncertainty map, their sidecars) as one unit.

    Every file is first written under a partial name in its final folder; only when all are written
    are they renamed, sidecars first and the main image last, so that the image's presence means the
    set is complete. If any step fails, every file of the set written so far is removed again and a
    ``VolumeError`` names the file: nothing half done stays, and a batch can go on with the next input.
    NRRD keeps the provenance as ``DiffCode_<key>`` header fields; NIfTI gets a JSON sidecar. The
    metadata dictionary of each image is edited in place (copying it would copy the voxels).
    """
    targets = []
    for image, path, _ in items:
        path = check_output_path(path, overwrite)
        check_finite(image, str(path))
        targets.append(path)
    written: List[Tuple[Path, Path]] = []  # (partial, final) of every file of the set
    renamed: List[Path] = []
    try:
        for (image, _, metadata), path in zip(items, targets):
            suffix = suffix_of(path)
            _drop_reader_metadata(image)
            if metadata and suffix == ".nrrd":
                for key, value in provenance_items(metadata).items():
                    image.SetMetaData(key, value)
            if metadata and suffix != ".nrrd":
                sidecar = sidecar_path(path)
                written.append((partial_path(sidecar), sidecar))
                written[-1][0].write_text(json.dumps(dict(metadata), indent=2, sort_keys=True) + "\n",
                                          encoding="utf-8")
            written.append((partial_path(path), path))
            sitk.WriteImage(image, str(written[-1][0]), useCompression=True)
        sidecars = [pair for pair in written if pair[1] not in targets]
        images = [pair for pair in written if pair[1] in targets]
        for temporary, final in sidecars + images[::-1]:  # the result itself (first item) is renamed last
            os.replace(temporary, final)
            renamed.append(final)
    except (RuntimeError, OSError) as error:
        for final in renamed:
            remove(final)
        failed = next((final for _, final in written if final not in renamed), targets[0])
        raise VolumeError(f"{failed}: cannot write ({one_line(error)}); nothing of this output was kept.") from None
    finally:
        for temporary, _ in written:
            if temporary.exists():
                remove(temporary)
    return targets


def check_finite(image: sitk.Image, label: str) -> None:
    """Never write NaN or infinity: a result holding them is wrong, whatever produced it."""
    if not all_finite(image):
        raise VolumeError(f"{label}: the result holds NaN or infinite values and was not written; retry with "
                          "--precision float32 (Python: precision='float32') and report it if it persists.")


def all_finite(image: sitk.Image) -> bool:
    """No NaN or infinity, checked slice by slice (no full-volume boolean copy); integer images always are."""
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind != "f":
        return True
    return all(np.isfinite(plane).all() for plane in array.reshape((-1,) + array.shape[-2:]))


def _drop_reader_metadata(image: sitk.Image) -> None:
    """Keys that readers add describe the file read, not the one being written."""
    for key in image.GetMetaDataKeys():
        if key.startswith(("ITK_", "NRRD_", READER_PREFIX)) or key == DICOM_MODALITY_TAG:
            image.EraseMetaData(key)


