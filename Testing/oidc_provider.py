"""A real OpenID Connect provider for the tests: `Testing/idp/server.mjs` (npm `oidc-provider`) as a local process.

The test owns the provider's signing keys (RSA, made here), so it can restart the provider with a rotated key set,
and sign tokens the provider never would (expired, another audience) with a key the server trusts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

IDP_DIR = Path(__file__).resolve().parent / "idp"


@dataclass(frozen=True)
class IdpUser:
    username: str
    password: str
    roles: tuple[str, ...]
    name: str = ""
    email: str = ""


ROLE = {r: f"monailabel-{r}" for r in ("user", "annotator", "reviewer", "admin")}
# As a site grants them (MONAI Label checks each role by name, so an admin holds all four); nora signs in but has
# no role at all.
SITE_USERS = [IdpUser("ursula", "u-pass", (ROLE["user"],)),
              IdpUser("anna", "a-pass", (ROLE["user"], ROLE["annotator"])),
              IdpUser("rita", "r-pass", (ROLE["user"], ROLE["annotator"], ROLE["reviewer"])),
              IdpUser("adam", "ad-pass", tuple(ROLE.values())),
              IdpUser("nora", "n-pass", ())]


def new_key(kid: str) -> dict:
    """A fresh RS256 signing key as a private JWK (what the provider's `jwks` option takes)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key))
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


@dataclass
class OIDCProvider:
    """oidc-provider on 127.0.0.1:`port`; `start(keys)` (re)starts it with that key set, the first key signing."""

    folder: Path
    users: list[IdpUser]
    port: int
    client_id: str = "monailabel-app"
    access_token_ttl: int = 600
    process: subprocess.Popen | None = field(default=None, init=False)
    keys: list[dict] = field(default_factory=list, init=False)  # the set it runs with, the first one signing
    _log: TextIO | None = field(default=None, init=False, repr=False)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, keys: list[dict]) -> None:
        self.stop()
        self.keys = keys
        node = shutil.which("node")
        if node is None or not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError("the test provider needs Node.js and `npm ci` in Testing/idp (`make test-idp` runs it)")
        config = {"issuer": self.issuer, "port": self.port, "client_id": self.client_id, "audience": self.client_id,
                  "jwks": {"keys": keys}, "access_token_ttl": self.access_token_ttl, "refresh_token_ttl": 3600,
                  "users": [{"username": u.username, "password": u.password, "roles": list(u.roles),
                             "name": u.name or u.username, "email": u.email or f"{u.username}@site.example"}
                            for u in self.users]}
        path = self.folder / "idp.json"
        path.write_text(json.dumps(config))
        os.chmod(path, 0o600)  # private keys and passwords
        self._log = open(self.folder / "idp.log", "a")  # noqa: SIM115 - held for the process lifetime
        self.process = subprocess.Popen([node, str(IDP_DIR / "server.mjs"), str(path)], cwd=str(IDP_DIR),
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"provider exited: {(self.folder / 'idp.log').read_text()[-3000:]}")
            try:
                if requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError("provider not ready after 30 s")

    def discovery(self) -> dict:
        return requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10).json()

    def password_grant(self, username: str, password: str) -> dict:
        """Username and password for tokens at the provider's token endpoint, as a client without a secret."""
        response = requests.post(self.discovery()["token_endpoint"], timeout=10, data={
            "grant_type": "password", "client_id": self.client_id, "username": username, "password": password})
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        """Stop node if it still runs, and close its log file either way (node may have exited on its own)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.process = None
