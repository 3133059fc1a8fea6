"""Adaptation hyperparameters, as one dataclass validated from a request (bad values become plain-words errors)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

from ..errors import InputError

METHODS = ("lora", "dora", "decoder", "full")
# Learning rates that worked on the sample cases: the prompt-free label tokens start from zero and need a far
# larger step than weights that start from a good pretrained value.
DEFAULT_LR = {"lora": 5e-4, "dora": 5e-4, "decoder": 1e-4, "full": 2e-5}


@dataclass
class AdaptConfig:
    method: str = "lora"
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0  # peft's default; 0.05 kept a dropped copy of every LoRA input: +38 % training memory
    target_modules: str | None = None  # regex over module names; None = the backend's attention and MLP linears
    lr: float | None = None  # None = DEFAULT_LR[method]
    head_lr: float = 1e-2
    max_epochs: int = 10
    max_seconds: float = 1800.0
    slices_per_image: int = 8
    batch_size: int = 4
    val_fraction: float = 0.25
    patience: int = 3
    seed: int = 0
    auto_head: bool = True
    # Recompute activations in backward instead of keeping them. None = on for a GPU, where memory is what runs
    # out (LoRA batch 4: 3.3 -> 0.7 GB of tensors), off on a CPU, where it cost 1.6x the step time (dev CPU).
    gradient_checkpointing: bool | None = None
    box_jitter: float = 0.1
    labels: list[str] | None = None
    regression_margin: float = 0.02  # held-out Dice the new adapter may lose against the active one and go live
    images: list[str] | None = None  # train on these datastore ids only (default: every labelled, non-held-out)
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("extra")
        data["lr"] = self.learning_rate
        return data

    @classmethod
    def from_request(cls, request: dict) -> AdaptConfig:
        """Pick our fields out of a MONAI Label train request (which also carries model, device, ...)."""
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        values = {}
        for name, f in known.items():
            if name in request and request[name] not in (None, "", "None", "null"):
                values[name] = _coerce(name, request[name], f.type)
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def bad(msg: str):
            raise InputError(f"bad training parameter: {msg}")

        if self.method not in METHODS:
            bad(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name, lo, hi in (("rank", 1, 256), ("alpha", 1, 4096), ("max_epochs", 1, 10000),
                             ("slices_per_image", 1, 4096), ("batch_size", 1, 1024), ("patience", 1, 1000)):
            value = getattr(self, name)
            if not lo <= value <= hi:
                bad(f"{name} must be between {lo} and {hi}, got {value}")
        if not 0 <= self.dropout < 1:
            bad(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.learning_rate <= 1 or not 0 < self.head_lr <= 10:
            bad(f"lr must be in (0, 1] and head_lr in (0, 10], got {self.learning_rate} and {self.head_lr}")
        if self.max_seconds <= 0:
            bad(f"max_seconds must be positive, got {self.max_seconds}")
        if not 0 <= self.val_fraction < 1:
            bad(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not -1 <= self.regression_margin <= 1:
            bad(f"regression_margin must be in [-1, 1], got {self.regression_margin}")
        if not 0 <= self.box_jitter <= 1:
            bad(f"box_jitter must be in [0, 1], got {self.box_jitter}")
        if self.target_modules is not None:
            try:
                re.compile(self.target_modules)
            except re.error as err:
                bad(f"target_modules is not a valid regular expression: {err}")


def _coerce(name: str, value, type_name):
    text = str(type_name)
    try:
        if text.startswith("bool"):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if text.startswith("int"):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError(value)
            return int(float(value))
        if text.startswith("float"):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if text.startswith("list"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return [str(v).strip() for v in items if str(v).strip()]
        return str(value)
    except (TypeError, ValueError) as err:
        raise InputError(f"bad training parameter: {name} = {value!r} is not a valid {text.split(' ')[0]}") from err
