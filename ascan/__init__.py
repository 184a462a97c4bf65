"""AsCAN: asymmetric convolution-attention networks, as a timm model family.

Importing `ascan` registers the zoo with timm: `timm.create_model("ascan_tiny")`.
"""
from .config import ArchConfig
from .model import AsCAN, build_model
from . import zoo

__all__ = ["ArchConfig", "AsCAN", "build_model", "zoo"]
