"""Sign-in to the site's identity provider with a username and password; the token kept in memory and refreshed.

The server says where to sign in (MONAI Label's GET /auth/: whether auth is on, the client id and the issuer); the
provider's token endpoint comes from the issuer's OpenID Connect discovery document. The password goes to the
provider only (never to the MONAI Label server, never to disk) and is dropped once the first token is in; after
that the provider's refresh token renews the access token shortly before it expires. MONAI Label's own
POST /auth/token would also sign in, but it passes only the password grant on, so renewing through it would mean
keeping the password.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import BadResponse, ConnectionFailed, HTTPFailure, UnsafeProvider

RENEW_BEFORE_S = 30.0  # renew when this little of the access token's life is left (or a tenth of it, if shorter)
LOOPBACK = {"127.0.0.1", "::1", "localhost"}  # plain http is allowed only to this machine


@dataclass(frozen=True)
class Provider:
    """Where and as whom this panel signs in, as the server announced it."""

    issuer: str
    client_id: str
    token_endpoint: str


def _post_form(url: str, fields: dict[str, str], timeout: float) -> dict[str, Any]:
    body = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded",
                                              "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            payload = json.loads(reply.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read().decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            error = {}
        if exc.code in (400, 401) and error.get("error") == "invalid_grant":
            raise HTTPFailure(401, "the identity provider refused the sign-in: wrong username or password, or the "
                                   "session has ended (sign in again)", url) from exc
        raise HTTPFailure(exc.code, str(error.get("error_description") or error or "no explanation given"),
                          url) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionFailed(f"the identity provider cannot be reached: {exc}", url) from exc
    except ValueError as exc:
        raise BadResponse(f"the identity provider's reply is not JSON ({exc})", url) from exc
    if not isinstance(payload, dict) or not payload.get("access_token"):
        raise BadResponse("the identity provider's reply holds no access token", url)
    return payload


def require_https(url: str, what: str) -> None:
    """The password and tokens cross the network in clear over plain http; only this machine may be spoken to so."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK):
        return
    raise UnsafeProvider(f"sign-in refused: the identity provider's {what} {url!r} is not an https address, so your "
                         "password would cross the network unencrypted. Ask the server's admin to name the "
                         "provider by its https URL.", url)


def discover(server_auth: dict[str, Any], timeout: float = 20.0) -> Provider | None:
    """The provider named by the server's GET /auth/ reply, or None when the server has authentication off."""
    if not server_auth.get("enabled"):
        return None
    realm = str(server_auth.get("realm") or "")
    require_https(realm, "issuer")
    url = f"{realm.rstrip('/')}/.well-known/openid-configuration"
    document = _discovery_document(url, timeout)
    issuer = document.get("issuer")
    if not isinstance(issuer, str) or issuer.rstrip("/") != realm.rstrip("/"):
        raise UnsafeProvider(f"sign-in refused: the identity provider at {url} calls itself {issuer!r}, not "
                             f"{realm!r} as the server named it; the password is not sent to a provider the server "
                             "would not accept tokens from.", url)
    endpoint = document.get("token_endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise BadResponse("the identity provider's discovery document names no token endpoint", url)
    require_https(endpoint, "token endpoint")
    return Provider(issuer.rstrip("/"), str(server_auth.get("client_id") or ""), endpoint)


def _discovery_document(url: str, timeout: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            document = json.loads(reply.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConnectionFailed(f"cannot read the identity provider's discovery document: {exc}", url) from exc
    if not isinstance(document, dict):
        raise BadResponse("the identity provider's discovery document is not a JSON object", url)
    return document


class TokenKeeper:
    """The signed-in user's tokens, in memory only; `bearer()` gives an access token that is not about to expire."""

    def __init__(self, provider: Provider, clock: Callable[[], float] = time.monotonic, timeout: float = 20.0):
        self.provider = provider
        self.clock = clock
        self.timeout = timeout
        self._access = ""
        self._refresh = ""
        self._expires_at = 0.0
        self._lifetime = 0.0
        # Panel jobs run on their own threads: two renewing at once would redeem one refresh token twice, and a
        # provider rotating refresh tokens then revokes the whole grant (the user is signed out mid-job).
        self._lock = threading.Lock()

    def sign_in(self, username: str, password: str) -> None:
        reply = _post_form(self.provider.token_endpoint, {
            "grant_type": "password", "client_id": self.provider.client_id, "username": username,
            "password": password}, self.timeout)
        with self._lock:
            self._take(reply)

    def bearer(self) -> str:
        """The access token, renewed first if about to expire; one thread renews, the others wait and reuse it."""
        with self._lock:
            if not self._access:
                raise ValueError("Sign in first.")
            left = self._expires_at - self.clock()
            if left <= min(RENEW_BEFORE_S, self._lifetime / 10) and self._refresh:
                self._take(_post_form(self.provider.token_endpoint, {
                    "grant_type": "refresh_token", "client_id": self.provider.client_id,
                    "refresh_token": self._refresh}, self.timeout))
            return self._access

    def sign_out(self) -> None:
        with self._lock:
            self._access = self._refresh = ""
            self._expires_at = self._lifetime = 0.0

    def _take(self, reply: dict[str, Any]) -> None:
        self._access = str(reply["access_token"])
        self._refresh = str(reply.get("refresh_token") or self._refresh)
        self._lifetime = float(reply.get("expires_in") or 300)
        self._expires_at = self.clock() + self._lifetime
