"""At server start, with `MONAI_LABEL_AUTH_ENABLE`: every route's token check goes through `lib/oidc.py`.

MONAI Label's routes (and ours, `lib/auth.py`) depend on `RBAC(role)`, which depends on MONAI Label's
`get_current_user`; overriding that one dependency on the FastAPI app makes all of them verify through the
provider's JWKS while MONAI Label's role check stays as it is. Also here: the two MONAI Label routes that answer
wrongly with auth on (a wrong password at /auth/token was a 500; /reload had no role at all).
"""

from __future__ import annotations

import jwt
import requests
from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordRequestForm
from monailabel.config import settings
from monailabel.endpoints.user import auth as ml_auth
from monailabel.endpoints.user.auth import User
from monailabel.interfaces.utils.app import clear_cache

from lib.auth import ADMIN
from lib.oidc import AuthSettings, ProviderUnreachable, TokenVerifier

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def current_user_dependency(verifier: TokenVerifier):
    async def current_user(token: str = Depends(ml_auth.oauth2_scheme)) -> User:
        try:
            identity = await run_in_threadpool(verifier.identity, token)
        except ProviderUnreachable as err:
            raise HTTPException(status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                                detail=f"the identity provider cannot be reached to check the token: {err}") from err
        except jwt.InvalidTokenError as err:
            raise HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail=f"invalid token: {err}",
                                headers=UNAUTHORIZED) from err
        return User(username=identity.username, email=identity.email, name=identity.name, roles=identity.roles)

    return current_user


def access_token(form: OAuth2PasswordRequestForm = Depends()) -> dict:
    """MONAI Label's /auth/token (the stock Slicer plugin's sign-in): the password grant at the provider's token
    endpoint, with a refused sign-in answered in words (MONAI Label answered it with a 500)."""
    try:
        url = ml_auth.token_uri()
        response = requests.post(url, timeout=settings.MONAI_LABEL_AUTH_TIMEOUT, data={
            "client_id": settings.MONAI_LABEL_AUTH_CLIENT_ID, "username": form.username, "password": form.password,
            "grant_type": "password"})
    except requests.RequestException as err:
        raise HTTPException(status_code=503, detail=f"the identity provider cannot be reached: {err}") from err
    if not response.ok:
        raise refusal(response)
    return response.json()


def refusal(response: requests.Response) -> HTTPException:
    """Only `invalid_grant` means the user's credentials are wrong (401); anything else (`unauthorized_client` when
    the client may not use the password grant, `invalid_client`...) is the site's setup, so 502 with the provider's
    own words for the admin to act on."""
    error, description = provider_error(response)
    if error == "invalid_grant":
        return HTTPException(status_code=401, detail="sign-in refused by the identity provider: wrong username or "
                                                     "password", headers=UNAUTHORIZED)
    said = f"{error}: {description}" if description else error or "no explanation given"
    return HTTPException(status_code=502, detail=f"the identity provider refused the sign-in for a reason other "
                                                 f"than the password (answered {response.status_code}, {said})")


def provider_error(response: requests.Response) -> tuple[str, str]:
    """The OAuth 2.0 error reply's `error` and `error_description` (RFC 6749 5.2), or empty strings."""
    try:
        body = response.json()
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    error, description = body.get("error"), body.get("error_description")
    return (error if isinstance(error, str) else "", description if isinstance(description, str) else "")


def reload(user: User = ADMIN) -> dict:
    """MONAI Label's POST /reload (drops the app instance and its caches), which had no role check."""
    clear_cache()
    return {}


def install_auth(app: FastAPI) -> None:
    if not settings.MONAI_LABEL_AUTH_ENABLE or ml_auth.get_current_user in app.dependency_overrides:
        return
    verifier = TokenVerifier(AuthSettings.from_env(settings))
    app.dependency_overrides[ml_auth.get_current_user] = current_user_dependency(verifier)
    for method, path, handler in (("POST", "/auth/token", access_token), ("POST", "/reload", reload)):
        app.router.routes.insert(0, APIRoute(path, handler, methods=[method], name=f"medfm_auth_{handler.__name__}",
                                             include_in_schema=False, dependency_overrides_provider=app))
