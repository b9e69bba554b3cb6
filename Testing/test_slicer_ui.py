"""The module's Qt Designer panel: it loads, and it has every widget the module file uses.

The module file cannot run outside Slicer, so its contract with the .ui file is checked from both
sides: the ``.ui`` loads with PySide6's QUiLoader (Slicer's custom widgets fall back to QWidget),
every ``self.ui.<name>`` in the module source (and in its package DiffCodeRestoreSlicerLib) exists in
it, and every widget bound to the parameter node (``SlicerParameterName``; the node's class lives in
DiffCodeRestoreSlicerLib/parameters.py) has a field of a type that widget class can show.
"""

import ast
import os
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1] / "DiffCodeRestore"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "DiffCodeRestore.ui"
MODULE_FILE = MODULE_DIR / "DiffCodeRestore.py"
PARAMETERS_FILE = MODULE_DIR / "DiffCodeRestoreSlicerLib" / "parameters.py"
SOURCES = [MODULE_FILE, *sorted((MODULE_DIR / "DiffCodeRestoreSlicerLib").glob("*.py"))]
# Fields kept in sync by hand (the model list is filled at run time), not through SlicerParameterName.
MANUAL_FIELDS = {"model"}
# What Slicer's parameterNodeWrapper GUI connectors accept: widget class -> field kinds.
CONNECTORS = {
    "QCheckBox": {"bool"},
    "QPushButton": {"bool"},
    "QSpinBox": {"int"},
    "QSlider": {"int"},
    "QDoubleSpinBox": {"float"},
    "ctkSliderWidget": {"float"},
    "QComboBox": {"enum", "choice"},
    "QLineEdit": {"str"},
    "qMRMLNodeComboBox": {"node"},
}


def ui_widgets():
    """{objectName: (class, {property: text})} from the .ui XML."""
    widgets = {}
    for element in ElementTree.parse(UI_FILE).iter("widget"):
        properties = {}
        for prop in element.findall("property"):
            value = next(iter(prop), None)
            properties[prop.get("name")] = value.text if value is not None else None
        widgets[element.get("name")] = (element.get("class"), properties)
    return widgets


def parameter_fields():
    """{field: kind} of the @parameterNodeWrapper class of the module."""
    tree = ast.parse(PARAMETERS_FILE.read_text(encoding="utf-8"))
    enums = {node.name for node in tree.body if isinstance(node, ast.ClassDef)
             and any(ast.unparse(base).endswith("Enum") for base in node.bases)}
    wrapper = next(node for node in tree.body if isinstance(node, ast.ClassDef)
                   and any(ast.unparse(d) == "parameterNodeWrapper" for d in node.decorator_list))
    fields = {}
    for statement in wrapper.body:
        if not isinstance(statement, ast.AnnAssign):
            continue
        annotation = ast.unparse(statement.annotation)
        base = re.sub(r"^Annotated\[([^,]+),.*\]$", r"\1", annotation).strip()
        if "Choice(" in annotation:
            kind = "choice"
        elif base in enums:
            kind = "enum"
        elif base.startswith("vtkMRML"):
            kind = "node"
        else:
            kind = base
        fields[statement.target.id] = kind
    return fields


def used_widget_names():
    return {name for source in SOURCES for name in re.findall(r"self\.ui\.(\w+)", source.read_text(encoding="utf-8"))}


@pytest.fixture(scope="module")
def loaded_panel():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    QtCore = pytest.importorskip("PySide6.QtCore")
    QtWidgets = pytest.importorskip("PySide6.QtWidgets")
    QtUiTools = pytest.importorskip("PySide6.QtUiTools")
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    loader = QtUiTools.QUiLoader()
    handle = QtCore.QFile(str(UI_FILE))
    assert handle.open(QtCore.QFile.ReadOnly)
    widget = loader.load(handle)
    handle.close()
    assert widget is not None, loader.errorString()
    yield widget, QtWidgets
    widget.deleteLater()
    app.processEvents()


def test_ui_loads_and_has_every_widget_the_module_uses(loaded_panel):
    widget, QtWidgets = loaded_panel
    assert widget.objectName() == "DiffCodeRestore"
    names = used_widget_names()
    assert len(names) > 20, "the module source should use the panel's widgets through self.ui"
    missing = sorted(name for name in names if widget.findChild(QtWidgets.QWidget, name) is None)
    assert not missing, f"widgets used by DiffCodeRestore.py but absent from DiffCodeRestore.ui: {missing}"


def test_bound_widgets_match_parameter_node_fields(loaded_panel):
    widget, QtWidgets = loaded_panel
    fields = parameter_fields()
    bound = {}
    for name, (cls, properties) in ui_widgets().items():
        parameter = properties.get("SlicerParameterName")
        if parameter is None:
            continue
        assert parameter not in bound, f"two widgets bound to {parameter!r}"
        assert parameter in fields, f"{name} is bound to {parameter!r}, which the parameter node does not have"
        assert fields[parameter] in CONNECTORS.get(cls, set()), \
            f"{name} ({cls}) cannot show the {fields[parameter]} field {parameter!r}"
        child = widget.findChild(QtWidgets.QWidget, name)
        assert child.property("SlicerParameterName") == parameter  # kept as a dynamic property on load
        bound[parameter] = name
    assert set(fields) - set(bound) == MANUAL_FIELDS, "every parameter is shown in the panel"


def test_custom_widgets_are_declared_and_connections_resolve():
    tree = ElementTree.parse(UI_FILE)
    declared = {element.findtext("class") for element in tree.iter("customwidget")}
    used = {cls for cls, _ in ui_widgets().values()}
    custom = {cls for cls in used if not cls.startswith("Q")}
    assert custom <= declared, f"undeclared custom widgets: {sorted(custom - declared)}"
    names = set(ui_widgets())
    for connection in tree.iter("connection"):
        assert connection.findtext("sender") in names and connection.findtext("receiver") in names
    selectors = {name for name, (cls, _) in ui_widgets().items() if cls == "qMRMLNodeComboBox"}
    receivers = {c.findtext("receiver") for c in tree.iter("connection") if c.findtext("slot").startswith("setMRMLScene")}
    assert selectors == receivers, "every node selector must receive the scene"
