"""One federation's settings: rounds, sites' local training, exact aggregation and privacy, validated when built."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..adaptation.config import AdaptConfig
from ..errors import InputError

METHODS = ("lora", "decoder")


@dataclass
class FederatedConfig:
    rounds: int = field(default=3, metadata={"help": "federation rounds, 1-1000"})
    method: str = field(default="lora", metadata={"help": "what the sites train and exchange: 'lora' (a few MB, "
                                                          "peft names) or 'decoder' (the mask decoders)"})
    ffa: bool = field(default=True, metadata={"help": "FFA-LoRA: every site keeps the same frozen LoRA A and "
                                                      "trains B only, so averaging B is the average of the "
                                                      "updates (averaging A and B apart is not)"})
    local_epochs: int = field(default=2, metadata={"help": "passes over a site's slices per round, 1-1000"})
    slices_per_image: int = field(default=4, metadata={"help": "labelled slices drawn per training image"})
    batch_size: int = field(default=2, metadata={"help": "slices per optimiser step"})
    rank: int = field(default=8, metadata={"help": "LoRA rank"})
    labels: list[str] | None = field(default=None, metadata={"help": "label names the federation adapts to"})
    auto_head: bool = field(default=True, metadata={"help": "also learn the prompt-free (automatic) tokens"})
    clip_norm: float | None = field(default=None, metadata={"help": "clip each site's update to this L2 norm "
                                                                    "before it leaves the site; empty = no clip"})
    noise_multiplier: float = field(default=0.0, metadata={"help": "Gaussian noise of this many times clip_norm "
                                                                   "added to each clipped update (needs clip_norm)"})
    seed: int = field(default=0, metadata={"help": "seed of the shared initial adapter and each site's draws"})

    def __post_init__(self) -> None:
        def bad(msg: str):
            raise InputError(f"bad federation setting: {msg}")

        if self.method not in METHODS:
            bad(f"method must be one of {METHODS}, got {self.method!r}")
        for name, lo, hi in (("rounds", 1, 1000), ("local_epochs", 1, 1000), ("slices_per_image", 1, 4096),
                             ("batch_size", 1, 1024), ("rank", 1, 256)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                bad(f"{name} must be a whole number between {lo} and {hi}, got {value!r}")
        if self.ffa and self.method != "lora":
            self.ffa = False  # FFA concerns LoRA's two factors; decoder weights average exactly anyway
        if self.clip_norm is not None and not self.clip_norm > 0:
            bad(f"clip_norm must be positive or empty, got {self.clip_norm}")
        if self.noise_multiplier < 0 or (self.noise_multiplier > 0 and self.clip_norm is None):
            bad("noise_multiplier must be >= 0, and noise needs clip_norm (the noise is scaled to it)")

    def adapt_config(self) -> AdaptConfig:
        """A site's local training in one round: no validation split (the guard judges the final adapter on each
        site's held-out images), no early stopping, the method's defaults otherwise."""
        return AdaptConfig(method=self.method, rank=self.rank, alpha=2 * self.rank, max_epochs=self.local_epochs,
                           slices_per_image=self.slices_per_image, batch_size=self.batch_size, val_fraction=0.0,
                           labels=self.labels, auto_head=self.auto_head, seed=self.seed, freeze_lora_a=self.ffa,
                           note="federated")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def load(cls, path: str | Path) -> FederatedConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read federation config {path}: {err}") from err
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown federation setting(s) {sorted(unknown)}")
        return cls(**data)
