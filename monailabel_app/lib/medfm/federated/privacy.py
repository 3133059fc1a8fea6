"""Differential privacy for what leaves a site, as an NVFlare task-result filter: the site's admin attaches it to
the site in the job, and it acts on the update after the training script is done with it, whatever the script.

The whole update (every tensor together) is clipped to an L2 norm, then Gaussian noise of `noise_multiplier` x
the clip is added to each value (the Gaussian mechanism of DP-FedAvg). The privacy budget this spends depends on
rounds, sites and sampling and is not computed here.
"""

from __future__ import annotations

import numpy as np
from nvflare.apis.dxo import DXO, DataKind, MetaKey
from nvflare.apis.dxo_filter import DXOFilter
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable

from .exchange import clip_and_noise


class ClipAndNoise(DXOFilter):
    def __init__(self, clip_norm: float, noise_multiplier: float = 0.0, seed: int | None = None):
        super().__init__(supported_data_kinds=[DataKind.WEIGHT_DIFF], data_kinds_to_filter=[DataKind.WEIGHT_DIFF])
        if not clip_norm > 0 or noise_multiplier < 0:
            raise ValueError(f"clip_norm must be > 0 and noise_multiplier >= 0, got {clip_norm}, {noise_multiplier}")
        self.clip_norm, self.noise_multiplier = float(clip_norm), float(noise_multiplier)
        self.rng = np.random.default_rng(seed)

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> DXO:
        update = {k: np.asarray(v, dtype=np.float32) for k, v in dxo.data.items()}
        private, stats = clip_and_noise(update, self.clip_norm, self.noise_multiplier, self.rng)
        self.log_info(fl_ctx, f"update clipped and noised: {stats}")
        out = DXO(data_kind=dxo.data_kind, data=private, meta=dict(dxo.meta or {}))
        out.set_meta_prop(MetaKey.PROCESSED_ALGORITHM, "clip-and-gaussian-noise")
        return out
