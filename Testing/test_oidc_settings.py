"""lib/oidc.py without a server: MONAI Label's setting names map onto the checks, and the roles claim path is read
as MONAI Label reads it (`#` between levels)."""

from __future__ import annotations

from types import SimpleNamespace

from lib.oidc import AuthSettings, claim_at

MONAI_LABEL = SimpleNamespace(
    MONAI_LABEL_AUTH_REALM_URI="https://sso.site/realms/radiology/", MONAI_LABEL_AUTH_CLIENT_ID="monailabel-app",
    MONAI_LABEL_AUTH_TOKEN_ROLES="realm_access#roles", MONAI_LABEL_AUTH_TOKEN_USERNAME="preferred_username",
    MONAI_LABEL_AUTH_TOKEN_EMAIL="email", MONAI_LABEL_AUTH_TOKEN_NAME="name", MONAI_LABEL_AUTH_TIMEOUT=10)


def test_monai_label_names_give_issuer_and_audience():
    s = AuthSettings.from_env(MONAI_LABEL, env={})
    assert s.issuer == "https://sso.site/realms/radiology/"  # as written: tokens must match the provider's spelling
    assert s.audience == "monailabel-app" and s.jwks_uri == "" and s.jwks_cooldown_s == 30.0
    other = AuthSettings.from_env(MONAI_LABEL, env={"MONAI_LABEL_AUTH_AUDIENCE": "api://radiology",
                                                    "MONAI_LABEL_AUTH_JWKS_URI": "https://sso.site/keys"})
    assert other.audience == "api://radiology" and other.jwks_uri == "https://sso.site/keys"


def test_roles_claim_path():
    claims = {"realm_access": {"roles": ["monailabel-user"]}, "roles": ["a"], "groups": "not-a-dict"}
    assert claim_at(claims, "realm_access#roles") == ["monailabel-user"]
    assert claim_at(claims, "roles") == ["a"]
    assert claim_at(claims, "groups#roles") is None and claim_at(claims, "missing#roles") is None
