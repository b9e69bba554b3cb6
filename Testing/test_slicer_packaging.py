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
SLICER_LIB = f"{MODULE}SlicerLib"  # the module's own code beside the module file
# Files of SLICER_LIB that need Slicer; every other file there is Qt-free (tests import them).
SLICER_LIB_WITH_SLICER = {f"{SLICER_LIB}/logic.py", f"{SLICER_LIB}/parameters.py", f"{SLICER_LIB}/widget.py"}
DEV_ONLY = ("data", "benchmark")  # development subpackages, not shipped...
# ...but for the files "Adapt to my scans" imports (adapt.best_filter: the fast classical filters it is
# compared with). training/ is shipped whole: adaptation is its stage 2. A real adaptation from only the
# listed files is run in Testing/test_adapt.py (test_the_installed_extensions_files_suffice_to_adapt).
SHIPPED_FROM_DEV = {f"{LIB}/benchmark/__init__.py", f"{LIB}/benchmark/methods.py", f"{LIB}/benchmark/baselines.py"}
# Modules that shipped code may import when it is imported (inside Slicer): the core's allowed
# dependencies and what Slicer provides to the module layer.
CORE_IMPORTS = {"torch", "numpy", "SimpleITK", "huggingface_hub", "safetensors", "tqdm", LIB}
# Import names of distributions whose import name differs from their name (requirements files -> imports).
IMPORT_NAMES = {"scikit-image": "skimage", "PyWavelets": "pywt"}
# Packages shipped core code imports lazily that no requirements file installs, and why that is right.
UNDECLARED_LAZY_IMPORTS = {
    "pydicom": "Slicer ships it; outside Slicer DICOM output says to install it, SUV reading says it is missing",
    "bm3d": "the benchmark's slow BM3D baseline (benchmark/baselines.py); adaptation uses only the fast filters",
}
# Unshipped modules that shipped code imports lazily, on paths an installed extension never takes.
UNSHIPPED_LAZY_IMPORTS = {
    (f"{LIB}/training/__main__.py", f"{LIB}/data/__init__.py"): "training from scratch: the data cache",
    (f"{LIB}/training/__main__.py", f"{LIB}/data/slices.py"): "training from scratch: the slice pairs",
    (f"{LIB}/training/__main__.py", f"{LIB}/data/volumes.py"): "--data-split on the command line: the split names",
    (f"{LIB}/training/model_card.py", f"{LIB}/data/recipes.py"): "the card of a trained model; adapt uses CITATION",
}
SLICER_LAYER = {"slicer", "vtk", "qt", "ctk", SLICER_LIB}
EXTENSION = "DiffCode"
CATALOG_KEYS = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                "build_subdirectory", "enabled", "tier"}  # slicer-extension-catalog-entry-schema v1.0.1
RAW_URL = re.compile(r"^https://raw\.githubusercontent\.com/[^/]+/[^/]+/[^/]+/(?P<path>.+)$")


def shipped_python():
    """Every .py of the module that Slicer must install (relative to the module folder)."""
    files = {f"{MODULE}.py"}
    files |= {path.relative_to(MODULE_DIR).as_posix() for path in (MODULE_DIR / SLICER_LIB).glob("*.py")}
    for path in (MODULE_DIR / LIB).rglob("*.py"):
        relative = path.relative_to(MODULE_DIR)
        if "__pycache__" in relative.parts or (relative.parts[1] in DEV_ONLY
                                               and relative.as_posix() not in SHIPPED_FROM_DEV):
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
    assert {f"{MODULE}.py", f"{LIB}/mrml.py", f"{LIB}/worker.py", f"{LIB}/pipeline.py",
            f"{SLICER_LIB}/logic.py", f"{SLICER_LIB}/install.py", f"{SLICER_LIB}/job.py", f"{LIB}/adapt.py",
            f"{LIB}/training/loop.py", f"{LIB}/training/__main__.py", f"{LIB}/benchmark/baselines.py"} <= listed
    assert SHIPPED_FROM_DEV <= listed and not any(item.startswith(f"{LIB}/data/") for item in listed)
    assert f"{LIB}/benchmark/harness.py" not in listed  # the rest of the benchmark stays out


def test_every_resource_is_listed(module_cmake):
    listed, expected = cmake_list(module_cmake, "MODULE_PYTHON_RESOURCES"), shipped_resources()
    assert listed == expected, _difference_message("resources", expected, listed, "MODULE_PYTHON_RESOURCES")
    assert {f"Resources/Icons/{MODULE}.png", f"Resources/UI/{MODULE}.ui", "Resources/Models.json",
            "Resources/requirements.txt", "Resources/requirements-adapt.txt"} <= listed


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
        slicer_side = relative in (f"{MODULE}.py", f"{LIB}/mrml.py") or relative in SLICER_LIB_WITH_SLICER
        allowed = CORE_IMPORTS | (SLICER_LAYER if slicer_side else set())
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


def _requirement_imports():
    """Import names of what Resources/requirements.txt and requirements-adapt.txt install (the module's reader)."""
    from DiffCodeRestoreSlicerLib import install

    return {IMPORT_NAMES.get(r.name, r.name) for r in install.read_requirements() + install.adapt_requirements()}


def test_shipped_core_imports_lazily_only_what_the_requirements_install():
    """A lazy import is still an import once its function runs (in the worker, inside Slicer): every
    package the shipped core imports anywhere comes from a requirements file, or is named with a reason."""
    declared = _requirement_imports()
    assert {"torch", "huggingface_hub", "scipy", "skimage", "pywt"} <= declared
    seen = set()
    for relative in sorted(item for item in shipped_python() if item.startswith(f"{LIB}/")):
        if relative == f"{LIB}/mrml.py":  # the Slicer side of the core (slicer, vtk)
            continue
        tree = ast.parse((MODULE_DIR / relative).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for top in (name.split(".")[0] for name in names):
                if top == LIB or _is_stdlib(top):
                    continue
                seen.add(top)
                assert top in declared or top in UNDECLARED_LAZY_IMPORTS, \
                    f"{relative} imports {top}, which no requirements file installs in Slicer"
    assert set(UNDECLARED_LAZY_IMPORTS) <= seen, "a stale exception: drop it"


def _tree_module(parts):
    """The module file of the module tree that ``parts`` names (relative to the module folder), or None."""
    for candidate in ("/".join(parts) + ".py", "/".join(parts) + "/__init__.py"):
        if (MODULE_DIR / candidate).is_file():
            return candidate
    return None


def test_shipped_code_imports_only_shipped_modules():
    """Lazy imports included: a module left out of the list is an ImportError in Slicer once that code runs."""
    shipped, seen = shipped_python(), set()
    for relative in sorted(shipped):
        package = relative.split("/")[:-1]
        for node in ast.walk(ast.parse((MODULE_DIR / relative).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name.split(".") for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                module = base + (node.module.split(".") if node.module else [])
                targets = [module] + [module + [alias.name] for alias in node.names]
            else:
                continue
            for target in filter(None, map(_tree_module, targets)):
                if target not in shipped:
                    assert (relative, target) in UNSHIPPED_LAZY_IMPORTS, f"{relative} imports {target}, not shipped"
                    seen.add((relative, target))
    assert seen == set(UNSHIPPED_LAZY_IMPORTS), "a stale exception: drop it"


def test_qt_free_files_of_the_module_never_import_qt_or_slicer():
    """The panel's decisions live in Qt-free files so tests reach them; not even a lazy import of Qt."""
    qt_free = sorted(relative for relative in shipped_python()
                     if relative.startswith(f"{SLICER_LIB}/") and relative not in SLICER_LIB_WITH_SLICER)
    assert {f"{SLICER_LIB}/install.py", f"{SLICER_LIB}/job.py", f"{SLICER_LIB}/panel.py",
            f"{SLICER_LIB}/cache.py"} <= set(qt_free)
    for relative in qt_free:
        tree = ast.parse((MODULE_DIR / relative).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                assert name.split(".")[0] not in {"qt", "ctk", "slicer", "vtk", "PythonQt"}, \
                    f"{relative} imports {name}: keep it Qt-free (move Slicer calls to logic.py)"


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



def test_module_category_is_translated_in_slicers_context(top_cmake):
    """In a translated Slicer, a category translated in the module's own context (``_(...)``) lands in
    an untranslated folder of its own; Slicer's template uses ``translate("qSlicerAbstractCoreModule", ...)``."""
    tree = ast.parse((MODULE_DIR / f"{MODULE}.py").read_text(encoding="utf-8"))
    constants = {node.targets[0].id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                 and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Constant)}
    imports = {(node.module, alias.name) for node in tree.body if isinstance(node, ast.ImportFrom)
               for alias in node.names}
    assert ("slicer.i18n", "translate") in imports
    assignments = [node for node in ast.walk(tree) if isinstance(node, ast.Assign)
                   and ast.unparse(node.targets[0]) == "self.parent.categories"]
    assert len(assignments) == 1
    (call,) = assignments[0].value.elts
    assert isinstance(call, ast.Call) and ast.unparse(call.func) == "translate"
    context, text = call.args
    assert context.value == "qSlicerAbstractCoreModule"
    category = text.value if isinstance(text, ast.Constant) else constants[text.id]
    assert category == cmake_set(top_cmake, "EXTENSION_CATEGORY")


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


# ---- the Extensions Index's description check (scripts/check_description_files.py), reproduced ----
# Its patterns are matched the way the index matches them (a screenshot list it cannot parse counts
# as missing); URLs are resolved to this repository's files instead of being downloaded.
INDEX_PROJECT = re.compile(r"project\s*\(\s*([^\s\)\n\r]+)", re.IGNORECASE | re.MULTILINE)
INDEX_ICON = re.compile(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', re.IGNORECASE | re.MULTILINE)
INDEX_SCREENSHOTS = re.compile(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', re.IGNORECASE | re.MULTILINE)
INDEX_REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")
# A few of the index's accepted categories (its list is longer): the ones this extension could use.
INDEX_CATEGORIES = {"Filtering", "Image Synthesis", "Nuclear Medicine", "Quantification", "Utilities"}
MAX_SCREENSHOT_BYTES = 300 * 1024


def _image_file(url):
    """The repository file a raw.githubusercontent.com URL names, checked to be a PNG/JPEG/GIF image."""
    match = RAW_URL.match(url)
    assert match and url.startswith("http"), f"{url} is not a raw.githubusercontent.com URL of this repository"
    assert url.lower().endswith((".png", ".jpg", ".jpeg", ".gif")), f"{url}: the index wants an image URL"
    path = ROOT / match.group("path")
    assert path.is_file(), f"{url} names {match.group('path')}, which does not exist"
    head = path.read_bytes()[:8]
    assert head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8")), f"{path.name} is not an image"
    return path


def test_extensions_index_description_check(top_cmake):
    name = EXTENSION
    description = ROOT / f"{name}.json"
    raw = description.read_bytes()
    assert b"\r" not in raw, "the index wants LF-only line endings"
    metadata = json.loads(raw)
    assert "$schema" in metadata and metadata["$schema"]
    assert not name.lower().startswith("slicer"), "the extension name must not start with 'Slicer'"
    assert metadata["category"] in INDEX_CATEGORIES
    url = metadata["scm_url"]
    assert "://" in url and url.split("://")[0] in ("git", "https")
    repository = Path(url.strip().strip("/").split("/")[-1]).stem
    assert repository.startswith(INDEX_REPOSITORY_PREFIXES), f"repository name {repository!r}: must start with Slicer"
    projects = INDEX_PROJECT.findall(top_cmake)
    assert projects and projects[0].strip("\"'") == name, "project() must be named like the .json file"
    icons = INDEX_ICON.findall(top_cmake)
    assert icons, "No EXTENSION_ICONURL found in CMakeLists.txt."
    _image_file(icons[0].strip())
    screenshots = INDEX_SCREENSHOTS.findall(top_cmake)
    assert screenshots, "No EXTENSION_SCREENSHOTURLS found in CMakeLists.txt."
    urls = screenshots[0].split()
    assert urls, "EXTENSION_SCREENSHOTURLS is empty: the index requires at least one screenshot."
    for url in urls:
        _image_file(url)
    assert any(ROOT.joinpath(candidate).is_file() for candidate in ("LICENSE", "LICENSE.txt", "COPYING"))


def test_screenshots_are_real_small_and_listed_in_both_descriptions(top_cmake):
    cmake_urls = cmake_set(top_cmake, "EXTENSION_SCREENSHOTURLS").split()
    assert cmake_urls == s4ext_fields().get("screenshoturls", "").split()
    paths = [_image_file(url) for url in cmake_urls]
    assert {path.name for path in paths} == {"Panel.png", "BeforeAfter.png"}
    for path in paths:
        assert path.stat().st_size < MAX_SCREENSHOT_BYTES, f"{path.name} is over 300 KB: regenerate it smaller"
        width, height = struct.unpack(">II", path.read_bytes()[16:24])
        assert 300 <= width <= 2000 and 300 <= height <= 2000, f"{path.name} is {width} x {height}"
    assert (ROOT / "Resources" / "make_screenshots.py").is_file()  # they can be regenerated


def test_repository_stays_under_the_index_limit():
    import subprocess

    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                                capture_output=True, check=True, timeout=60).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    size = sum((ROOT / name.decode()).stat().st_size for name in listed if name and (ROOT / name.decode()).is_file())
    assert size < 100 * 2**20, f"the repository would be {size / 2**20:.0f} MB; the index allows 100 MB"
