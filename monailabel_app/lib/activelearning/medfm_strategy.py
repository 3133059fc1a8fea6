"""`uncertainty`, `diversity`, `hybrid`: next-sample strategies over the active adapter's score book.

They only read persisted scores, so they answer in milliseconds however large the datastore; each returns only
images without a final label (held-out images have one), honours the request's `seed`, and says why it chose
(`chosen_by`, `score`, `rank`, `reason`: MONAI Label's endpoint overwrites a `strategy` key with image info).
"""

from __future__ import annotations

import random

import numpy as np
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.strategy import Strategy

from lib.http_errors import plain_errors
from lib.medfm.active.score_book import ScoreBook
from lib.medfm.active.selection import NextSampleOptions, rank
from lib.medfm.service import MedFMService

DESCRIPTIONS = {
    "uncertainty": "the unlabelled image the active adapter is least sure about (mean predictive entropy)",
    "diversity": "the unlabelled image least like any labelled one (k-center greedy on pooled FM embeddings)",
    "hybrid": "uncertainty weighted by diversity (both scaled to [0, 1]): uncertain and unlike the labelled set",
}


class FMStrategy(Strategy):
    def __init__(self, name: str, service: MedFMService):
        super().__init__(DESCRIPTIONS[name])
        self.name = name
        self.service = service

    def __call__(self, request, datastore: Datastore):
        with plain_errors():
            seed = NextSampleOptions.from_request(request).seed
        seed = 0 if seed is None else seed
        final = DefaultLabelTag.FINAL.value
        candidates = sorted(datastore.get_unlabeled_images(final))
        if not candidates:
            return {}
        labelled = sorted(datastore.get_labeled_images(final))
        version = self.service.store.active()
        book = ScoreBook(self.service.settings.models_dir / "scores", version)
        entries = book.load()
        scored = [i for i in candidates if book.is_current(i, datastore.get_image_uri(i), entries)]
        unscored = len(candidates) - len(scored)
        if not scored:
            choice = random.Random(seed).choice(candidates)
            return {"id": choice, "chosen_by": self.name, "adapter": version, "score": None, "rank": 1,
                    "candidates": len(candidates),
                    "reason": f"no scores yet for adapter {version} (scoring runs in the background): chose at "
                              f"random with seed {seed} among {len(candidates)} unlabelled images"}
        ref = np.asarray([entries[i]["embedding"] for i in labelled if i in entries], dtype=float).reshape(
            -1, len(entries[scored[0]]["embedding"]))
        ranking = rank(self.name, scored, np.asarray([entries[i]["uncertainty"] for i in scored]),
                       np.asarray([entries[i]["embedding"] for i in scored], dtype=float), ref, seed)
        choice, score = ranking[0]
        note = f"; {unscored} newer image(s) not scored yet" if unscored else ""
        return {"id": choice, "chosen_by": self.name, "adapter": version, "score": round(score, 6), "rank": 1,
                "candidates": len(candidates), "scored_at": entries[choice]["scored_at"],
                "runner_up": ranking[1][0] if len(ranking) > 1 else None,
                "reason": f"{self.name}: {DESCRIPTIONS[self.name]}; score {score:.4f}, best of {len(scored)} scored "
                          f"unlabelled images against {len(ref)} labelled ones (adapter {version}){note}"}
