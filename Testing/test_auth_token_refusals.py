"""POST /auth/token's answer to a refusal from the identity provider (lib/auth_setup.py): only `invalid_grant` is the
user's wrong password; other refusals are the site's setup, told to the admin in the provider's words."""

from __future__ import annotations

import json

import requests

from lib.auth_setup import refusal


def reply(status: int, body: object) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return response


def test_invalid_grant_is_a_wrong_password():
    refused = refusal(reply(400, {"error": "invalid_grant", "error_description": "Invalid user credentials"}))
    assert refused.status_code == 401 and "wrong username or password" in refused.detail
    assert refused.headers == {"WWW-Authenticate": "Bearer"}


def test_password_grant_not_allowed_is_the_sites_setup():
    """Keycloak with *Direct access grants* off answers 400 unauthorized_client: not the user's password."""
    refused = refusal(reply(400, {"error": "unauthorized_client",
                                  "error_description": "Client not allowed for direct access grants"}))
    assert refused.status_code == 502 and "password" not in refused.detail.split("(")[1]
    assert "unauthorized_client: Client not allowed for direct access grants" in refused.detail


def test_unknown_client_and_replies_without_words():
    assert refusal(reply(401, {"error": "invalid_client"})).status_code == 502
    assert "invalid_client" in refusal(reply(401, {"error": "invalid_client"})).detail
    assert "no explanation given" in refusal(reply(500, b"<html>oops</html>")).detail
    assert refusal(reply(400, ["not", "an", "object"])).status_code == 502
