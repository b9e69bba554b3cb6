"""Errors shared by the light modules (hub, volume I/O) and the torch ones (models), importable without torch."""


class WeightsError(RuntimeError):
    """Weights cannot be found, fetched or trusted; the message is one line saying what to do."""
