"""PEFT adaptation of an FM backend on a site's labelled volumes (LoRA, DoRA, decoder-only, full)."""

from .config import METHODS, AdaptConfig
from .trainer import AdaptResult, StopRequested, adapt

__all__ = ["METHODS", "AdaptConfig", "AdaptResult", "StopRequested", "adapt"]
