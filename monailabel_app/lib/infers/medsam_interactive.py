"""`medsam_interactive`: box / click prompts in MONAI Label's sam2 format, propagated through the roi's slices."""

from __future__ import annotations

from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.infers.medsam_base import MedSAMInferTask


class MedSAMInteractive(MedSAMInferTask):
    mode = "interactive"

    def __init__(self, service, labels):
        super().__init__(
            service, InferType.ANNOTATION, labels,
            "LiteMedSAM with prompts: foreground/background points [[i,j,k],...] and roi [i0,j0,i1,j1,k0,k1] "
            "(inclusive voxel indices); optional adapter ('base' or a version; default the active one)",
            config={"adapter": "", "modality": ""},
        )

    def run(self, path: str, params: dict):
        return self.service.interactive(path, params)
