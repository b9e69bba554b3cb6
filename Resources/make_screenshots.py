"""Render the Extensions Index screenshots from the project itself, so they can be regenerated.

Two pictures, referenced by EXTENSION_SCREENSHOTURLS in CMakeLists.txt and by DiffCode.s4ext:

- ``Resources/Screenshots/Panel.png``: the module's panel, rendered offscreen from
  ``DiffCodeRestore.ui`` with PySide6 (Slicer's own widgets are drawn as their closest Qt
  counterparts: collapsible sections as group boxes, node selectors as combo boxes), filled the way
  the module fills it (tasks, the catalog's models and their state, device choices).
- ``Resources/Screenshots/BeforeAfter.png``: a real chest CT slice (``lung2``, the project's public
  test CT), its simulated low-dose version (projection-domain noise at the benchmark's dose), that
  slice restored by the shipped model through the command line (``python -m DiffCodeRestoreLib
  restore ... --task ct-denoise``, CPU, offline, bundled weights), and PSNR/SSIM against the
  full-dose slice, as the module computes them.

Needs the development environment (``make venv``), the data cache (``make data``), matplotlib and
PySide6; each PNG is kept under 300 KB.

    python Resources/make_screenshots.py
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "DiffCodeRestore"
OUT_DIR = ROOT / "Resources" / "Screenshots"
PANEL_PNG = OUT_DIR / "Panel.png"
BEFORE_AFTER_PNG = OUT_DIR / "BeforeAfter.png"
MAX_BYTES = 300 * 1024
CT_VOLUME, CT_SLICE, CT_I0, CT_SEED = "lung2", 30, 5e4, 0  # I0: the benchmark's headline dose
CROP = (slice(96, 416), slice(96, 416))  # the chest without the air around it
WINDOW = (-160.0, 240.0)  # the CT task's soft-tissue window (where the noise shows)

sys.path.insert(0, str(MODULE_DIR))


def save_png(image, path: Path) -> None:
    """Save a PIL image as an optimised PNG; refuse to write one over the size limit."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    data = buffer.getvalue()
    if len(data) > MAX_BYTES:
        raise SystemExit(f"{path.name} would be {len(data) // 1024} KB, over {MAX_BYTES // 1024} KB: make it smaller.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(f"wrote {path.relative_to(ROOT)} ({len(data) // 1024} KB, {image.size[0]} x {image.size[1]})")


# ---- the before/after comparison ----------------------------------------------------------------


def restore_with_cli(image, workdir: Path):
    """Restore a SimpleITK image with the command line and the bundled model; returns (image, seconds)."""
    import SimpleITK as sitk

    source, target = workdir / "low-dose.nrrd", workdir / "restored.nrrd"
    sitk.WriteImage(image, str(source))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(MODULE_DIR), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "DiffCodeRestoreLib", "restore", str(source), str(target),
                    "--task", "ct-denoise", "--device", "cpu", "--quiet"], check=True, env=env)
    return sitk.ReadImage(str(target)), time.monotonic() - started


def make_before_after() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk
    from PIL import Image

    from DiffCodeRestoreLib import hub
    from DiffCodeRestoreLib.data.volumes import load_volume
    from DiffCodeRestoreLib.metrics import slice_scores
    from DiffCodeRestoreLib.simulate import ct

    volume = load_volume(CT_VOLUME)
    one = volume[:, :, CT_SLICE:CT_SLICE + 1]  # keeps the slice's real geometry
    full = sitk.GetArrayFromImage(one)[0].astype(np.float32)
    spacing = one.GetSpacing()[:2]
    low = np.round(ct.low_dose(full, (spacing[1], spacing[0]), CT_I0, CT_SEED)).clip(-1024, 3071).astype(np.int16)
    low_image = sitk.GetImageFromArray(low[None])
    low_image.CopyInformation(one)
    with tempfile.TemporaryDirectory(prefix="diffcode-shots-") as folder:
        restored_image, seconds = restore_with_cli(low_image, Path(folder))
    print(f"restored the slice in {seconds:.1f} s on the CPU")
    restored = sitk.GetArrayFromImage(restored_image)[0].astype(np.float32)
    model = hub.Catalog.load().default
    panels = [
        (low, f"Low-dose input (simulated, I0 = {CT_I0:.0e})", slice_scores(low, full, "ct-denoise")),
        (restored, f"Restored by DiffCode ({model}, bundled)", slice_scores(restored, full, "ct-denoise")),
        (full, "Full-dose CT (reference)", None),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(10.5, 4.2), dpi=100)
    for axis, (pixels, title, scores) in zip(axes, panels):
        axis.imshow(pixels[CROP], cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], interpolation="lanczos")
        scored = "(what the scores compare with)" if scores is None else \
            f"PSNR {scores.psnr:.2f} dB, SSIM {scores.ssim:.3f}"
        axis.set_title(f"{title}\n{scored}", fontsize=9.5)
        axis.set_axis_off()
    figure.suptitle(f"CT low-dose denoising: public test CT '{CT_VOLUME}', slice {CT_SLICE}, soft-tissue window "
                    f"{WINDOW[0]:.0f}..{WINDOW[1]:.0f} HU (scores against the full-dose slice)", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("L")  # greyscale (text included): small file
    save_png(image, BEFORE_AFTER_PNG)


# ---- the panel ----------------------------------------------------------------------------------


def make_panel() -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PIL import Image
    from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets

    from DiffCodeRestoreLib import hub
    from DiffCodeRestoreLib.tasks import TASKS

    QtCore.qInstallMessageHandler(lambda *args: None)  # the .ui's scene connections have no Qt receivers here
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    app.setStyle("Fusion")
    substitutes = {"ctkCollapsibleButton": QtWidgets.QGroupBox, "qMRMLNodeComboBox": QtWidgets.QComboBox,
                   "qMRMLWidget": QtWidgets.QWidget}

    class Loader(QtUiTools.QUiLoader):
        """Slicer's widgets as their closest Qt counterparts, so the panel is drawn as laid out."""

        def createWidget(self, className, parent=None, name=""):
            if className in substitutes:
                widget = substitutes[className](parent)
                widget.setObjectName(name)
                return widget
            return super().createWidget(className, parent, name)

    loader = Loader()
    handle = QtCore.QFile(str(MODULE_DIR / "Resources" / "UI" / "DiffCodeRestore.ui"))
    handle.open(QtCore.QFile.ReadOnly)
    panel = loader.load(handle)
    handle.close()
    find = lambda cls, name: panel.findChild(cls, name)  # noqa: E731
    for box in panel.findChildren(QtWidgets.QGroupBox):
        box.setTitle(str(box.property("text") or ""))
    for slider in panel.findChildren(QtWidgets.QWidget):  # ctkSliderWidget: a slider with a spin box
        if slider.metaObject().className() == "QWidget" and slider.property("singleStep") is not None:
            layout = QtWidgets.QHBoxLayout(slider)
            layout.setContentsMargins(0, 0, 0, 0)
            bar, spin = QtWidgets.QSlider(QtCore.Qt.Horizontal), QtWidgets.QDoubleSpinBox()
            spin.setDecimals(int(slider.property("decimals") or 2))
            spin.setRange(float(slider.property("minimum") or 0), float(slider.property("maximum") or 1))
            spin.setValue(float(slider.property("value") or 0.5))
            bar.setRange(0, 100)
            bar.setValue(int(100 * spin.value()))
            layout.addWidget(bar)
            layout.addWidget(spin)
    # Filled as the module fills it, for a CT volume loaded in the scene.
    find(QtWidgets.QComboBox, "inputVolumeSelector").addItem("lung2 (chest CT)")
    find(QtWidgets.QComboBox, "outputVolumeSelector").addItem("Create new volume")
    find(QtWidgets.QComboBox, "referenceVolumeSelector").addItem("None (no metrics)")
    tasks = find(QtWidgets.QComboBox, "taskComboBox")
    for task in TASKS.values():
        tasks.addItem(task.title)
    tasks.setCurrentIndex(list(TASKS).index("ct-denoise"))
    find(QtWidgets.QLabel, "taskSuggestionLabel").setText(
        "Suggested: " + TASKS["ct-denoise"].title + " (intensities in Hounsfield units).")
    catalog = hub.Catalog.load()
    models = find(QtWidgets.QComboBox, "modelComboBox")
    for status in hub.model_status(catalog, cache_dir=Path(tempfile.gettempdir()) / "diffcode-shots-empty-cache"):
        models.addItem(f"{status.entry.name} ({status.state}, {status.entry.size / 2**20:.0f} MB)")
    entry = catalog.get(None)
    find(QtWidgets.QLabel, "modelStatusLabel").setText(
        f"Bundled with the extension; works offline. Tasks: {', '.join(entry.tasks)}. Licence: {entry.licence or '-'}.")
    for name, items in (("deviceComboBox", ["auto", "cuda", "mps", "cpu"]), ("scaleComboBox", ["1", "2", "4"])):
        find(QtWidgets.QComboBox, name).addItems(items)
    find(QtWidgets.QLabel, "deviceInfoLabel").setText("'auto' uses the GPU when PyTorch sees one, else the CPU.")
    for name in ("scaleLabel", "scaleComboBox", "progressBar"):
        find(QtWidgets.QWidget, name).hide()
    find(QtWidgets.QCheckBox, "useModelDefaultsCheckBox").setChecked(True)
    for name in ("stepsSpinBox", "fidelitySliderWidget", "stepsLabel", "fidelityLabel", "samplesSpinBox",
                 "samplesLabel", "compareButton", "fadeSliderWidget", "computeMetricsButton"):
        find(QtWidgets.QWidget, name).setEnabled(False)
    find(QtWidgets.QPushButton, "deleteCachedModelButton").setEnabled(False)
    panel.resize(440, panel.sizeHint().height())
    panel.adjustSize()
    panel.resize(440, panel.height())
    app.processEvents()
    pixmap = panel.grab()
    data = QtCore.QByteArray()
    buffer = QtCore.QBuffer(data)
    buffer.open(QtCore.QIODevice.WriteOnly)
    pixmap.save(buffer, "PNG")
    buffer.close()
    image = Image.open(io.BytesIO(bytes(data))).convert("RGB")
    save_png(image.quantize(colors=64, method=Image.Quantize.MEDIANCUT), PANEL_PNG)
    panel.deleteLater()
    QtGui.QGuiApplication.processEvents()


if __name__ == "__main__":
    make_panel()
    make_before_after()
