"""Check a train request before MONAI Label spawns its training subprocess.

MONAI Label's POST /train/{model} answers 200 and fails later inside the subprocess, so a typo in a hyperparameter
or an empty datastore would only show up as ERROR in the logs. This route, registered in front of it, refuses
such requests with a 4xx in plain words and otherwise hands the request to MONAI Label's own handler unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute
from monailabel.config import settings
from monailabel.endpoints import train as ml_train
from monailabel.endpoints.user.auth import RBAC, User

ADMIN = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))  # the same role MONAI Label's own route requires


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
                     include_in_schema=False)
    app.router.routes.insert(0, route)
