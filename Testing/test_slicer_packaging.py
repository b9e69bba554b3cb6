"""The Slicer extension's packaging: CMake lists, extension descriptions, icon, licence.

The expected file lists are computed from the file tree, so a file added to the module later
fails this test until it is listed in DiffCodeRestore/CMakeLists.txt (an unlisted file is silently
missing from the installed extension, and users get an ImportError).
"""

import ast
import json
import re
import struct
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = "DiffCodeRestore"
MODULE_DIR = ROOT / MODULE
LIB = f"{MODULE}Lib"
DEV_ONLY = ("data", "benchmark", "training")  # development subpackages, not shipped
# Modules that shipped code may import when it is imported (inside Slicer): the core's allowed
# dependencies and what Slicer provides to the module layer.
CORE_IMPORTS = {"torch", "numpy", "SimpleITK", "huggingface_hub", "safetensors", "tqdm", LIB}
SLICER_LAYER = {"slicer", "vtk", "qt", "ctk"}
EXTENSION = "DiffCode"
CATALOG_KEYS = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                "build_subdirectory", "enabled", "tier"}  # slicer-extension-catalog-entry-schema v1.0.1
RAW_URL = re.compile(r"^https://raw\.githubusercontent\.com/[^/]+/[^/]+/[^/]+/(?P<path>.+)$")


def shipped_python():
    """Every .py of the module that Slicer must install (relative to the module folder)."""
    files = {f"{MODULE}.py"}
    for path in (MODULE_DIR / LIB).rglob("*.py"):
        relative = path.relative_to(MODULE_DIR)
        if "__pycache__" in relative.parts or relative.parts[1] in DEV_ONLY:
            continue
        files.add(relative.as_posix())
    return files


def shipped_resources():
    """Every file under the module's Resources/ (icons, UI, Models.json, bundled Weights/...)."""
    return {
        path.relative_to(MODULE_DIR).as_posix()
        for path in (MODULE_DIR / "Resources").rglob("*")
        if path.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in path.parts)
    }


def cmake_list(text, variable):
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, flags=re.S)
    assert match, f"set({variable} ...) not found"
    items = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    return {item.replace("${MODULE_NAME}", MODULE) for item in items if item}


def cmake_set(text, variable):
    match = re.search(rf'set\(\s*{variable}\s+"([^"]*)"\s*\)', text)
    assert match, f'set({variable} "...") not found in the top-level CMakeLists.txt'
    return match.group(1)


def s4ext_fields():
    fields = {}
    for line in (ROOT / f"{EXTENSION}.s4ext").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    return fields


@pytest.fixture(scope="module")
def module_cmake():
    return (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def top_cmake():
    return (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")


def _difference_message(kind, expected, listed, variable):
    missing, stale = sorted(expected - listed), sorted(listed - expected)
    lines = []
    if missing:
        lines.append(f"{kind} not listed in {MODULE}/CMakeLists.txt {variable} (add them): {missing}")
    if stale:
        lines.append(f"listed in {MODULE}/CMakeLists.txt {variable} but not in the tree (remove them): {stale}")
    return "\n".join(lines)


def test_every_shipped_python_file_is_listed(module_cmake):
    listed, expected = cmake_list(module_cmake, "MODULE_PYTHON_SCRIPTS"), shipped_python()
    assert listed == expected, _difference_message("Python files", expected, listed, "MODULE_PYTHON_SCRIPTS")
    assert {f"{MODULE}.py", f"{LIB}/mrml.py", f"{LIB}/worker.py", f"{LIB}/pipeline.py"} <= listed


def test_every_resource_is_listed(module_cmake):
    listed, expected = cmake_list(module_cmake, "MODULE_PYTHON_RESOURCES"), shipped_resources()
    assert listed == expected, _difference_message("resources", expected, listed, "MODULE_PYTHON_RESOURCES")
    assert {f"Resources/Icons/{MODULE}.png", f"Resources/UI/{MODULE}.ui", "Resources/Models.json"} <= listed


def test_module_cmake_builds_the_scripted_module_with_tests(module_cmake):
    assert re.search(r"slicerMacroBuildScriptedModule\(.*NAME \$\{MODULE_NAME\}.*SCRIPTS \$\{MODULE_PYTHON_SCRIPTS\}"
                     r".*RESOURCES \$\{MODULE_PYTHON_RESOURCES\}.*WITH_GENERIC_TESTS", module_cmake, flags=re.S)
    assert re.search(r"if\(BUILD_TESTING\).*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)",
                     module_cmake, flags=re.S)
    assert f"set(MODULE_NAME {MODULE})" in module_cmake
    expanded = module_cmake.replace("${MODULE_NAME}", MODULE)
    for folder in DEV_ONLY:  # the comment says which subpackages are left out, and why
        assert f"{LIB}/{folder}/" in expanded


def test_shipped_python_is_valid_python_3_9_and_imports_only_what_slicer_has():
    for relative in sorted(shipped_python()):
        source = (MODULE_DIR / relative).read_text(encoding="utf-8")
        tree = ast.parse(source, filename=relative, feature_version=(3, 9))
        allowed = CORE_IMPORTS | (SLICER_LAYER if relative in (f"{MODULE}.py", f"{LIB}/mrml.py") else set())
        for node in tree.body:  # what runs on import; lazy imports inside functions are the code's business
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or _is_stdlib(top), f"{relative} imports {name} at import time"


def _is_stdlib(name):
    import sys

    return name in sys.stdlib_module_names or name == "__future__"


def test_top_level_cmake_describes_the_extension(top_cmake):
    assert re.search(rf"project\(\s*{EXTENSION}\s*\)", top_cmake)
    assert not EXTENSION.lower().startswith("slicer")
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                     "EXTENSION_ICONURL"):
        assert cmake_set(top_cmake, variable).strip(), f"{variable} is empty"
    assert "PyTorch" in cmake_set(top_cmake, "EXTENSION_DEPENDS").split()
    assert f"add_subdirectory({MODULE})" in top_cmake
    assert "find_package(Slicer REQUIRED)" in top_cmake and "include(${Slicer_USE_FILE})" in top_cmake
    assert "include(${Slicer_EXTENSION_GENERATE_CONFIG})" in top_cmake
    assert "include(${Slicer_EXTENSION_CPACK})" in top_cmake


def test_icon_and_screenshot_urls_point_to_files_in_the_repository(top_cmake):
    urls = [cmake_set(top_cmake, "EXTENSION_ICONURL")] + cmake_set(top_cmake, "EXTENSION_SCREENSHOTURLS").split()
    urls += [s4ext_fields()["iconurl"]] + s4ext_fields().get("screenshoturls", "").split()
    for url in urls:
        match = RAW_URL.match(url)
        assert match, f"{url} is not a raw.githubusercontent.com URL of a file in this repository"
        assert (ROOT / match.group("path")).is_file(), f"{url} names {match.group('path')}, which does not exist"
    icon = ROOT / RAW_URL.match(cmake_set(top_cmake, "EXTENSION_ICONURL")).group("path")
    for png in (icon, MODULE_DIR / "Resources" / "Icons" / f"{MODULE}.png"):
        header = png.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
        assert struct.unpack(">II", header[16:24]) == (128, 128), f"{png.name} must be 128 x 128"


def test_extension_descriptions_agree(top_cmake):
    catalog = json.loads((ROOT / f"{EXTENSION}.json").read_text(encoding="utf-8"))
    assert set(catalog) <= CATALOG_KEYS and {"$schema", "category", "scm_url"} <= set(catalog)
    assert "slicer-extension-catalog-entry-schema" in catalog["$schema"]
    s4ext = s4ext_fields()
    category = cmake_set(top_cmake, "EXTENSION_CATEGORY")
    assert catalog["category"] == s4ext["category"] == category
    assert catalog["scm_url"] == s4ext["scmurl"] and catalog["scm_url"].startswith("https://")
    assert Path(catalog["scm_url"]).stem.lower().startswith("slicer")  # the index's repository-name rule
    assert catalog["scm_revision"] == s4ext["scmrevision"]
    assert "PyTorch" in catalog["build_dependencies"] and s4ext["depends"] == "PyTorch"
    assert s4ext["iconurl"] == cmake_set(top_cmake, "EXTENSION_ICONURL")
    assert s4ext["description"] == cmake_set(top_cmake, "EXTENSION_DESCRIPTION")
    assert s4ext["homepage"] == cmake_set(top_cmake, "EXTENSION_HOMEPAGE")
    module_source = (MODULE_DIR / f"{MODULE}.py").read_text(encoding="utf-8")
    assert f'self.parent.categories = [_("{category}")]' in module_source


def test_licence_is_the_full_apache_2_text():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    for section in ("1. Definitions.", "2. Grant of Copyright License.", "3. Grant of Patent License.",
                    "9. Accepting Warranty or Additional Liability.", "END OF TERMS AND CONDITIONS"):
        assert section in text
    assert len(text) > 10000


def test_shipped_resources_stay_small():
    size = sum((MODULE_DIR / relative).stat().st_size for relative in shipped_resources())
    assert size < 50 * 2**20, f"the module's resources take {size / 2**20:.1f} MB; the index allows 100 MB in all"
