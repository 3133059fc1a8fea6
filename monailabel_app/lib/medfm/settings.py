"""Server settings in one place, read from MONAI Label's `--conf key value` pairs (all strings there)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from . import precision as precision_mod
from .errors import InputError
from .volume import CT_DEFAULT_WINDOW

# The site's labels: name -> voxel value in label maps. The sample datastore uses these; a site overrides them
# with --conf labels '{"tumour": 1}'.
DEFAULT_LABELS = {"lesion": 1, "gray_matter": 2, "white_matter": 3}


def default_batch_size(device: str) -> int:
    """Slices per encoder pass. On the 2-core dev CPU batch 1 embeds fastest (bf16: 0.38 s/slice, batch 4: 0.75);
    on a GPU larger batches fill the device (4 until a GPU run says better)."""
    return 4 if str(device).startswith("cuda") else 1


@dataclass
class Settings:
    models_dir: Path
    device: str = "cpu"
    labels: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LABELS))
    embedding_cache_mb: int = 2048
    embedding_cache_dir: Path | None = None
    ct_window: tuple[float, float] = CT_DEFAULT_WINDOW
    batch_size: int = 1  # slices per encoder pass; from_conf picks default_batch_size(device) unless given
    scoring_slices: int = 8
    fm: str = "litemedsam"
    precision: str = "auto"  # bf16 where the device runs it natively (CUDA, AVX-512-BF16/AMX CPUs), else fp32

    @classmethod
    def from_conf(cls, conf: dict[str, str], app_dir: str | Path) -> Settings:
        def get(key, default=None):
            value = conf.get(key)
            return default if value in (None, "") else value

        device = get("device", "auto")
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            lo, hi = (float(v) for v in str(get("ct_window", f"{CT_DEFAULT_WINDOW[0]},{CT_DEFAULT_WINDOW[1]}"))
                      .split(","))
            labels = json.loads(get("labels", json.dumps(DEFAULT_LABELS)))
            settings = cls(
                models_dir=Path(get("models_dir", Path(app_dir) / "model")).resolve(),
                device=device,
                labels={str(k): int(v) for k, v in labels.items()},
                embedding_cache_mb=int(get("embedding_cache_mb", 2048)),
                embedding_cache_dir=Path(get("embedding_cache_dir")) if get("embedding_cache_dir") else None,
                ct_window=(lo, hi),
                batch_size=int(get("batch_size", default_batch_size(device))),
                scoring_slices=int(get("scoring_slices", 8)),
                fm=str(get("fm", "litemedsam")),
                precision=str(get("precision", "auto")),
            )
        except (ValueError, TypeError, AttributeError) as err:
            raise InputError(f"bad server setting: {err}") from err
        precision_mod.resolve(settings.precision, settings.device)  # a bad value stops the server, in plain words
        if not settings.labels or any(v < 1 or v > 255 for v in settings.labels.values()):
            raise InputError("labels must map names to voxel values 1..255")
        return settings
