"""FM backends by name. A new backend (a MONAI 3D network, a SAM checkpoint from a local path) registers here."""

from .base import FMBackend, PeftTargets, PreparedSlice, SlicePrompt

_BACKENDS = {"litemedsam": "LiteMedSAMBackend"}


def get_backend(name: str = "litemedsam", **kwargs) -> FMBackend:
    if name not in _BACKENDS:
        raise KeyError(f"unknown FM backend '{name}'; known: {sorted(_BACKENDS)}")
    from . import litemedsam

    return getattr(litemedsam, _BACKENDS[name])(**kwargs)


__all__ = ["FMBackend", "PeftTargets", "PreparedSlice", "SlicePrompt", "get_backend"]
