"""The panel's decisions, without Qt: what Apply shows, what follows a run, the parameter node binding.

Why: these are the places where the widget went wrong (a second install started from a pumped
click; an AttributeError when the scene was closed during a run and a message arrived later;
observers removed twice on re-entry, each printing a warning). Kept here as plain functions and a
small class, the widget only maps their answers to Qt calls and translated texts, and the tests
check them without the Slicer application.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

GPU_ERRORS = ("out_of_memory", "no_gpu")


@dataclass(frozen=True)
class ApplyState:
    """What the Apply button shows: ``mode`` is "apply", "cancel", "cancelling" or "installing"."""

    mode: str
    enabled: bool


def apply_state(running: bool, installing: Optional[str], has_input: bool, cancelling: bool = False) -> ApplyState:
    """Apply while idle (enabled with an input), Cancel while a job runs, disabled while packages install.

    Installing comes first: on Slicer 5.8/5.10 pip keeps the GUI alive, and a click then would start
    a second, concurrent install.
    """
    if installing:
        return ApplyState("installing", False)
    if running:
        return ApplyState("cancelling", False) if cancelling else ApplyState("cancel", True)
    return ApplyState("apply", has_input)


@dataclass(frozen=True)
class FollowUp:
    """What the panel does once a restore has ended."""

    show_result: bool = False
    compute_metrics: bool = False
    offer_cpu: bool = False  # ask to run again on the CPU (GPU out of memory / no GPU)
    show_error: bool = False  # a message box, besides the status line


def restore_follow_up(error_kind: Optional[str], parameters: Any, metrics_available: bool = True) -> FollowUp:
    """Decide from the outcome and the *current* parameter node, which is None when the scene was
    closed during the run (then there is nothing to retry or measure in: the status line says it)."""
    bound = parameters is not None
    if error_kind is None:
        has_reference = bound and getattr(parameters, "referenceVolume", None) is not None
        return FollowUp(show_result=True, compute_metrics=has_reference and metrics_available)
    if error_kind == "cancelled":
        return FollowUp()
    if error_kind in GPU_ERRORS:
        if bound and getattr(parameters, "device", "auto") != "cpu":
            return FollowUp(offer_cpu=True)
        return FollowUp(show_error=bound)
    return FollowUp(show_error=bound)


class ParameterNodeBinding:
    """Keeps at most one parameter node connected to the panel and observed, each exactly once.

    ``connect(node) -> tag`` / ``disconnect(node, tag)`` bind the GUI; ``observe(node)`` /
    ``unobserve(node)`` add and remove the panel's observer. ``release`` (the module is left)
    keeps the node but drops the connections; ``bind`` (entered again) restores them; ``unbind``
    (scene closing) drops the node too. Nothing is removed that is not there, so Slicer's observer
    mixin never warns.
    """

    def __init__(self, connect: Callable[[Any], Any], disconnect: Callable[[Any, Any], None],
                 observe: Callable[[Any], None], unobserve: Callable[[Any], None]):
        self._connect, self._disconnect = connect, disconnect
        self._observe, self._unobserve = observe, unobserve
        self.node: Any = None
        self._tag: Any = None
        self.connected = False

    def bind(self, node: Any) -> None:
        if node is self.node and self.connected:
            return
        self.unbind()
        self.node = node
        if node is not None:
            self._tag = self._connect(node)
            self._observe(node)
            self.connected = True

    def release(self) -> None:
        if not self.connected:
            return
        self.connected = False
        try:
            self._disconnect(self.node, self._tag)
        finally:
            self._tag = None
            self._unobserve(self.node)

    def unbind(self) -> None:
        self.release()
        self.node = None


@dataclass(frozen=True)
class ModelButtons:
    """What the model section offers for one catalog model (``hub.ModelStatus``)."""

    can_delete: bool  # "Delete cached": there is a cached copy, good or damaged
    verify: bool  # the Download button reads "Verify": a good cached copy
    damaged: Optional[str]  # "cache" or "bundled": which copy failed its SHA-256 check, for the advice


def model_buttons(status) -> ModelButtons:
    """A damaged cached copy must be deletable from the panel (a restore would otherwise remove it
    silently and fall back to another copy); the damage is named so the panel can say what to do."""
    damaged = "cache" if status.cache_damage else "bundled" if status.bundled_damage else None
    return ModelButtons(bool(status.cached or status.cache_damage), bool(status.cached), damaged)
