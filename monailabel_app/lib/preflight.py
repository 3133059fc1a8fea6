"""Routes registered in front of two of MONAI Label's own, each handing the request to MONAI Label's handler.

- POST /train/{model} answers 200 and fails later inside the training subprocess, so a typo in a hyperparameter
  or an empty datastore would only show up as ERROR in the logs: ours refuses such requests with a 4xx first.
- POST /infer/{model} is an `async def` that runs inference synchronously, so while one volume is segmented the
  server answers nothing else (GET /info/ waited 32 s behind an inference). Ours is a plain `def`, which FastAPI
  runs in its thread pool, so the event loop stays free; the work done is MONAI Label's own `run_inference`.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import BackgroundTasks, FastAPI, File, Form, HTTPException, UploadFile
from fastapi.routing import APIRoute
from monailabel.config import settings
from monailabel.endpoints import infer as ml_infer
from monailabel.endpoints import train as ml_train
from monailabel.endpoints.user.auth import User

from lib.auth import ADMIN, USER
from lib.route_guards import json_field


def install_train_preflight(app: FastAPI, validate: Callable[[str, dict], None]) -> None:
    path = f"{settings.MONAI_LABEL_API_STR}/train/{{model}}"
    if any(getattr(r, "name", "") == "medfm_train_preflight" for r in app.router.routes):
        return

    async def medfm_train_preflight(model: str, params: dict | None = None, run_sync: bool | None = False,
                                    enqueue: bool | None = False,
                                    user: User = ADMIN):
        validate(model, params or {})
        return ml_train.run_model(model, params, run_sync, enqueue)

    route = APIRoute(path, medfm_train_preflight, methods=["POST"], name="medfm_train_preflight",
                     include_in_schema=False, dependency_overrides_provider=app)
    app.router.routes.insert(0, route)


def install_nonblocking_infer(app: FastAPI) -> None:
    path = f"{settings.MONAI_LABEL_API_STR}/infer/{{model}}"
    if any(getattr(r, "name", "") == "medfm_infer_in_thread" for r in app.router.routes):
        return

    def medfm_infer_in_thread(background_tasks: BackgroundTasks, model: str, image: str = "", session_id: str = "",
                              params: str = Form("{}"), file: UploadFile = File(None),
                              label: UploadFile = File(None), output: ml_infer.ResultType | None = None,
                              user: User = USER):
        if not (image or file or session_id):  # MONAI Label answers this with a 500
            raise HTTPException(status_code=400, detail="name an image (a datastore id), upload a file, or give a "
                                                        "session_id")
        json_field(params, "params")
        return ml_infer.run_inference(background_tasks, model, image, session_id, params, file, label, output)

    route = APIRoute(path, medfm_infer_in_thread, methods=["POST"], name="medfm_infer_in_thread",
                     include_in_schema=False, dependency_overrides_provider=app)
    app.router.routes.insert(0, route)
