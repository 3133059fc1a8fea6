"""`medsam_interactive`: box / click prompts in MONAI Label's sam2 format, propagated through the roi's slices."""

from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.infers.medsam_base import MedSAMInferTask
from lib.medfm.segmenter import SegmentationResult
from lib.medfm.volume import Volume


class MedSAMInteractive(MedSAMInferTask):
    mode = "interactive"
    # `deepgrow`: the stock SlicerMONAILabel plugin lists only deepgrow/deepedit models in its interactive
    # (point and ROI) section, so another type would hide this model from it.
    infer_type = InferType.DEEPGROW
    summary = ("LiteMedSAM with prompts: foreground/background points [[i,j,k],...] and roi [i0,i1,j0,j1,k0,k1] "
               "(per-axis pairs of inclusive voxel indices, as the stock plugin sends); optional adapter ('base' or a "
               "version; default the active one), "
               "max_propagation (slices a click is followed each way, default 32; 0 = the clicked slice only)")

    def segment(self, image_path: str, request: dict) -> tuple[Volume, SegmentationResult]:
        return self.service.interactive(image_path, request)
