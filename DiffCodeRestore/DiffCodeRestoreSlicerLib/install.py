"""What the module installs into Slicer's Python, and the one-install-at-a-time rule. Qt-free.

Why this file: the floors live in one place, ``Resources/requirements.txt``, which pyproject.toml
reads too (likewise ``Resources/requirements-adapt.txt``, pyproject's ``adapt`` extra: what only
adapting needs, installed when an adaptation starts; its scikit-image line is what PSNR/SSIM need),
and presence alone is not enough (a Slicer with an old huggingface_hub has the package but fails
every download), so installed versions are compared with the floors without importing
anything. torch is installed the PyTorch extension's way (light-the-torch picks the CUDA build that
fits the GPU) but only torch, with a requirement known to install, and it is never imported into
Slicer's process: only the worker process uses it. On Slicer 5.8/5.10 ``pip_install`` keeps the GUI
alive while pip runs, so a second click could start a second, concurrent install: the installer
refuses to nest and tells its listeners what it is installing, so the panel can disable Apply.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
ADAPT_REQUIREMENTS_FILE = REQUIREMENTS_FILE.with_name("requirements-adapt.txt")
METRICS_PACKAGE = "scikit-image"  # PSNR/SSIM (metrics.slice_scores): its line of ADAPT_REQUIREMENTS_FILE
TORCH = "torch"
SLICER_PROVIDES = ("numpy", "simpleitk")  # come with every Slicer; never reinstalled from here
# light-the-torch fails to install torch 2.13 into Slicer 5.12.2 (a broken install that needs a
# reinstall of Slicer: https://github.com/Slicer/light-the-torch/issues/176); 2.12 installs. Only
# fresh installs are capped: a torch the user already has that meets the floor is kept.
TORCH_INSTALL_CAP = "<2.13"
LIGHT_THE_TORCH = "light-the-torch>=0.5"

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*((?:[<>=!~]=?\s*[0-9][0-9A-Za-z.+*-]*\s*,?\s*)*)$")
_CLAUSE = re.compile(r"(<=|>=|==|!=|~=|<|>)\s*([0-9][0-9A-Za-z.+*-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def release(version: str) -> Tuple[int, ...]:
    """The numeric release of a version ("2.6.0+cu126" -> (2, 6, 0); "1.1.0rc1" -> (1, 1, 0))."""
    numbers = []
    for part in version.split("+")[0].split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
        if match.end() != len(part):  # "0rc1": a pre-release of this number; stop here
            break
    return tuple(numbers)


def _compare(left: Tuple[int, ...], right: Tuple[int, ...]) -> int:
    width = max(len(left), len(right))
    left, right = left + (0,) * (width - len(left)), right + (0,) * (width - len(right))
    return (left > right) - (left < right)


@dataclass(frozen=True)
class Requirement:
    """``name`` plus comma-separated version clauses (``>=2.0,<2.13``); no extras or markers."""

    name: str
    specifier: str = ""

    def __str__(self) -> str:
        return self.name + self.specifier

    @property
    def key(self) -> str:
        return canonical(self.name)

    def clauses(self) -> List[Tuple[str, str]]:
        return _CLAUSE.findall(self.specifier)

    def satisfied_by(self, version: Optional[str]) -> bool:
        if version is None:
            return False
        have = release(version)
        for operator, wanted in self.clauses():
            if wanted.endswith(".*"):
                prefix = release(wanted[:-2])
                matches = have[: len(prefix)] == prefix
                ok = matches if operator == "==" else not matches if operator == "!=" else False
            else:
                target = release(wanted)
                order = _compare(have, target)
                if operator == "~=":  # compatible release: >= target, same leading numbers
                    ok = order >= 0 and have[: max(1, len(target) - 1)] == target[: max(1, len(target) - 1)]
                else:
                    ok = {"<": order < 0, "<=": order <= 0, ">": order > 0, ">=": order >= 0, "==": order == 0,
                          "!=": order != 0}[operator]
            if not ok:
                return False
        return True

    def with_clause(self, clause: str) -> "Requirement":
        return Requirement(self.name, ",".join(filter(None, [self.specifier, clause])))


def parse_requirement(text: str) -> Requirement:
    match = _REQUIREMENT.match(text)
    if not match:
        raise ValueError(f"unsupported requirement {text.strip()!r}: write NAME or NAME>=VERSION[,<VERSION].")
    return Requirement(match.group(1), re.sub(r"\s+", "", match.group(2)).rstrip(","))


def read_requirements(path: Optional[Path] = None) -> List[Requirement]:
    """The requirements of a pip-style file (comments and blank lines skipped)."""
    path = Path(path or REQUIREMENTS_FILE)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise RuntimeError(f"{path} cannot be read ({error.strerror}): reinstall the DiffCode extension.") from None
    return [parse_requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]


def adapt_requirements() -> List[Requirement]:
    """What adapting to one's scans needs beyond the module's requirements (``requirements-adapt.txt``)."""
    return read_requirements(ADAPT_REQUIREMENTS_FILE)


def metrics_requirements() -> List[Requirement]:
    """What the panel's PSNR/SSIM need: scikit-image alone, at the floor the adapt requirements give it."""
    return [requirement for requirement in adapt_requirements() if requirement.key == METRICS_PACKAGE]


def installed_version(name: str) -> Optional[str]:
    """The installed distribution's version, read from its metadata (nothing is imported).

    Caches are invalidated first so that a package pip has just installed is seen at once.
    """
    importlib.invalidate_caches()
    for candidate in dict.fromkeys([name, name.replace("-", "_"), name.replace("_", "-"), canonical(name)]):
        try:
            return importlib.metadata.version(candidate)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def torch_install_arguments(requirement: str) -> List[str]:
    """light-the-torch's command line for torch alone (the worker needs no torchvision)."""
    return ["install", requirement]


def install_torch(requirement: str, run_module: Callable[[str, List[str]], None],
                  install_light_the_torch: Callable[[], None], module_available: Callable[[str], bool]) -> None:
    """Install torch as the PyTorch extension does (light-the-torch), without importing it here.

    ``run_module(module, args)`` runs ``python -m module args`` in Slicer's Python (a subprocess);
    ``install_light_the_torch()`` installs light-the-torch the PyTorch extension's way.
    """
    if not module_available("light_the_torch"):
        install_light_the_torch()
    run_module("light_the_torch", torch_install_arguments(requirement))


class InstallInProgress(RuntimeError):
    """A second install was asked for while one runs (Slicer keeps handling clicks during pip)."""


class DependencyPlan:
    """Which requirements are unmet and how each is installed (PyTorch extension or pip)."""

    def __init__(self, torch: Optional[Requirement], pip: Sequence[Requirement], provided: Sequence[Requirement]):
        self.torch = torch
        self.pip = list(pip)
        self.provided = list(provided)  # numpy/SimpleITK below their floor: Slicer itself is too old

    def __bool__(self) -> bool:
        return bool(self.torch or self.pip or self.provided)

    def describe(self) -> List[str]:
        lines = [f"PyTorch: {self.torch} (through the PyTorch extension)"] if self.torch else []
        return lines + [str(requirement) for requirement in self.pip]


class DependencyInstaller:
    """Checks the module's requirements and installs what is missing, one install at a time.

    The actions are injected (the Slicer logic passes Slicer's pip and the PyTorch extension; tests
    pass fakes). ``busy`` says what is being installed, or None; ``on_busy`` listeners are told
    when it changes (the panel disables Apply and shows it); ``on_installed`` listeners get the
    names installed (the panel probes the devices again once torch is there).
    """

    def __init__(self, pip_install: Callable[[List[str]], None], install_torch: Callable[[str], None],
                 confirm: Callable[[List[str]], bool], version_of: Callable[[str], Optional[str]] = installed_version,
                 requirements: Optional[Iterable[Requirement]] = None):
        self.pip_install = pip_install
        self.install_torch = install_torch
        self.confirm = confirm
        self.version_of = version_of
        self.requirements = list(read_requirements() if requirements is None else requirements)
        self.busy: Optional[str] = None
        self.on_busy: List[Callable[[Optional[str]], None]] = []
        self.on_installed: List[Callable[[List[str]], None]] = []

    def requirement(self, name: str) -> Requirement:
        for requirement in self.requirements:
            if requirement.key == canonical(name):
                return requirement
        raise KeyError(f"{name} is not in {REQUIREMENTS_FILE.name}")

    def torch_install_requirement(self) -> Requirement:
        """The floor from the requirements file, capped at what is known to install."""
        return self.requirement(TORCH).with_clause(TORCH_INSTALL_CAP)

    def torch_installed(self) -> bool:
        return self.requirement(TORCH).satisfied_by(self.version_of(TORCH))

    def plan(self, with_torch: bool = True, extra: Iterable[Requirement] = (), include_base: bool = True
             ) -> DependencyPlan:
        """What is unmet: the requirements file's (unless ``include_base`` is False) and ``extra``."""
        torch, pip, provided = None, [], []
        for requirement in (list(self.requirements) if include_base else []) + list(extra):
            version = self.version_of(requirement.name)
            if requirement.satisfied_by(version):
                continue
            if requirement.key == TORCH:
                if with_torch:
                    torch = self.torch_install_requirement()
            elif requirement.key in SLICER_PROVIDES:
                if version is not None:  # Slicer's own copy without metadata is taken as it is
                    provided.append(requirement)
            else:
                pip.append(requirement)
        return DependencyPlan(torch, pip, provided)

    def _set_busy(self, what: Optional[str]) -> None:
        self.busy = what
        for listener in list(self.on_busy):
            listener(what)

    def ensure(self, with_torch: bool = True, extra: Iterable[Requirement] = (), ask: bool = True,
               include_base: bool = True) -> bool:
        """Install what is missing after one confirmation; False if the user declines.

        Raises ``InstallInProgress`` when called while an install runs, and ``RuntimeError`` (one
        line saying what to do) when something is still missing afterwards.
        """
        if self.busy:
            raise InstallInProgress(f"Python packages are being installed ({self.busy}); wait until that has finished.")
        extra = list(extra)
        plan = self.plan(with_torch, extra, include_base)
        if plan.provided:
            names = ", ".join(f"{r} (installed: {self.version_of(r.name) or 'none'})" for r in plan.provided)
            raise RuntimeError(f"This Slicer's {names} is too old for DiffCode Restore: install a newer Slicer.")
        if not plan:
            return True
        if ask and not self.confirm(plan.describe()):
            return False
        self._set_busy(", ".join(plan.describe()))
        try:
            if plan.torch:
                self.install_torch(str(plan.torch))
            if plan.pip:
                self.pip_install([str(requirement) for requirement in plan.pip])
        finally:
            self._set_busy(None)
        still = self.plan(with_torch, extra, include_base)
        if still:
            raise RuntimeError(f"{', '.join(still.describe())} could not be installed: see the Python console for "
                               "the reason, then restart Slicer and try again.")
        installed = ([TORCH] if plan.torch else []) + [requirement.name for requirement in plan.pip]
        for listener in list(self.on_installed):
            listener(installed)
        return True
