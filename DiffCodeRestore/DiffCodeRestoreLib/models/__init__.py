"""The DiffCode network: config, codebook bank, few-step diffusion, encoders/decoder."""

from .config import DiffCodeConfig
from .diffcode import DiffCodeModel, HQAutoencoder, WeightsError

__all__ = ["DiffCodeConfig", "DiffCodeModel", "HQAutoencoder", "WeightsError"]
