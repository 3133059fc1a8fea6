"""`medsam_auto`: prompt-free segmentation of the site's labels with an adapter that learned them."""

from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.infers.medsam_base import MedSAMInferTask
from lib.medfm.segmenter import SegmentationResult
from lib.medfm.volume import Volume


class MedSAMAuto(MedSAMInferTask):
    mode = "automatic"
    infer_type = InferType.SEGMENTATION
    summary = ("LiteMedSAM with a site-trained prompt-free head: no clicks; needs an adapter (409 before one "
               "exists); optional roi limits the slices")

    def segment(self, image_path: str, request: dict) -> tuple[Volume, SegmentationResult]:
        return self.service.automatic(image_path, request)
