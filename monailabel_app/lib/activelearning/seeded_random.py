"""`random`: the baseline, uniform over unlabelled images and reproducible with a per-request `seed`.

MONAI Label's own Random weights images by time since last proposed: it ignores a seed, and right after every
image was proposed all weights are 0 and it fails with a 500.
"""

from __future__ import annotations

import random

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.strategy import Strategy

from lib.http_errors import plain_errors
from lib.medfm.active.selection import NextSampleOptions


class SeededRandom(Strategy):
    def __init__(self):
        super().__init__("Random unlabelled image (the baseline); pass `seed` for a reproducible choice")

    def __call__(self, request, datastore: Datastore):
        with plain_errors():
            seed = NextSampleOptions.from_request(request).seed
        candidates = sorted(datastore.get_unlabeled_images(DefaultLabelTag.FINAL.value))
        if not candidates:
            return {}
        choice = random.Random(seed).choice(candidates)
        return {"id": choice, "chosen_by": "random", "score": None, "rank": 1, "candidates": len(candidates),
                "reason": f"random: uniform over {len(candidates)} unlabelled images"
                          + (f" with seed {seed}" if seed is not None else "")}
