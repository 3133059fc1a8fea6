"""One federation's settings: rounds, sites' local training, exact aggregation and privacy, validated when built."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ..adaptation.config import AdaptConfig
from ..errors import InputError
from ..options import Options

METHODS = ("lora", "decoder")


class FederatedConfig(Options):
    what = "bad federation setting"

    rounds: int = Field(3, ge=1, le=1000, description="federation rounds")
    method: Literal[METHODS] = Field("lora", description="what the sites train and exchange: 'lora' (a few MB, peft "
                                     "names) or 'decoder' (the mask decoders)")
    ffa: bool = Field(True, description="FFA-LoRA: every site keeps the same frozen LoRA A and trains B only, so "
                      "averaging B is the average of the updates (averaging A and B apart is not); lora only")
    local_epochs: int = Field(2, ge=1, le=1000, description="passes over a site's slices per round")
    slices_per_image: int = Field(4, ge=1, le=4096, description="labelled slices drawn per training image")
    batch_size: int = Field(2, ge=1, le=1024, description="slices per optimiser step")
    rank: int = Field(8, ge=1, le=256, description="LoRA rank")
    labels: list[str] | None = Field(None, description="label names the federation adapts to")
    auto_head: bool = Field(True, description="also learn the prompt-free (automatic) tokens")
    clip_norm: float | None = Field(None, gt=0, description="clip each site's update to this L2 norm before it "
                                    "leaves the site; empty = no clip")
    noise_multiplier: float = Field(0.0, ge=0, description="Gaussian noise of this many times clip_norm added to "
                                    "each clipped update (needs clip_norm)")
    seed: int = Field(0, description="seed of the shared initial adapter and each site's draws")

    @model_validator(mode="after")
    def _consistent(self) -> FederatedConfig:
        if self.ffa and self.method != "lora":
            self.ffa = False  # FFA concerns LoRA's two factors; decoder weights average exactly anyway
        if self.noise_multiplier > 0 and self.clip_norm is None:
            raise ValueError("noise needs clip_norm (the noise is scaled to it)")
        return self

    def adapt_config(self) -> AdaptConfig:
        """A site's local training in one round: no validation split (the guard judges the final adapter on each
        site's held-out images), no early stopping, the method's defaults otherwise."""
        return AdaptConfig(method=self.method, rank=self.rank, alpha=2 * self.rank, max_epochs=self.local_epochs,
                           slices_per_image=self.slices_per_image, batch_size=self.batch_size, val_fraction=0.0,
                           labels=self.labels, auto_head=self.auto_head, seed=self.seed, freeze_lora_a=self.ffa,
                           note="federated")

    @classmethod
    def load(cls, path: str | Path) -> FederatedConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read federation config {path}: {err}") from err
        if not isinstance(data, dict):
            raise InputError(f"federation config {path} must be a JSON object")
        unknown = set(data) - set(cls.model_fields)
        if unknown:
            raise InputError(f"unknown federation setting(s) {sorted(unknown)}")
        return cls(**data)
