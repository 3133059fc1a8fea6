"""The panel's sign-in against a real OpenID Connect provider and a server with authentication on (`auth_server`
in Testing/conftest.py): the Logic signs in with a username and password, every call then carries the token, and
the token is renewed with the provider's refresh token before it expires."""

from __future__ import annotations

import jwt
import pytest
import slicer

from MedFMAdapt.MedFMAdaptLib import sign_in
from MedFMAdapt.MedFMAdaptLib.client import MedFMClient
from MedFMAdapt.MedFMAdaptLib.errors import HTTPFailure
from MedFMAdapt.MedFMAdaptLib.logic import MedFMAdaptLogic, run_now

pytestmark = pytest.mark.server


def test_logic_signs_in_and_every_call_carries_the_token(auth_server, tmp_path):
    _, server = auth_server
    logic = MedFMAdaptLogic(slicer.vtkMRMLScene(), work_dir=tmp_path)
    steps: list[str] = []
    connected = run_now(logic.connect_job(server.url, username="anna", password="a-pass"),
                        lambda message, _f: steps.append(message))
    assert steps[0] == "Signing in" and connected.info["name"] == "MedFMAdapt"
    assert logic.client.token is None and logic.client.token_source is not None  # kept by the keeper, not typed in
    claims = jwt.decode(logic.client.token_source(), options={"verify_signature": False})
    assert claims["preferred_username"] == "anna" and claims["aud"] == "monailabel-app"
    assert logic.client.heldout() == connected.held_out  # another call, the same token


def test_without_a_sign_in_the_server_refuses(auth_server, tmp_path):
    _, server = auth_server
    client = MedFMClient(server.url, download_dir=tmp_path)
    assert client.auth()["enabled"] is True  # public: the panel learns it must sign in
    with pytest.raises(HTTPFailure) as refused:
        client.info()
    assert refused.value.status == 401


def test_wrong_password_is_refused_in_words(auth_server, tmp_path):
    _, server = auth_server
    logic = MedFMAdaptLogic(slicer.vtkMRMLScene(), work_dir=tmp_path)
    with pytest.raises(HTTPFailure, match="wrong username or password") as refused:
        run_now(logic.connect_job(server.url, username="anna", password="not-hers"))
    assert refused.value.status == 401 and logic.client is None


def test_token_is_renewed_before_it_expires(auth_server, tmp_path):
    idp, server = auth_server
    client = MedFMClient(server.url, download_dir=tmp_path)
    provider = sign_in.discover(client.auth())
    assert provider.issuer == idp.issuer and provider.token_endpoint.startswith(idp.issuer)
    now = [1000.0]
    keeper = sign_in.TokenKeeper(provider, clock=lambda: now[0])
    keeper.sign_in("rita", "r-pass")
    client.token_source = keeper.bearer
    first = keeper.bearer()
    assert keeper.bearer() == first  # far from expiry: the same token
    now[0] += idp.access_token_ttl - 5  # 5 s of life left: renewed through the refresh token
    renewed = keeper.bearer()
    assert renewed != first
    assert jwt.decode(renewed, options={"verify_signature": False})["preferred_username"] == "rita"
    assert client.info()["name"] == "MedFMAdapt"  # the server accepts the renewed token
    keeper.sign_out()
    with pytest.raises(ValueError, match="Sign in"):
        client.info()
