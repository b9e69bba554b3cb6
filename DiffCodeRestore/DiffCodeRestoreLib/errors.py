"""Errors shared by the light modules (hub, volume I/O) and the torch ones (models), importable without torch."""

from __future__ import annotations

import threading

LONGEST_LINE = 300  # characters of an error shown to the user: the head and the tail are kept


class WeightsError(RuntimeError):
    """Weights cannot be found, fetched or trusted; the message is one line saying what to do."""


def one_line(error: BaseException) -> str:
    """The message of ``error`` as one line, for the one-line errors the user sees.

    All lines are joined: library messages put the reason first (huggingface_hub) or last (ITK,
    pydicom), so keeping only one end loses it for the other. A very long text keeps its head and tail.
    """
    text = " ".join(str(error).split())
    if not text:
        return type(error).__name__
    if len(text) > LONGEST_LINE:
        half = LONGEST_LINE // 2 - 3
        text = f"{text[:half]} ... {text[-half:]}"
    return text


class CancelToken:
    """Thread- and signal-safe flag: ``cancel()`` from anywhere (a GUI, a signal handler); the pipeline
    stops before its next batch, a download at its next chunk."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()
