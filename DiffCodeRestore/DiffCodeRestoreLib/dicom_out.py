"""A restored volume written back as a DICOM series, beside the series it was restored from.

Why: results go back to PACS and to other DICOM tools, which need every tag of the source (patient,
study, frame of reference, acquisition) and a new series that says what was done. So each output
file is a copy of the header of its source slice in which only what must change is changed:

- **Identity.** New Series Instance UID (one for the series) and SOP Instance UIDs (one per file,
  also in the file meta); Series Number = source + ``SERIES_NUMBER_OFFSET`` (1000 when the source
  has none), so that viewers list the result next to, not over, the source; Series Description
  "<source> (DiffCode <task>)"; Image Type DERIVED\\SECONDARY followed by the source's values 3 and
  up (CT's AXIAL), for PET DERIVED\\PRIMARY (the PET IOD allows only PRIMARY as value 2);
  Derivation Description with software, model, revision, weights SHA-256 and options; a Source
  Image Sequence naming the source slice; Instance Creation Date/Time now. Study,
  patient, Frame of Reference UID, Series Date/Time (PET decay correction refers to them), window
  center/width (they are in output units, which do not change) are kept.
- **Pixels.** Always 16-bit signed integers (BitsAllocated/BitsStored 16, HighBit 15, Pixel
  Representation 1, one sample, MONOCHROME2 unless the source was MONOCHROME1), uncompressed,
  explicit VR little endian. ``Rescale Slope/Intercept`` map them to the result's values: integer
  results (CT in HU) exactly, with slope 1 and an intercept only where the values do not fit int16;
  float results (PET, MRI) with one slope for the series, intercept 0 (the PET IOD requires 0), so
  each value is off by at most 1/65534 of the series' largest magnitude (1.5e-5 relative). One
  slope for all slices, not one per slice: a reader that takes the voxel type from the first file
  (ITK, hence Slicer) then cannot truncate later slices to integers. Units (PET ``Units``, CT's
  rescale type) are kept: the result is in the units of the volume read from the source.
  Tags that describe the old stored values are dropped (smallest/largest pixel value, modality LUT,
  palettes, icon, float pixel data) or recomputed (pixel padding value, when still representable).
- **Grid.** Rows, Columns, Pixel Spacing and Image Position (Patient) come from the result image
  itself (for MRI super-resolution its exact finer grid, see ``pipeline.super_resolution_geometry``);
  the orientation and the slices are the source's. Before anything is written the result is
  checked to lie on the source series (same orientation, slice count, slice positions, field of
  view), so a result cannot be written over the wrong series.
- **Atomic.** Files are written into a hidden partial folder beside the output and the folder is
  renamed into place at the end: an interrupted or failed write leaves no folder that looks
  complete. An existing output folder is refused unless ``overwrite`` (and then only when it holds
  DICOM files and nothing else); an existing empty folder is used.

pydicom is imported only here (it is optional for the rest of the core); only API common to
pydicom 2.x (3D Slicer 5.8) and 3.x is used.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path
from typing import Callable, List, Mapping, NamedTuple, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from . import __version__
from .errors import one_line
from .tasks import get_task
from .files import partial_path, remove_stale_partials
from .volume_io import (
    PathLike,
    VolumeError,
    check_finite,
    check_writable_folder,
    dicom_series_ids,
)

SERIES_NUMBER_OFFSET = 1000
INT16_MIN, INT16_MAX = -32768, 32767
POSITION_TOLERANCE_MM = 1e-3  # beyond the ~6 decimals of DICOM position strings and float32 geometry
FILE_NAME = "slice_{:05d}.dcm"  # sorted by name = sorted along the slice normal

# Tags describing the source's stored pixel values or their display, not valid for new pixels.
_DROPPED_TAGS = (
    0x00280006,  # Planar Configuration (one sample per pixel now)
    0x00280106, 0x00280107,  # Smallest/Largest Image Pixel Value
    0x00280108, 0x00280109,  # Smallest/Largest Pixel Value in Series
    0x00281101, 0x00281102, 0x00281103,  # palette color LUT descriptors
    0x00281201, 0x00281202, 0x00281203,  # palette color LUT data
    0x00281221, 0x00281222, 0x00281223,  # segmented palette color LUT data
    0x00283000,  # Modality LUT Sequence (replaced by rescale slope/intercept)
    0x00287FE0,  # Pixel Data Provider URL
    0x00880200,  # Icon Image Sequence (a thumbnail of the old pixels)
    0x7FE00001, 0x7FE00002,  # Extended Offset Table (+ lengths)
    0x7FE00008, 0x7FE00009,  # Float / Double Float Pixel Data
)
_PADDING_TAGS = (0x00280120, 0x00280121)  # Pixel Padding Value, Pixel Padding Range Limit

Progress = Callable[[int, int], None]


class PixelEncoding(NamedTuple):
    """stored int16 value * slope + intercept = result value (exactly when ``exact``)."""

    slope: str  # as written (DS, at most 16 characters); the number is float(slope)
    intercept: str
    exact: bool

    def encode(self, values: np.ndarray) -> np.ndarray:
        slope, intercept = float(self.slope), float(self.intercept)
        if self.exact:
            stored = np.asarray(values, dtype=np.int64) - int(round(intercept))
        else:
            stored = np.rint((np.asarray(values, dtype=np.float64) - intercept) / slope)
        return np.clip(stored, INT16_MIN, INT16_MAX).astype("<i2")


def write_dicom_series(
    result: sitk.Image,
    source_folder: PathLike,
    output_folder: PathLike,
    task: str,
    metadata: Mapping[str, object],
    overwrite: bool = False,
    progress: Optional[Progress] = None,
) -> List[Path]:
    """Write ``result`` (restored from the DICOM series in ``source_folder``) as a new series.

    One file per slice into ``output_folder`` (see the module docstring for what is kept and what
    changes); ``metadata`` is ``RestoreResult.metadata`` (model, revision, sha256, options).
    ``progress(done, total)`` is called after each file. Returns the written files in slice order.
    Raises ``VolumeError`` with one line saying what to do; nothing is left behind then.
    """
    pydicom = _pydicom()
    source_folder, output_folder = Path(source_folder), Path(os.path.abspath(str(output_folder)))
    if not output_folder.name:
        raise VolumeError(f"{output_folder}: give a folder for the DICOM series, not the file system root.")
    try:
        spec = get_task(task)
    except ValueError as error:
        raise VolumeError(str(error)) from None
    description = derivation_description(spec.name, metadata)
    if result.GetDimension() != 3 or result.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(f"{output_folder}: DICOM output needs the 3D scalar result of a series folder "
                          f"(got a {result.GetDimension()}D image); write NRRD or NIfTI instead.")
    check_finite(result, str(output_folder))
    files = _source_files(source_folder)
    _check_output_folder(output_folder, source_folder, overwrite)
    datasets = [_read_header(pydicom, name, source_folder) for name in files]
    grid_changed = _check_result_on_source(result, datasets, source_folder)
    modality = str(datasets[0].get("Modality", "")).upper()
    array = sitk.GetArrayViewFromImage(result)  # (slices, rows, columns), no copy
    encoding = choose_encoding(array, pet=modality == "PT")

    series_uid = pydicom.uid.generate_uid()
    now = datetime.datetime.now()
    parent = output_folder.parent
    remove_stale_partials(parent)
    partial = partial_path(output_folder, keep_suffix=False)
    written: List[Path] = []
    try:
        partial.mkdir()
        for k, dataset in enumerate(datasets):
            _derive(pydicom, dataset, result, k, array[k], encoding, series_uid, spec.name, description, now,
                    grid_changed)
            path = partial / FILE_NAME.format(k + 1)
            _save(pydicom, dataset, path)
            written.append(output_folder / path.name)
            datasets[k] = None  # headers are small, but a long series needs not keep them all
            if progress:
                progress(k + 1, len(files))
        _move_into_place(partial, output_folder, overwrite)
    except BaseException as error:  # also KeyboardInterrupt/cancellation: never leave a partial folder
        shutil.rmtree(str(partial), ignore_errors=True)
        if isinstance(error, Exception) and not isinstance(error, VolumeError):  # disk full, permissions, pydicom
            raise VolumeError(f"{output_folder}: cannot write the DICOM series ({one_line(error)}); nothing was "
                              "kept.") from None
        raise
    return written


# ----------------------------------------------------------------------------------------------------
# What changes


def derivation_description(task: str, metadata: Mapping[str, object]) -> str:
    """The Derivation Description (ST, at most 1024 characters): what restored the pixels, and how."""
    missing = [key for key in ("model", "sha256") if not metadata.get(key)]
    if missing:
        raise VolumeError(f"the provenance lacks {', '.join(missing)}; pass RestoreResult.metadata as metadata.")
    if metadata.get("task") not in (None, task):
        raise VolumeError(f"the result was restored for task {metadata.get('task')}, not {task}; pass the task it was "
                          "restored for.")
    software = f"{metadata.get('software', 'DiffCode Restore')} {metadata.get('version', __version__)}"
    options = json.dumps(metadata.get("options", {}), sort_keys=True, separators=(",", ":"))
    text = (f"{software}, task {task}: model {metadata['model']} revision {metadata.get('revision') or 'none'}, "
            f"weights SHA-256 {metadata['sha256']}, options {options}")
    if metadata.get("intensity_conversion"):
        text += f", intensity conversion {metadata['intensity_conversion']}"
    return _ascii(text)[:1024]


def choose_encoding(array: np.ndarray, pet: bool = False) -> PixelEncoding:
    """Rescale slope/intercept for 16-bit signed stored values (see the module docstring)."""
    low, high = float(array.min()), float(array.max())
    if _integral(array):
        if INT16_MIN <= low and high <= INT16_MAX:
            return PixelEncoding("1", "0", True)
        if not pet and high - low <= INT16_MAX - INT16_MIN:
            return PixelEncoding("1", str(int(low) - INT16_MIN), True)
    largest = max(abs(low), abs(high))
    slope = _ds(largest / INT16_MAX * (1 + 1e-9), round_up=True)
    return PixelEncoding(slope, "0", False)


def _integral(array: np.ndarray) -> bool:
    if array.dtype.kind in "iub":
        return True
    for plane in array:  # per slice: no volume-sized temporary
        if not np.array_equal(plane, np.rint(plane)):
            return False
    return True


def _derive(pydicom, dataset, result: sitk.Image, k: int, values: np.ndarray, encoding: PixelEncoding,
            series_uid: str, task: str, description: str, now: datetime.datetime, grid_changed: bool) -> None:
    """Turn the header of source slice ``k`` into the header of output slice ``k``, in place."""
    Dataset, Sequence = pydicom.dataset.Dataset, pydicom.sequence.Sequence
    source_class, source_instance = str(dataset.SOPClassUID), str(dataset.SOPInstanceUID)
    instance_uid = pydicom.uid.generate_uid()

    for tag in [t for t in dataset.keys() if t.element == 0 or int(t) in _DROPPED_TAGS]:
        del dataset[tag]  # group lengths (retired, and wrong once the group changes) and stale pixel tags
    padding = {tag: _padding_value(dataset, tag) for tag in _PADDING_TAGS if tag in dataset}  # in result units
    if grid_changed:
        for tag in [t for t in dataset.keys() if 0x6000 <= t.group <= 0x60FF and t.group % 2 == 0]:
            del dataset[tag]  # overlays lie on the old pixel grid

    dataset.SOPInstanceUID = instance_uid
    dataset.SeriesInstanceUID = series_uid
    number = _int_or_none(dataset.get("SeriesNumber"))
    dataset.SeriesNumber = str((number or 0) + SERIES_NUMBER_OFFSET)
    suffix = f" (DiffCode {task})"
    original = str(dataset.get("SeriesDescription", "") or "").strip()
    dataset.SeriesDescription = (original[: 64 - len(suffix)].rstrip() + suffix).strip()
    kept_types = [str(v) for v in _values(dataset.get("ImageType"))][2:]
    second = "PRIMARY" if str(dataset.get("Modality", "")).upper() == "PT" else "SECONDARY"  # PET allows no other
    dataset.ImageType = ["DERIVED", second] + kept_types
    previous = str(dataset.get("DerivationDescription", "") or "").strip()
    dataset.DerivationDescription = (description + (f"; source: {previous}" if previous else ""))[:1024]
    item = Dataset()
    item.ReferencedSOPClassUID = source_class
    item.ReferencedSOPInstanceUID = source_instance
    dataset.SourceImageSequence = Sequence([item])
    dataset.InstanceCreationDate = now.strftime("%Y%m%d")
    dataset.InstanceCreationTime = now.strftime("%H%M%S")

    rows, columns = values.shape
    dataset.Rows, dataset.Columns = rows, columns
    if grid_changed:
        spacing = result.GetSpacing()
        dataset.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing (along j), column spacing (along i)
    position = result.TransformIndexToPhysicalPoint((0, 0, k))
    dataset.ImagePositionPatient = [_ds(v) for v in position]

    dataset.SamplesPerPixel = 1
    if str(dataset.get("PhotometricInterpretation", "")) != "MONOCHROME1":
        dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 1
    dataset.RescaleSlope, dataset.RescaleIntercept = encoding.slope, encoding.intercept
    for tag, value in padding.items():
        stored = None if value is None else (value - float(encoding.intercept)) / float(encoding.slope)
        del dataset[tag]  # its VR (US or SS) follows the pixel representation: added again as SS if representable
        if stored is not None and abs(stored - round(stored)) < 1e-6 and INT16_MIN <= round(stored) <= INT16_MAX:
            dataset.add_new(tag, "SS", int(round(stored)))
    dataset.add_new(0x7FE00010, "OW", encoding.encode(values).tobytes())
    dataset["PixelData"].is_undefined_length = False

    meta = pydicom.dataset.FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = source_class
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"DIFFCODE_{__version__}"[:16]
    dataset.file_meta = meta
    dataset.preamble = b"\x00" * 128  # the source's preamble may belong to another format (TIFF/DICOM files)


def _padding_value(dataset, tag: int) -> Optional[float]:
    """A pixel padding tag of the source in the units of the values (None if it cannot be read)."""
    signed = int(dataset.get("PixelRepresentation", 0) or 0) == 1
    raw = dataset[tag].value
    if isinstance(raw, (bytes, bytearray)):  # read with an unresolved VR: decode with the source's representation
        if len(raw) != 2:
            return None
        raw = int(np.frombuffer(bytes(raw), "<i2" if signed else "<u2")[0])
    try:
        return float(raw) * float(dataset.get("RescaleSlope", 1) or 1) + float(dataset.get("RescaleIntercept", 0) or 0)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------------
# The source series and the result's place on it


def _pydicom():
    try:
        import pydicom
        import pydicom.dataset
        import pydicom.sequence
        import pydicom.uid
    except ImportError:
        raise VolumeError("DICOM output needs pydicom: pip install pydicom (in Slicer: "
                          "slicer.util.pip_install('pydicom')).") from None
    return pydicom


def _source_files(folder: Path) -> List[str]:
    """The series' files in the order ITK reads them (ascending along the slice normal)."""
    if not folder.is_dir():
        raise VolumeError(f"{folder}: DICOM output needs the DICOM series folder the result was restored from.")
    series = dicom_series_ids(folder)
    if len(series) != 1:
        raise VolumeError(f"{folder}: holds {len(series)} DICOM series, not one; give the series folder the result "
                          "was restored from.")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))


def _read_header(pydicom, name: str, folder: Path):
    try:
        return pydicom.dcmread(str(name), stop_before_pixels=True)
    except Exception as error:  # pydicom raises several types for damaged files
        raise VolumeError(f"{folder}: {Path(name).name} cannot be read by pydicom ({one_line(error)}); "
                          "write NRRD or NIfTI instead.") from None


def _check_result_on_source(result: sitk.Image, datasets: Sequence, folder: Path) -> bool:
    """Refuse a result that is not on the source series' slices; True if its in-plane grid is finer."""
    first = datasets[0]
    wrong = f"{folder}: the result does not lie on this series"
    advice = "give the series folder the result was restored from, or write NRRD or NIfTI instead."
    frames = _int_or_none(first.get("NumberOfFrames")) or 1
    if frames > 1:
        raise VolumeError(f"{folder}: a multi-frame DICOM file ({frames} frames); DICOM output is written for series "
                          "of single-frame files only, write NRRD or NIfTI instead.")
    if len(datasets) != result.GetSize()[2]:
        raise VolumeError(f"{wrong} ({result.GetSize()[2]} slices, the series has {len(datasets)} files); {advice}")
    try:
        orientation = np.array([float(v) for v in first.ImageOrientationPatient])
        positions = np.array([[float(v) for v in d.ImagePositionPatient] for d in datasets])
        row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
        rows, columns = int(first.Rows), int(first.Columns)
    except (AttributeError, TypeError, ValueError):
        raise VolumeError(f"{folder}: the series lacks image position, orientation or pixel spacing tags (a "
                          "secondary capture?); write NRRD or NIfTI instead.") from None
    row_direction, column_direction = orientation[:3], orientation[3:]
    normal = np.cross(row_direction, column_direction)
    direction = np.asarray(result.GetDirection()).reshape(3, 3)
    if (np.abs(direction[:, 0] - row_direction).max() > 1e-3 or np.abs(direction[:, 1] - column_direction).max() > 1e-3
            or np.abs(direction[:, 2] - normal).max() > 1e-3):
        raise VolumeError(f"{wrong} (another orientation); {advice}")
    spacing, size = result.GetSpacing(), result.GetSize()
    extents = ((size[0] * spacing[0], columns * column_spacing), (size[1] * spacing[1], rows * row_spacing))
    for extent, source_extent in extents:
        if abs(extent - source_extent) > 1e-4 * source_extent + POSITION_TOLERANCE_MM:
            raise VolumeError(f"{wrong} (field of view {extent:.4g} mm, the series' {source_extent:.4g} mm); {advice}")
    for k, source_position in enumerate(positions):
        offset = np.asarray(result.TransformIndexToPhysicalPoint((0, 0, k))) - source_position
        across = abs(offset @ normal)
        if across > 0.5 * spacing[2]:
            raise VolumeError(f"{wrong} (slice {k + 1} is {across:.4g} mm from source slice {k + 1}); {advice}")
        in_plane = max(abs(offset @ row_direction) - 0.5 * column_spacing,
                       abs(offset @ column_direction) - 0.5 * row_spacing)
        if in_plane > POSITION_TOLERANCE_MM:
            raise VolumeError(f"{folder}: slice {k + 1} is shifted in its plane against the result's grid (a gantry-"
                              "tilted or sheared series?); write NRRD or NIfTI instead.")
    return (size[0], size[1]) != (columns, rows)


# ----------------------------------------------------------------------------------------------------
# Writing


def _save(pydicom, dataset, path: Path) -> None:
    """Explicit VR little endian with a standard file meta header, on pydicom 2.x and 3.x."""
    if int(pydicom.__version__.split(".")[0]) >= 3:
        pydicom.dcmwrite(str(path), dataset, enforce_file_format=True)
    else:
        dataset.is_little_endian, dataset.is_implicit_VR = True, False
        pydicom.dcmwrite(str(path), dataset, write_like_original=False)


def _check_output_folder(output: Path, source: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output folder that is a file, the source, exists or cannot be written."""
    if output.exists() and not output.is_dir():
        raise VolumeError(f"{output}: is a file; give a folder for the DICOM series.")
    resolved, source_resolved = output.resolve(), source.resolve()
    if resolved == source_resolved or source_resolved in resolved.parents or resolved in source_resolved.parents:
        raise VolumeError(f"{output}: the output folder would hold or replace the source series; choose another "
                          "folder.")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise VolumeError(f"{output}: the output folder exists already; pass --overwrite to replace it.")
        strangers = [item.name for item in output.iterdir() if not _is_dicom_file(item)]
        if strangers:
            raise VolumeError(f"{output}: holds {strangers[0]!r}, not a DICOM file, so it is not replaced; choose a "
                              "new or empty folder.")
    if not output.parent.is_dir():
        raise VolumeError(f"{output.parent}: the folder does not exist; create it or choose another output folder.")
    check_writable_folder(output.parent)


def _is_dicom_file(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with open(str(path), "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _move_into_place(partial: Path, output: Path, overwrite: bool) -> None:
    """Rename the complete folder to ``output``; an old output is moved aside first and removed after."""
    if output.is_dir() and not any(output.iterdir()):
        output.rmdir()  # an empty folder made for the result (os.rename onto it fails on Windows)
    if not output.exists():
        os.rename(str(partial), str(output))
        return
    if not overwrite:  # appeared while writing
        raise VolumeError(f"{output}: the output folder appeared while writing; pass --overwrite to replace it.")
    old = partial_path(output, keep_suffix=False)
    os.rename(str(output), str(old))
    try:
        os.rename(str(partial), str(output))
    except BaseException:
        os.rename(str(old), str(output))
        raise
    shutil.rmtree(str(old), ignore_errors=True)


# ----------------------------------------------------------------------------------------------------
# Small helpers


def _ds(value: float, round_up: bool = False) -> str:
    """A decimal string of at most 16 characters (the DS limit) with as many digits as fit."""
    value = float(value)
    for digits in range(15, 0, -1):
        text = f"{value:.{digits}g}"
        if round_up and float(text) < value:
            text = f"{value * (1 + 10.0 ** (1 - digits)):.{digits}g}"
        if len(text) <= 16:
            return text
    raise VolumeError(f"{value!r} cannot be written as a DICOM decimal string.")


def _values(element_value) -> List[object]:
    if element_value is None:
        return []
    if isinstance(element_value, (str, bytes)):
        return [element_value]
    try:
        return list(element_value)
    except TypeError:
        return [element_value]


def _int_or_none(value) -> Optional[int]:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _ascii(text: str) -> str:
    """Text for the default character repertoire: anything else becomes '?'."""
    return text.encode("ascii", "replace").decode("ascii")


