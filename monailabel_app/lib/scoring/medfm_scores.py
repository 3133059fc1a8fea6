"""`medfm_scores`: MONAI Label scoring method that fills the active-learning score book for the active adapter.

MONAI Label runs it in its own subprocess (after training, at start-up, after each next-sample request), so it
never blocks inference or labelling; images whose file has not changed since they were scored are skipped.
"""

from __future__ import annotations

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod

from lib.medfm.active.score_book import ScoreBook
from lib.medfm.active.scoring import score_images
from lib.medfm.service import MedFMService


class MedFMScores(ScoringMethod):
    def __init__(self, service: MedFMService):
        super().__init__("Per-image uncertainty and pooled FM embeddings for the active adapter (active learning)")
        self.service = service

    def __call__(self, request, datastore: Datastore):
        service = self.service
        images = {i: datastore.get_image_uri(i) for i in datastore.list_images()}
        book = ScoreBook(service.settings.models_dir / "scores", service.store.active())
        return score_images(service.segmenter, book, images, service.settings.scoring_slices,
                            service.settings.ct_window)
