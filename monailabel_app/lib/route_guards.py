"""MONAI Label 0.8.5 routes this app serves, answering bad input with a 4xx in words instead of a 500.

An API fuzzer (schemathesis, `Testing/test_fuzz_api.py`) found these 500s; each guard is a route registered in front
of MONAI Label's own, with its path, parameters and role, that checks what MONAI Label does not and then calls
MONAI Label's own handler; the typed "not found" and "invalid input" exceptions it raises become 404 and 400.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

from fastapi import BackgroundTasks, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.routing import APIRoute
from monailabel.config import settings
from monailabel.endpoints import datastore as ml_datastore
from monailabel.endpoints import logs as ml_logs
from monailabel.endpoints import proxy as ml_proxy
from monailabel.endpoints import scoring as ml_scoring
from monailabel.endpoints import session as ml_session
from monailabel.endpoints.user.auth import User
from monailabel.interfaces.exception import (
    ImageNotFoundException,
    LabelNotFoundException,
    MONAILabelError,
    MONAILabelException,
)
from monailabel.interfaces.utils.app import app_instance

from lib.auth import ADMIN, ANNOTATOR, USER


@contextmanager
def monailabel_errors() -> Iterator[None]:
    """MONAI Label's typed "not found" and "invalid input" exceptions as the 404 and 400 they are."""
    try:
        yield
    except (ImageNotFoundException, LabelNotFoundException) as err:
        raise HTTPException(status_code=404, detail=err.msg) from err
    except MONAILabelException as err:
        if err.error != MONAILabelError.INVALID_INPUT:
            raise
        raise HTTPException(status_code=400, detail=err.msg) from err


def json_field(value: str, name: str) -> dict:
    """A request's JSON form field (`params`, `info`) as a dict, or a 400 saying what is wrong with it."""
    try:
        parsed = json.loads(value) if value else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HTTPException(status_code=400, detail=f"'{name}' must be a JSON object: {err}") from err
    if not isinstance(parsed, dict):
        raise HTTPException(status_code=400, detail=f"'{name}' must be a JSON object, got {type(parsed).__name__}")
    return parsed


# Info keys the server sets (MONAI Label's datastore: when and by whom, the file's name and checksum): a client
# sending them could make its own label the newest, or another user's, in the annotation log.
SERVER_KEYS = ("ts", "user", "name", "checksum")


def client_fields(fields: dict, keep: tuple[str, ...] = ()) -> dict:
    """`fields` without the keys the server sets (except those in `keep`)."""
    return {k: v for k, v in fields.items() if k not in SERVER_KEYS or k in keep}


# The most log lines one GET /logs/ returns: a larger `lines` overflowed MONAI Label's log reader (a 500).
MOST_LOG_LINES = 1_000_000


async def get_logs(lines: int | None = 300, html: bool | None = True, text: bool | None = False,
                   refresh: int | None = 0, user: User = ADMIN):
    if lines is None:
        lines = 300  # MONAI Label's default; it compared None with 0 (a 500)
    if lines > MOST_LOG_LINES:
        raise HTTPException(status_code=400, detail=f"lines must be at most {MOST_LOG_LINES} (0 or less = the "
                                                    f"whole log), got {lines}")
    return await ml_logs.api_get_logs(lines, html, text, refresh, user)


async def gpu_info(user: User = ADMIN):
    if shutil.which("nvidia-smi") is None:
        raise HTTPException(status_code=404, detail="this server has no NVIDIA GPU tools (nvidia-smi not found)")
    return await ml_logs.gpu_info(user)


def no_whole_slide(model: str, user: User = USER):
    raise HTTPException(status_code=404, detail="whole-slide (pathology) inference is not offered by this "
                                                "radiology app; use POST /infer/{model} with a 3D image")


def no_model_upload(model: str, user: User = ANNOTATOR):
    raise HTTPException(status_code=403, detail="the foundation model's weights are read-only on this server "
                                                "(checked against their SHA-256); adapters come in through "
                                                "POST /medfm/adapters/import")


def run_scoring(method: str, params: dict | None = None, run_sync: bool | None = False, user: User = ANNOTATOR):
    offered = app_instance().info().get("scoring", {})
    if method not in offered:  # MONAI Label answers an unknown method run_sync with a 500
        raise HTTPException(status_code=404, detail=f"unknown scoring method '{method}'; this server offers "
                                                    f"{sorted(offered)}")
    with monailabel_errors():
        return ml_scoring.run_method(method, params, run_sync)


def get_session(session_id: str, update_ts: bool = False, image: bool = False, user: User = USER):
    sessions = app_instance().sessions()
    session = sessions.get_session(session_id) if sessions is not None else None
    if image and session is not None and not os.path.isfile(session.image):
        raise HTTPException(status_code=409, detail=f"session {session_id} holds a folder of files, not one image "
                                                    "file, so it cannot be downloaded as one")
    return ml_session.get_session(session_id, update_ts, image)


def create_session(background_tasks: BackgroundTasks, uncompress: bool = False, expiry: int = 0,
                   files: list[UploadFile] = File(...), user: User = USER):
    try:
        return ml_session.create_session(background_tasks, uncompress, expiry, files)
    except shutil.ReadError as err:
        raise HTTPException(status_code=400, detail=f"uncompress was asked but the upload is not an archive "
                                                    f"this server can unpack: {err}") from err


def add_image(background_tasks: BackgroundTasks, image: str | None = None, params: str = Form("{}"),
              file: UploadFile = File(...), user: User = ANNOTATOR):
    fields = client_fields(json_field(params, "params"))
    with monailabel_errors():
        return ml_datastore.add_image(background_tasks, image, json.dumps(fields), file, user.username)


def save_label(background_tasks: BackgroundTasks, image: str, params: str = Form("{}"),
               tag: str = ml_datastore.DefaultLabelTag.FINAL.value, label: UploadFile = File(...),
               user: User = ANNOTATOR):
    fields = json_field(params, "params")
    if settings.MONAI_LABEL_AUTH_ENABLE:  # who saved a label is the signed-in user, not what the client says
        fields = {**client_fields(fields), "user": user.username}
    else:  # one machine, no sign-in: a client-named user is all there is, kept as before
        fields = client_fields(fields, keep=("user",))
    # MONAI Label's on_save_label hook gets only the ids; the app is told the tag (MedFMAdaptApp.saving_label).
    saving = getattr(app_instance(), "saving_label", None)
    with (saving(tag or ml_datastore.DefaultLabelTag.FINAL.value) if saving else nullcontext()), monailabel_errors():
        return ml_datastore.save_label(background_tasks, image, json.dumps(fields), tag, label, user.username)


def update_image_info(image: str, info: str = Form("{}"), user: User = ANNOTATOR):
    fields = client_fields(json_field(info, "info"))
    with monailabel_errors():
        return ml_datastore.update_image_info(image, json.dumps(fields), user.username)


def update_label_info(label: str, tag: str, info: str = Form("{}"), user: User = ANNOTATOR):
    fields = client_fields(json_field(info, "info"))
    with monailabel_errors():
        return ml_datastore.update_label_info(label, tag, json.dumps(fields), user.username)


def update_label_info_old(label: str, tag: str, params: str = Form("{}"), user: User = ANNOTATOR):
    """MONAI Label's deprecated PUT /datastore/updatelabelinfo, the same with the field named `params`."""
    return update_label_info(label, tag, params, user)


# The user's credentials for this server: MONAI Label's proxy copies every request header on a POST, so without
# this the PACS (another party) would receive a bearer token good for this server, or its session cookie.
CREDENTIAL_HEADERS = {b"authorization", b"cookie"}


def without_credentials(request: Request) -> Request:
    """The same request (same body stream) without this server's credential headers, to hand on to the PACS."""
    headers = [(k, v) for k, v in request.scope["headers"] if k.lower() not in CREDENTIAL_HEADERS]
    return Request({**request.scope, "headers": headers}, request.receive)


def dicom_proxy(op: str, method: str) -> Callable:
    """MONAI Label's DICOMweb proxy, which on a folder datastore tried to fetch a file path as a URL (a 500).

    A POST (STOW) writes into the PACS, so it needs the annotator role, as adding an image to the datastore does."""

    async def proxy(request: Request, path: str, user: User = USER):
        if not settings.MONAI_LABEL_STUDIES.startswith(("http://", "https://")):
            raise HTTPException(status_code=404, detail="this server's datastore is a folder, not a PACS: there is "
                                                        "no DICOMweb server to proxy to")
        return await ml_proxy.proxy_dicom(without_credentials(request), op, path)

    async def proxy_write(request: Request, path: str, user: User = ANNOTATOR):
        return await proxy(request, path, user)

    handler = proxy_write if method == "POST" else proxy
    handler.__name__ = f"dicom_proxy_{method.lower()}_{op or 'any'}"
    return handler


# The generic /proxy/dicom/{path} first: each guard is inserted in front of the ones before it.
PROXY_GUARDS = [(method, f"/proxy/dicom{'/' + op if op else ''}/{{path:path}}", dicom_proxy(op, method))
                for op in ("", "wado", "qido", "stow") for method in ("GET", "POST")]

GUARDS: list[tuple[str, str, Callable]] = [
    *PROXY_GUARDS,
    ("GET", "/logs/", get_logs),
    ("GET", "/logs/gpu", gpu_info),
    ("POST", "/infer/wsi_v2/{model}", no_whole_slide),
    ("POST", "/infer/wsi/{model}", no_whole_slide),
    ("PUT", "/model/{model}", no_model_upload),
    ("DELETE", "/model/{model}", no_model_upload),
    ("POST", "/scoring/{method}", run_scoring),
    ("GET", "/session/{session_id}", get_session),
    ("PUT", "/session/", create_session),
    ("PUT", "/datastore/image", add_image),
    ("PUT", "/datastore/", add_image),
    ("PUT", "/datastore/label", save_label),
    ("PUT", "/datastore/image/info", update_image_info),
    ("PUT", "/datastore/label/info", update_label_info),
    ("PUT", "/datastore/updatelabelinfo", update_label_info_old),
]


def install_route_guards(app: FastAPI) -> None:
    if any(getattr(r, "name", "").startswith("medfm_guard_") for r in app.router.routes):
        return
    for method, path, handler in GUARDS:
        app.router.routes.insert(0, APIRoute(path, handler, methods=[method], name=f"medfm_guard_{handler.__name__}",
                                             include_in_schema=False,
                                             dependency_overrides_provider=app))
