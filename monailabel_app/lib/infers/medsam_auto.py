"""`medsam_auto`: prompt-free segmentation of the site's labels with an adapter that learned them."""

from __future__ import annotations

from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.infers.medsam_base import MedSAMInferTask


class MedSAMAuto(MedSAMInferTask):
    mode = "auto"

    def __init__(self, service, labels):
        super().__init__(
            service, InferType.SEGMENTATION, labels,
            "LiteMedSAM with a site-trained prompt-free head: no clicks; needs an adapter (409 before one exists); "
            "optional roi limits the slices",
            config={"adapter": "", "modality": ""},
        )

    def run(self, path: str, params: dict):
        return self.service.automatic(path, params)
