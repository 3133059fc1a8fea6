"""REST router for the adapter registry, mounted on the MONAI Label server under /medfm (listed in its OpenAPI).

Reads need the user role, held-out marking the annotator role, evaluation the reviewer role, and anything that
changes which adapter is live or what exists (activate, rollback, delete, import) the admin role, exactly as
MONAI Label's own RBAC settings name them. Handlers are plain functions so FastAPI runs them in its thread pool and
a long evaluation never blocks the server's event loop.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from fastapi import APIRouter, BackgroundTasks, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse
from monailabel.endpoints.user.auth import User
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from pydantic import BaseModel, Field

from lib.auth import ADMIN, ANNOTATOR, REVIEWER, USER
from lib.datastore import check_safe_id, heldout_images
from lib.http_errors import plain_errors
from lib.medfm.active.annotation_log import AnnotationLog
from lib.medfm.registry import Registry
from lib.medfm.split import HELD_OUT


class HeldOutRequest(BaseModel):
    images: list[str] = Field(description="datastore image ids that have a final label")
    held_out: bool = Field(True, description="true: evaluate on them and never train on them; false: undo")


def build_router(registry: Registry, datastore: Datastore) -> APIRouter:
    router = APIRouter(prefix="/medfm", tags=["MedFMAdapt adapter registry"])

    @router.get("/adapters", summary="List adapter versions with their metrics and which one is active")
    def list_adapters(user: User = USER):
        return registry.listing()

    @router.get("/adapters/compare", summary="Two versions (or 'base') side by side on the held-out images")
    def compare_adapters(a: str, b: str, mode: str = "interactive", jitter: int = 3, user: User = REVIEWER):
        with plain_errors():
            return registry.compare(a, b, heldout_images(datastore), mode, jitter)

    @router.post("/adapters/rollback", summary="Re-activate the previously active version")
    def rollback(user: User = ADMIN):
        with plain_errors():
            return registry.rollback(user.username)

    @router.post("/adapters/import", summary="Import an adapter archive exported by another site")
    def import_adapter(file: UploadFile = File(...), note: str = Form(""), user: User = ADMIN):
        fd, path = tempfile.mkstemp(suffix=".tar.gz")
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(file.file, out)
            with plain_errors():
                return registry.import_(path, note, user.username)
        finally:
            os.unlink(path)

    @router.get("/adapters/{version}", summary="One version: manifest, metrics, evaluations, activation decision")
    def get_adapter(version: str, user: User = USER):
        with plain_errors():
            return registry.get(version)

    @router.post("/adapters/{version}/activate", summary="Make this version the one inference uses")
    def activate(version: str, user: User = ADMIN):
        with plain_errors():
            return registry.activate(version, user.username)

    @router.delete("/adapters/{version}", summary="Delete a version that is not active")
    def delete(version: str, user: User = ADMIN):
        with plain_errors():
            return registry.delete(version, user.username)

    @router.get("/adapters/{version}/export", summary="Download a version as one .tar.gz archive")
    def export(version: str, background: BackgroundTasks, user: User = USER):
        with plain_errors():
            path = registry.export(version)
        background.add_task(shutil.rmtree, path.parent, True)
        return FileResponse(path, media_type="application/gzip", filename=path.name)

    @router.post("/adapters/{version}/evaluate", summary="Dice and HD95 of a version (or 'base') on held-out images")
    def evaluate(version: str, mode: str = "interactive", jitter: int = 3, user: User = REVIEWER):
        with plain_errors():
            return registry.evaluate(version, heldout_images(datastore), mode, jitter)

    @router.put("/heldout", summary="Mark labelled images as held-out (or undo)")
    def mark_heldout(request: HeldOutRequest, user: User = ANNOTATOR):
        final = DefaultLabelTag.FINAL.value
        for image_id in request.images:
            check_safe_id(image_id, "image id")
            if image_id not in datastore.get_labeled_images(final):
                raise HTTPException(status_code=404, detail=f"image '{image_id}' has no final label in the datastore")
        for image_id in request.images:
            datastore.update_image_info(image_id, {HELD_OUT: request.held_out})
        return {"held_out": [c.image_id for c in heldout_images(datastore)]}

    @router.get("/heldout", summary="The held-out images")
    def list_heldout(user: User = USER):
        return {"held_out": [c.image_id for c in heldout_images(datastore)]}

    @router.get("/sessions", summary="Annotation sessions (labels per hour) and held-out Dice against labels used")
    def sessions(user: User = USER):
        log = AnnotationLog(registry.service.settings.models_dir)
        return {"sessions": log.sessions(), "progress": registry.progress()}

    @router.get("/results/{name}", summary="Download an uncertainty map an infer request produced")
    def result(name: str, user: User = USER):
        with plain_errors():
            path = registry.service.result_path(name)
        return FileResponse(path, media_type="application/gzip", filename=name)

    return router
