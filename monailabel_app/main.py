"""MedFMAdapt's MONAI Label app: LiteMedSAM inference (interactive and automatic) and PEFT adaptation."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.activelearning.first import First

from lib.activelearning.seeded_random import SeededRandom
from lib.configs.medsam import MedSAMConfig
from lib.datastore import ValidatingDatastore, training_images, unlabelled_pool
from lib.http_errors import plain_errors
from lib.medfm.active.annotation_log import AnnotationLog
from lib.medfm.adaptation import AdaptConfig
from lib.medfm.adaptation.job import label_tokens
from lib.medfm.adaptation.pretrain import PretrainConfig
from lib.medfm.registry import Registry

logger = logging.getLogger(__name__)


class MedFMAdaptApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        # Kept on the instance, not in a module: MONAI Label unloads `lib.*` when it reloads the app.
        self._saving_tag: ContextVar[str | None] = ContextVar("medfm_saving_tag", default=None)
        self.medsam = MedSAMConfig()
        self.medsam.init("medsam", os.path.join(app_dir, "model"), conf, None, app_dir=app_dir)
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="MedFMAdapt",
                         description="Adapt the LiteMedSAM foundation model to this site's scans with PEFT",
                         version="0.1.0", labels=self.medsam.labels)
        if "monailabel.app" in sys.modules:  # inside the server, not the training subprocess
            from monailabel.app import app as fastapi_app

            from lib.auth_setup import install_auth
            from lib.preflight import install_nonblocking_infer, install_train_preflight
            from lib.registry_api import build_router
            from lib.route_guards import install_route_guards

            install_auth(fastapi_app)  # with MONAI_LABEL_AUTH_ENABLE: tokens checked by the OIDC provider's JWKS
            install_train_preflight(fastapi_app, self.check_train_request)
            install_nonblocking_infer(fastapi_app)
            install_route_guards(fastapi_app)
            if not any(getattr(r, "path", "").startswith("/medfm/") for r in fastapi_app.router.routes):
                fastapi_app.include_router(build_router(Registry(self.medsam.service), self.datastore()))
                fastapi_app.openapi_schema = None  # regenerate so /openapi.json lists the registry

    def init_datastore(self):
        from monailabel.config import settings

        if self.studies.startswith(("http://", "https://")):
            if settings.MONAI_LABEL_DATASTORE.lower() not in ("", "dicomweb"):
                return super().init_remote_datastore()  # XNAT, DSA: MONAI Label's own, unchecked
            from lib.pacs_datastore import open_pacs

            self.studies = self.studies.rstrip("/").strip()
            return open_pacs(self.studies, self.medsam.settings.models_dir, self.medsam.labels)
        return ValidatingDatastore(self.studies, extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
                                   auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                                   read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def init_infers(self):
        return self.medsam.infer()

    def init_trainers(self):
        return {"medsam_adapt": self.medsam.trainer(), "medsam_pretrain": self.medsam.pretrainer()}

    def init_strategies(self):
        return {"random": SeededRandom(), "first": First(), **self.medsam.strategy()}

    def init_scoring_methods(self):
        return self.medsam.scoring_method()

    def on_save_label(self, image_id, label_id):
        """Keep the annotation record a client sent with the label (`annotation_seconds`, `strategy`, `session`)."""
        info = self._saved_label_info(image_id, label_id)
        seconds = info.get("annotation_seconds")
        try:
            seconds = float(seconds) if seconds is not None else None
        except (TypeError, ValueError):
            seconds = None
        entry = AnnotationLog(self.medsam.settings.models_dir).record(
            image_id, str(info.get("session") or "default"), info.get("strategy"), seconds,
            self.medsam.service.store.active(), info.get("user"))
        super().on_save_label(image_id, label_id)
        return {"annotation": entry}

    @contextmanager
    def saving_label(self, tag: str) -> Iterator[None]:
        """Said by the save route around MONAI Label's save: its on_save_label hook is given only the ids."""
        token = self._saving_tag.set(tag)
        try:
            yield
        finally:
            self._saving_tag.reset(token)

    def _saved_label_info(self, image_id: str, label_id: str) -> dict:
        """The info of the label just saved: its tag comes from the save route (`saving_label`); the newest label
        of the image is only the fallback for a save that did not come through it."""
        datastore = self.datastore()
        tag = self._saving_tag.get()
        if tag is not None:
            return datastore.get_label_info(label_id, tag) or {}
        tags = datastore.get_labels_by_image_id(image_id)
        infos = [datastore.get_label_info(label, tag) for tag, label in tags.items()]
        return max(infos, key=lambda i: i.get("ts", 0), default={})

    def next_sample(self, request):
        """Unknown strategies get a 404 in words (MONAI Label raises a bare 500); default strategy: hybrid."""
        strategy = request.get("strategy") or "hybrid"
        if strategy not in self._strategies:
            raise HTTPException(status_code=404, detail=f"unknown strategy '{strategy}'; this server offers "
                                                        f"{sorted(self._strategies)}")
        return super().next_sample({**request, "strategy": strategy})

    def info(self):
        meta = super().info()
        meta["fm"] = self.medsam.service.fm_info()
        return meta

    # ---- MONAI Label 0.8.5 quirks handled here ------------------------------------------------------------
    def infer(self, request, datastore=None):
        """Unknown models and images get a 404 in words (MONAI Label gives a bare 500), and an image must be a
        datastore id or a file the infer endpoint itself just uploaded: never an arbitrary server path."""
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(status_code=404, detail=f"unknown model '{model}'; this server offers "
                                                        f"{sorted(self._infers)}")
        datastore = datastore or self.datastore()
        image = request.get("image")
        uri = datastore.get_image_uri(image) if isinstance(image, str) else ""
        if uri and os.path.exists(uri):
            request = {**request, "image": uri, "save_label": request.get("save_label", False)}
        elif not (isinstance(image, str) and _is_upload(image)):
            raise HTTPException(status_code=404, detail=f"image '{image}' is not in the datastore")
        return super().infer(request, datastore)

    def batch_infer(self, request, datastore=None):
        """Batch inference divides by the GPU count unless multi-GPU is off; on a CPU host it must be."""
        if not torch.cuda.is_available():
            request = {**request, "multi_gpu": False}
        return super().batch_infer(request, datastore)

    def check_train_request(self, model: str, params: dict) -> None:
        if model not in self._trainers:
            raise HTTPException(status_code=404, detail=f"unknown trainer '{model}'; this server offers "
                                                        f"{sorted(self._trainers)}")
        service = self.medsam.service
        if model == "medsam_pretrain":
            with plain_errors():
                pre = PretrainConfig.from_request(params)
            if not unlabelled_pool(self.datastore(), pre.images):
                raise HTTPException(status_code=409, detail="there are no images to pretrain on (held-out images "
                                                            "are never used): add scans to the datastore first")
            return
        with plain_errors():
            cfg = AdaptConfig.from_request(params)
            label_tokens(service.settings.labels, cfg.labels, service.backend.max_labels)
            if cfg.parent:
                service.store.check_id(cfg.parent)
        if not training_images(self.datastore(), cfg.images):
            raise HTTPException(status_code=409, detail="there are no labelled images to adapt on (held-out images "
                                                        "are never trained on): submit a final label first")


def _is_upload(path: str) -> bool:
    """The infer endpoint stores an uploaded file as a fresh temporary file; only those paths are accepted."""
    real = os.path.realpath(path)
    tmp = os.path.realpath(tempfile.gettempdir())
    return os.path.isfile(real) and os.path.dirname(real) == tmp and os.path.basename(real).startswith("tmp")
