"""Server settings in one place, read from MONAI Label's `--conf key value` pairs (all strings there)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from .options import Options
from .precision import Precision
from .runtime import Runtime
from .volume import CT_DEFAULT_WINDOW

# The site's labels: name -> voxel value in label maps. The sample datastore uses these; a site overrides them
# with --conf labels '{"tumour": 1}'.
DEFAULT_LABELS = {"lesion": 1, "gray_matter": 2, "white_matter": 3}


def default_batch_size(device: str) -> int:
    """Slices per encoder pass. On the 2-core dev CPU batch 1 embeds fastest (bf16: 0.38 s/slice, batch 4: 0.75);
    on a GPU larger batches fill the device (4 until a GPU run says better)."""
    return 4 if str(device).startswith("cuda") else 1


def decode_chunk(device: str) -> int | None:
    """Prompts per mask-decoder pass. On the 2-core dev CPU a pass of 1-2 prompts costs the least per prompt
    (bf16, 1 thread: 0.083 / 0.079 s at 1 / 2, 0.100 at 4, 0.122 at 8: eight prompts' 4096 image tokens each
    outgrow the cache); a GPU takes every prompt of a request in one pass (None)."""
    return None if str(device).startswith("cuda") else 2


class Settings(Options):
    """What the server runs with; `from_conf` reads MONAI Label's `--conf key value` strings into it."""

    model_config = ConfigDict(strict=False)  # built in code too (benchmarks, federation), from paths and lists
    what = "bad server setting"

    models_dir: Path = Field(description="folder of the adapter versions, training stats and results; default the "
                             "app's model/ folder")
    device: str = Field("cpu", description="torch device; `auto` = cuda when there is one, else cpu")
    labels: dict[str, Annotated[int, Field(ge=1, le=255)]] = Field(
        default_factory=lambda: dict(DEFAULT_LABELS), description="the site's labels: label name -> voxel value")
    embedding_cache_mb: int = Field(2048, ge=0, description="memory for cached encoder outputs, in MB")
    embedding_cache_dir: Path | None = Field(None, description="folder that keeps cached encoder outputs across "
                                             "restarts; empty = memory only")
    ct_window: tuple[float, float] = Field(CT_DEFAULT_WINDOW, json_schema_extra={"kind": "two numbers, low,high"},
                                           description="CT intensity window (HU) every CT slice is clipped to "
                                           "before the FM sees it")
    batch_size: int = Field(1, ge=1, description="slices per encoder pass; empty = 4 on a GPU, 1 on a CPU")
    scoring_slices: int = Field(8, ge=1, description="slices per image the active-learning scores look at")
    fm: str = Field("litemedsam", description="the foundation model backend")
    precision: Precision = Field("auto", description="the FM's number format; auto = bf16 where the device runs "
                                 "it natively (CUDA, AVX-512-BF16/AMX CPUs), else fp32")
    # OpenVINO runs the FM's encoder and decoders on a CPU, exported per version (runtime.py); a GPU keeps PyTorch
    runtime: Runtime = Field("torch", description="what runs the FM on a CPU; openvino falls back to torch with a "
                             "warning, a GPU keeps torch")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if not self.labels:
            raise ValueError("labels must name at least one label")
        if not self.ct_window[0] < self.ct_window[1]:
            raise ValueError(f"ct_window must be low,high with low below high, got {self.ct_window}")
        return self

    @classmethod
    def from_conf(cls, conf: dict[str, str], app_dir: str | Path) -> Settings:
        values = cls.request_values(conf)
        device = values.get("device", "auto")
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        values["device"] = device
        values["models_dir"] = Path(values.get("models_dir", Path(app_dir) / "model")).resolve()
        values.setdefault("batch_size", default_batch_size(device))
        return cls(**values)

    @property
    def runtime_dir(self) -> Path:
        """Runtime exports, one folder per version, rebuilt when the version's weights change."""
        return self.models_dir / "runtime"
