"""lib/oidc.py's token checks against a provider stand-in: a local HTTP server giving a discovery document and a key
set, and tokens signed here with a key made here, so each case states exactly what the provider publishes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from lib.oidc import AuthSettings, ProviderUnreachable, TokenVerifier

KID = "k1"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Publisher:
    """What the stand-in provider answers: `documents[path]` as JSON (any JSON, so a broken one can be served)."""

    def __init__(self) -> None:
        self.documents: dict[str, object] = {}
        self.url = ""


@pytest.fixture
def provider() -> Iterator[Publisher]:
    published = Publisher()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path not in published.documents:
                self.send_error(404)
                return
            body = json.dumps(published.documents[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    published.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield published
    server.shutdown()
    server.server_close()


def publish(provider: Publisher, issuer: str, discovery: object | None = None) -> None:
    """A provider at `provider.url` whose discovery document names `issuer` (as written) and its key set."""
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key())), "kid": KID, "alg": "RS256",
           "use": "sig"}
    provider.documents["/keys"] = {"keys": [jwk]}
    provider.documents["/.well-known/openid-configuration"] = discovery if discovery is not None else {
        "issuer": issuer, "jwks_uri": f"{provider.url}/keys"}


def token(issuer: str, **claims) -> str:
    now = int(time.time())
    payload = {"iss": issuer, "aud": "monailabel-app", "sub": "u1", "iat": now, "exp": now + 300,
               "preferred_username": "anna", "realm_access": {"roles": ["monailabel-user"]}, **claims}
    return jwt.encode(payload, KEY, algorithm="RS256", headers={"kid": KID})


def verifier(issuer: str) -> TokenVerifier:
    return TokenVerifier(AuthSettings(issuer=issuer, audience="monailabel-app", timeout_s=5))


@pytest.mark.parametrize("configured", ["{url}/", "{url}"])
def test_issuer_with_a_trailing_slash_is_accepted_as_the_provider_writes_it(provider, configured):
    """Auth0 and Entra v1 (`https://sts.windows.net/<tenant>/`) end their issuer with a slash; tokens carry it."""
    issuer = f"{provider.url}/"
    publish(provider, issuer)
    check = verifier(configured.format(url=provider.url))
    assert check.identity(token(issuer)).username == "anna"
    with pytest.raises(jwt.InvalidIssuerError):
        check.verify(token(provider.url))  # without the slash it is not the provider's issuer


def test_issuer_without_a_slash_still_passes(provider):
    publish(provider, provider.url)
    assert verifier(f"{provider.url}/").identity(token(provider.url)).roles == ["monailabel-user"]


def test_discovery_naming_another_issuer_is_refused(provider):
    publish(provider, "https://elsewhere.example/")
    with pytest.raises(ProviderUnreachable, match="names issuer"):
        verifier(provider.url).verify(token(provider.url))


@pytest.mark.parametrize("email,name", [(["a@x", "b@x"], {"given": "Anna"}), (42, None), (None, True)])
def test_email_or_name_of_another_type_is_dropped(provider, email, name):
    """A provider mapping `email` to a list (or `name` to an object) gave a 500 from MONAI Label's User model."""
    from monailabel.endpoints.user.auth import User

    publish(provider, provider.url)
    identity = verifier(provider.url).identity(token(provider.url, email=email, name=name))
    assert identity.email is None and identity.name is None and identity.username == "anna"
    User(username=identity.username, email=identity.email, name=identity.name, roles=identity.roles)
    kept = verifier(provider.url).identity(token(provider.url, email="anna@site.example", name="Anna"))
    assert (kept.email, kept.name) == ("anna@site.example", "Anna")


@pytest.mark.parametrize("document", [["not", "an", "object"], {"issuer": "{url}"}, {"issuer": "{url}", "jwks_uri": 7},
                                      "just a string"])
def test_a_broken_discovery_document_is_provider_unreachable(provider, document):
    """503 (the server cannot tell), not a KeyError's 500."""
    if isinstance(document, dict):
        document = {k: v.format(url=provider.url) if isinstance(v, str) else v for k, v in document.items()}
    publish(provider, provider.url, discovery=document)
    with pytest.raises(ProviderUnreachable):
        verifier(provider.url).verify(token(provider.url))
