"""The panel's sign-in (sign_in.py) without a server: which providers it gives a password to, and one renewal at a
time when panel jobs ask for the token on several threads. A stand-in provider on 127.0.0.1 answers."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from MedFMAdapt.MedFMAdaptLib import sign_in
from MedFMAdapt.MedFMAdaptLib.errors import UnsafeProvider


class StandIn:
    """What the stand-in provider serves: its discovery document, and token replies counted by grant type."""

    def __init__(self) -> None:
        self.url = ""
        self.discovery: dict = {}
        self.grants: list[str] = []
        self.refresh_delay_s = 0.0


@pytest.fixture
def idp() -> Iterator[StandIn]:
    stand_in = StandIn()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._json(stand_in.discovery)

        def do_POST(self) -> None:  # noqa: N802
            fields = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            grant = fields["grant_type"][0]
            stand_in.grants.append(grant)
            if grant == "refresh_token":
                time.sleep(stand_in.refresh_delay_s)  # a slow provider: the other thread arrives meanwhile
            n = len(stand_in.grants)
            self._json({"access_token": f"at{n}", "refresh_token": f"rt{n}", "expires_in": 300})

        def _json(self, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stand_in.url = f"http://127.0.0.1:{server.server_port}"
    stand_in.discovery = {"issuer": stand_in.url, "token_endpoint": f"{stand_in.url}/token"}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield stand_in
    server.shutdown()
    server.server_close()


def named(realm: str) -> dict:
    return {"enabled": True, "realm": realm, "client_id": "monailabel-app"}


def test_two_threads_renew_once(idp):
    """Rotating refresh tokens: redeeming one twice revokes the grant, so only one thread may renew."""
    now = [0.0]
    keeper = sign_in.TokenKeeper(sign_in.discover(named(idp.url)), clock=lambda: now[0])
    keeper.sign_in("anna", "a-pass")
    now[0] += 290  # 10 s of life left: both threads find it due
    idp.refresh_delay_s = 0.5
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(keeper.bearer())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert idp.grants == ["password", "refresh_token"]
    assert tokens == ["at2", "at2"]


@pytest.mark.parametrize("realm", ["http://sso.hospital.example/realms/radiology", "ftp://sso.hospital.example",
                                   "http://10.0.0.5:8080/realms/r", ""])
def test_plain_http_to_another_machine_is_refused_before_any_request(realm):
    with pytest.raises(UnsafeProvider, match="not an https address"):
        sign_in.discover(named(realm))


def test_loopback_may_be_plain_http(idp):
    provider = sign_in.discover(named(f"{idp.url}/"))  # a trailing slash is the same issuer
    assert provider.issuer == idp.url and provider.token_endpoint == f"{idp.url}/token"
    assert sign_in.require_https("http://localhost:8080/realms/r", "issuer") is None
    assert sign_in.require_https("http://[::1]:8080/realms/r", "issuer") is None


def test_a_token_endpoint_over_plain_http_elsewhere_is_refused(idp):
    idp.discovery["token_endpoint"] = "http://sso.hospital.example/token"
    with pytest.raises(UnsafeProvider, match="token endpoint"):
        sign_in.discover(named(idp.url))
    assert idp.grants == []


def test_a_provider_calling_itself_another_issuer_is_refused(idp):
    idp.discovery["issuer"] = "https://attacker.example"
    with pytest.raises(UnsafeProvider, match="calls itself"):
        sign_in.discover(named(idp.url))
    idp.discovery["issuer"] = f"{idp.url}/"  # the provider's spelling with a slash is the same issuer
    assert sign_in.discover(named(idp.url)).issuer == idp.url
