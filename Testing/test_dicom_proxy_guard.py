"""The DICOMweb proxy guard (lib/route_guards.py) in front of MONAI Label's proxy, with a stand-in PACS on a local
port that records what it receives: this server's credentials must not reach the PACS."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi import Request
from monailabel.config import settings
from monailabel.endpoints.user.auth import User

from lib.auth import ANNOTATOR, USER
from lib.route_guards import dicom_proxy, without_credentials

SECRET = b"Bearer token-for-medfmadapt"


@pytest.fixture
def pacs(monkeypatch) -> Iterator[list[dict[str, str]]]:
    """A PACS at MONAI_LABEL_STUDIES answering every POST with 200; the list gets each request's headers."""
    received: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(settings, "MONAI_LABEL_STUDIES", f"http://127.0.0.1:{server.server_port}/dicom-web")
    monkeypatch.setattr(settings, "MONAI_LABEL_DICOMWEB_USERNAME", "")
    yield received
    server.shutdown()
    server.server_close()


def incoming(body: bytes = b"DICM") -> Request:
    """A POST as the client sent it to this server: its bearer token and cookie, plus headers the PACS needs."""
    headers = [(b"authorization", SECRET), (b"cookie", b"session=abc"),
               (b"content-type", b"application/dicom"), (b"content-length", str(len(body)).encode())]
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/proxy/dicom/stow/studies", "headers": headers,
             "query_string": b""}
    return Request(scope, receive)


def test_credentials_are_dropped_and_the_rest_kept():
    request = without_credentials(incoming())
    assert "authorization" not in request.headers and "cookie" not in request.headers
    assert request.headers["content-type"] == "application/dicom"


def test_a_stow_through_the_proxy_reaches_the_pacs_without_the_users_token(pacs):
    handler = dicom_proxy("stow", "POST")
    response = asyncio.run(handler(incoming(), "studies", User(username="anna", roles=[])))
    assert response.status_code == 200
    assert len(pacs) == 1
    assert "authorization" not in pacs[0] and "cookie" not in pacs[0]
    assert pacs[0]["content-type"] == "application/dicom"


def test_a_post_needs_the_annotator_role_a_get_the_user_role():
    """A POST writes into the PACS (STOW), so it needs what PUT /datastore/image needs."""
    assert inspect.signature(dicom_proxy("stow", "POST")).parameters["user"].default == ANNOTATOR
    assert inspect.signature(dicom_proxy("wado", "GET")).parameters["user"].default == USER
