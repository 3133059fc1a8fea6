"""Shared glue for the MedSAM infer tasks: run the core service, write the label file, report provenance."""

from __future__ import annotations

import os
import tempfile

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.http_errors import plain_errors
from lib.medfm.prompts import InferOptions
from lib.medfm.segmenter import SegmentationResult
from lib.medfm.service import MedFMService
from lib.medfm.volume import Volume, write_label


class MedSAMInferTask(InferTask):
    """Subclasses declare `mode` (named in file names and replies), `infer_type` and `summary`, and `segment`."""

    mode = ""
    infer_type = InferType.OTHERS
    summary = ""

    def __init__(self, service: MedFMService, labels: dict[str, int]):
        super().__init__(type=self.infer_type, labels=labels, dimension=3, description=self.summary,
                         config=InferOptions.info_options(("adapter", "modality"), empty=""))
        self.service = service

    def info(self) -> dict:
        info = super().info()
        info["fm"] = self.service.backend.name
        info["adapters"] = {"active": self.service.store.active(), "versions": self.service.store.versions()}
        return info

    def is_valid(self) -> bool:
        return True

    def segment(self, image_path: str, request: dict) -> tuple[Volume, SegmentationResult]:
        raise NotImplementedError

    def __call__(self, request: dict):
        with plain_errors():
            volume, result = self.segment(request["image"], request)
            fd, out = tempfile.mkstemp(suffix=".nii.gz", prefix=f"medfm-{self.mode}-")
            os.close(fd)
            write_label(result.label, volume, out)
            params = {**self.service.provenance(result, volume), "mode": self.mode}
            if result.uncertainty is not None:
                name = self.service.save_uncertainty(result, volume)
                params["uncertainty"] = {"url": f"/medfm/results/{name}", "measure": "binary entropy (nats)",
                                         "max": round(float(result.uncertainty.max()), 4)}
            return out, params
