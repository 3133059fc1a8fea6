"""Bearer tokens checked against a standard OpenID Connect provider: signature by the provider's JWKS, issuer,
audience and expiry, then the user and roles read from the claims.

MONAI Label 0.8.5 checks tokens with a Keycloak-only `public_key` read from the realm document and ignores the
audience, so a site whose provider speaks plain OpenID Connect could not use it. This module needs only what every
provider publishes: `{issuer}/.well-known/openid-configuration` and its `jwks_uri`. Keycloak is one such provider:
its realm URI is its issuer, and its `realm_access.roles` claim is the default roles path.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import jwt
import requests

# Asymmetric algorithms only: an HMAC algorithm would let anyone holding the public key forge tokens, and "none"
# is no signature at all.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class ProviderUnreachable(Exception):
    """The provider's discovery document or keys could not be fetched: the server cannot tell, rather than no."""


@dataclass(frozen=True)
class AuthSettings:
    """MONAI Label's own `MONAI_LABEL_AUTH_*` names where it has one, plus the JWKS ones it lacks."""

    issuer: str  # as configured; the discovery document's spelling (trailing slash or not) is what tokens carry
    audience: str
    roles_claim: str = "realm_access#roles"
    username_claim: str = "preferred_username"
    email_claim: str = "email"
    name_claim: str = "name"
    jwks_uri: str = ""  # empty: the `jwks_uri` of the issuer's discovery document
    jwks_cooldown_s: float = 30.0  # an unknown key id refetches the key set at most this often
    leeway_s: float = 30.0  # clock skew allowed on exp/iat/nbf
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, settings: Any, env: dict[str, str] | None = None) -> AuthSettings:
        """`settings` is MONAI Label's `monailabel.config.settings` (read from the same environment)."""
        env = os.environ if env is None else env
        return cls(issuer=settings.MONAI_LABEL_AUTH_REALM_URI,
                   audience=env.get("MONAI_LABEL_AUTH_AUDIENCE") or settings.MONAI_LABEL_AUTH_CLIENT_ID,
                   roles_claim=settings.MONAI_LABEL_AUTH_TOKEN_ROLES,
                   username_claim=settings.MONAI_LABEL_AUTH_TOKEN_USERNAME,
                   email_claim=settings.MONAI_LABEL_AUTH_TOKEN_EMAIL, name_claim=settings.MONAI_LABEL_AUTH_TOKEN_NAME,
                   jwks_uri=env.get("MONAI_LABEL_AUTH_JWKS_URI", ""),
                   jwks_cooldown_s=float(env.get("MONAI_LABEL_AUTH_JWKS_COOLDOWN", 30)),
                   leeway_s=float(env.get("MONAI_LABEL_AUTH_LEEWAY", 30)),
                   timeout_s=float(settings.MONAI_LABEL_AUTH_TIMEOUT))


@dataclass(frozen=True)
class Identity:
    username: str
    email: str | None
    name: str | None
    roles: list[str]


def claim_at(payload: dict, path: str) -> Any:
    """The claim at a `#`-separated path (MONAI Label's convention: `realm_access#roles`), or None."""
    value: Any = payload
    for part in path.split("#"):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class TokenVerifier:
    """Verifies access tokens; the provider's key set is fetched once and again when a token names an unknown key
    id (the provider rotated its keys), at most once per cooldown."""

    def __init__(self, settings: AuthSettings):
        self.settings = settings
        self._jwks: jwt.PyJWKClient | None = None
        # What `iss` must equal: the discovery document's issuer once read (Auth0 and Entra v1 end it with `/`),
        # else the configured one as written.
        self._issuer = settings.issuer
        self._lock = threading.Lock()

    def _client(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._jwks is None:
                uri = self.settings.jwks_uri or self._discover_jwks_uri()
                self._jwks = jwt.PyJWKClient(uri, cache_jwk_set=True, lifespan=300, timeout=self.settings.timeout_s,
                                             cooldown_duration=self.settings.jwks_cooldown_s)
            return self._jwks

    def _discover_jwks_uri(self) -> str:
        """The key set URL from the discovery document, keeping the document's issuer exactly as written."""
        url = f"{self.settings.issuer.rstrip('/')}/.well-known/openid-configuration"
        document = self._discovery_document(url)
        issuer = document.get("issuer")
        if not isinstance(issuer, str) or issuer.rstrip("/") != self.settings.issuer.rstrip("/"):
            raise ProviderUnreachable(f"{url} names issuer {issuer!r}, not {self.settings.issuer!r}")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise ProviderUnreachable(f"{url} names no jwks_uri: the provider's keys cannot be found")
        self._issuer = issuer
        return jwks_uri

    def _discovery_document(self, url: str) -> dict:
        """The provider's discovery document; a provider answering anything but a JSON object cannot be used."""
        try:
            response = requests.get(url, timeout=self.settings.timeout_s)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as err:
            raise ProviderUnreachable(f"cannot read the provider's discovery document {url}: {err}") from err
        if not isinstance(document, dict):
            raise ProviderUnreachable(f"{url} is not a JSON object but {type(document).__name__}")
        return document

    def verify(self, token: str) -> dict:
        """The token's claims, or `jwt.InvalidTokenError` (wrong signature, key, issuer, audience, expired...)."""
        header = jwt.get_unverified_header(token)
        if header.get("alg") not in ALGORITHMS:
            raise jwt.InvalidAlgorithmError(f"algorithm {header.get('alg')!r} is not accepted")
        try:
            key = self._client().get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as err:
            raise ProviderUnreachable(str(err)) from err
        except jwt.PyJWKClientError as err:
            raise jwt.InvalidTokenError(str(err)) from err
        return jwt.decode(token, key, algorithms=list(ALGORITHMS), audience=self.settings.audience,
                          issuer=self._issuer, leeway=self.settings.leeway_s,
                          options={"require": ["exp", "iat", "iss", "aud", "sub"]})

    def identity(self, token: str) -> Identity:
        """Who the token names; claims of the wrong type are dropped (MONAI Label's User model would 500 on them)."""
        claims = self.verify(token)
        s = self.settings
        roles = claim_at(claims, s.roles_claim)
        roles = [r for r in roles if isinstance(r, str)] if isinstance(roles, list) else []
        return Identity(username=str(claim_at(claims, s.username_claim) or claims["sub"]),
                        email=text_or_none(claim_at(claims, s.email_claim)),
                        name=text_or_none(claim_at(claims, s.name_claim)), roles=roles)


def text_or_none(value: Any) -> str | None:
    """A claim kept only if it is a string: a provider mapping `email` to a list or object must not break sign-in."""
    return value if isinstance(value, str) else None
