"""Shared glue for the MedSAM infer tasks: run the core service, write the label file, report provenance."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.http_errors import plain_errors
from lib.medfm.service import MedFMService
from lib.medfm.volume import write_label


class MedSAMInferTask(InferTask):
    mode = ""

    def __init__(self, service: MedFMService, type: InferType, labels: dict[str, int], description: str,
                 config: dict[str, Any] | None = None):
        super().__init__(type=type, labels=labels, dimension=3, description=description, config=config)
        self.service = service

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["fm"] = self.service.backend.name
        info["adapters"] = {"active": self.service.store.active(), "versions": self.service.store.versions()}
        return info

    def is_valid(self) -> bool:
        return True

    def run(self, path: str, params: dict):
        raise NotImplementedError

    def __call__(self, request: dict):
        with plain_errors():
            volume, result = self.run(request["image"], request)
            fd, out = tempfile.mkstemp(suffix=".nii.gz", prefix=f"medfm-{self.mode}-")
            os.close(fd)
            write_label(result.label, volume, out)
            return out, {**self.service.provenance(result, volume), "mode": self.mode}
