"""Roles enforced against a real OpenID Connect provider, route by route, over HTTP.

One provider (npm `oidc-provider`, `Testing/idp/`) and one server with `MONAI_LABEL_AUTH_ENABLE`. The route table
is `docs/auth.md` itself: every row is walked with every test user's token and with none, so the docs cannot
drift from what the server enforces; every route in the server's OpenAPI must be a row.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization

from lib.medfm.files import read_json
from Testing.conftest import ROOT, RunningServer
from Testing.oidc_provider import ROLE, SITE_USERS, IdpUser, OIDCProvider, new_key

USERS = SITE_USERS
ADMIN = "adam"
TINY_TRAIN = {"method": "lora", "max_epochs": 1, "slices_per_image": 1, "batch_size": 1, "labels": ["lesion"],
              "images": ["brain2"], "note": "auth test"}
ROI = {"roi": [21, 29, 64, 75, 9, 9]}  # one slice of breast1's lesion
MUTATING = {"POST", "PUT", "DELETE"}


def route_table() -> list[tuple[str, str, str]]:
    """(method, path, role) for each row of the table in docs/auth.md."""
    rows = []
    for line in (ROOT / "docs" / "auth.md").read_text().splitlines():
        found = re.match(r"\|\s*(GET|POST|PUT|DELETE|HEAD)\s*\|\s*`([^`]+)`\s*\|\s*([\w-]+)\s*\|", line)
        if found:
            rows.append(found.groups())
    return rows


@dataclass
class Site:
    server: RunningServer
    idp: OIDCProvider
    tokens: dict[str, str] = field(default_factory=dict)
    archive: bytes = b""
    spare: str | None = None  # an imported version the DELETE row may remove
    result_name: str = ""

    def call(self, method: str, path: str, user: str | None = ADMIN, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return requests.request(method, f"{self.server.url}{path}", headers=headers, timeout=600, **kwargs)

    def ok(self, method: str, path: str, **kwargs) -> requests.Response:
        response = self.call(method, path, **kwargs)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text[:300]}"
        return response

    def state(self) -> dict:
        """What a refused request must leave as it was: versions, the active one and every decision, the held-out
        set, the datastore's images and labels with their info, and the annotation log."""
        return {"adapters": self.ok("GET", "/medfm/adapters").json(),
                "heldout": self.ok("GET", "/medfm/heldout").json(),
                "datastore": self.ok("GET", "/datastore/", params={"output": "all"}).json(),
                "annotations": read_json(self.server.models / "annotations.json")}

    def wait_idle(self, what: str) -> None:
        """Until no task of `what` runs and the newest one is no longer marked RUNNING: MONAI Label drops a finished
        process from its running list a moment before it marks the task DONE (a race that failed a clean run)."""
        path = "/batch/infer" if what == "batch" else f"/{what}/"
        deadline = time.time() + 300
        while self.call("GET", path, params={"check_if_running": True}).status_code == 200 or \
                self._newest_status(path) == "RUNNING":  # check_if_running 404: none running
            assert time.time() < deadline, f"{what} still running"
            time.sleep(1)

    def _newest_status(self, path: str) -> str | None:
        response = self.call("GET", path)
        newest = response.json() if response.status_code == 200 else None
        return newest.get("status") if isinstance(newest, dict) else None


@pytest.fixture(scope="module")
def site(auth_server):
    """The auth server with one small adapter version v0001 trained (activate, export, import and delete need
    one), then breast1 held out (evaluate and compare need one)."""
    idp, server = auth_server
    s = Site(server, idp, {u.username: idp.password_grant(u.username, u.password)["access_token"] for u in USERS})
    s.ok("POST", "/train/medsam_adapt", json=TINY_TRAIN)  # nothing held out yet: the guard judges quickly
    s.wait_idle("train")
    assert s.ok("GET", "/train/").json()["status"] == "DONE"
    s.ok("PUT", "/medfm/heldout", json={"images": ["breast1"]})
    assert "v0001" in [r["version"] for r in s.ok("GET", "/medfm/adapters").json()["adapters"]]
    s.archive = s.ok("GET", "/medfm/adapters/v0001/export").content
    return s


# ---- what each row sends: a request that succeeds for a user holding the role -------------------------------
@dataclass
class Spec:
    request: Callable[[Site], dict]  # method/path filled in, and requests' keyword arguments
    allowed: int | None = None  # the answer when allowed, where it is not 2xx (the note in docs/auth.md says why)
    cleanup: Callable[[Site], None] | None = None


def plain(path: str, **kwargs) -> Callable[[Site], dict]:
    return lambda s: {"path": path, **kwargs}


def image_file() -> dict:
    return {"file": ("scratch.nii.gz", (ROOT / "build" / "sample_datastore" / "breast1.nii.gz").read_bytes())}


def doomed_image(s: Site) -> dict:
    if s.call("HEAD", "/datastore/image", params={"image": "doomed"}).status_code != 200:
        s.ok("PUT", "/datastore/image", params={"image": "doomed"}, files=image_file())
    return {"path": "/datastore/image", "params": {"id": "doomed"}}


def doomed_label(s: Site) -> dict:
    doomed_image(s)
    if s.call("HEAD", "/datastore/label", params={"image": "doomed", "tag": "scratch"}).status_code != 200:
        s.ok("PUT", "/datastore/label", params={"image": "doomed", "tag": "scratch"},
             files={"label": ("l.nii.gz", label_bytes("breast1"))})  # doomed is a copy of breast1
    return {"path": "/datastore/label", "params": {"id": "doomed", "tag": "scratch"}}


def label_bytes(image: str = "brain2") -> bytes:
    return (ROOT / "build" / "sample_datastore" / "labels" / "final" / f"{image}.nii.gz").read_bytes()


def new_session(s: Site) -> str:
    return s.ok("PUT", "/session/", files={"files": ("b.nii.gz", image_file()["file"][1])}).json()["session_id"]


def spare_version(s: Site) -> dict:
    versions = [r["version"] for r in s.ok("GET", "/medfm/adapters").json()["adapters"]]
    if s.spare not in versions:
        s.spare = s.ok("POST", "/medfm/adapters/import", files={"file": ("a.tar.gz", s.archive)}).json()["version"]
    return {"path": f"/medfm/adapters/{s.spare}"}


def result_name(s: Site) -> dict:
    if not s.result_name:
        response = s.ok("POST", "/infer/medsam_interactive", params={"image": "breast1", "output": "json"},
                        data={"params": json.dumps({**ROI, "uncertainty": True})})
        s.result_name = response.json()["uncertainty"]["url"].rsplit("/", 1)[-1]
    return {"path": f"/medfm/results/{s.result_name}"}


def stop(what: str) -> Callable[[Site], None]:
    def cleanup(s: Site) -> None:
        """Stop until no task is queued or running: a task is accepted before its process starts (a stop then
        finds nothing to stop), and POST /train/ queues one training per trainer."""
        path = "/batch/infer" if what == "batch" else f"/{what}/"
        deadline = time.time() + 120
        while True:
            tasks = s.call("GET", path, params={"all": True})
            busy = [t["status"] for t in (tasks.json() if tasks.ok else []) if t["status"] in ("SUBMITTED", "RUNNING")]
            if not busy:
                return
            if "RUNNING" in busy:
                s.ok("DELETE", path)
            assert time.time() < deadline, f"{what} still running"
            time.sleep(0.3)
    return cleanup


def scoring_method(s: Site) -> str:
    return sorted(s.ok("GET", "/info/").json()["scoring"])[0]


INFER = {"params": {"image": "breast1", "output": "json"}, "data": {"params": json.dumps(ROI)}}
NOT_A_PACS = 404
SPECS: dict[tuple[str, str], Spec] = {
    ("GET", "/"): Spec(plain("/")),
    ("GET", "/docs"): Spec(plain("/docs")),
    ("GET", "/openapi.json"): Spec(plain("/openapi.json")),
    ("GET", "/favicon.ico"): Spec(plain("/favicon.ico")),
    ("GET", "/static/{path}"): Spec(plain("/static/favicon.ico")),
    ("GET", "/auth/"): Spec(plain("/auth/")),
    ("POST", "/auth/token"): Spec(plain("/auth/token", data={"username": "ursula", "password": "u-pass"})),
    ("GET", "/auth/token/valid"): Spec(plain("/auth/token/valid")),
    ("GET", "/info/"): Spec(plain("/info/")),
    ("POST", "/infer/{model}"): Spec(plain("/infer/medsam_interactive", **INFER)),
    ("POST", "/infer/wsi/{model}"): Spec(plain("/infer/wsi/medsam_interactive", json={}), allowed=404),
    ("POST", "/infer/wsi_v2/{model}"): Spec(plain("/infer/wsi_v2/medsam_interactive", json={}), allowed=404),
    ("GET", "/batch/infer"): Spec(plain("/batch/infer")),
    ("POST", "/batch/infer/{model}"): Spec(plain("/batch/infer/medsam_interactive", params={"images": "unlabeled"},
                                                 json={"multi_gpu": False}), cleanup=stop("batch")),
    ("DELETE", "/batch/infer"): Spec(plain("/batch/infer")),
    ("GET", "/train/"): Spec(plain("/train/")),
    ("POST", "/train/"): Spec(plain("/train/", json=TINY_TRAIN), cleanup=stop("train")),
    ("POST", "/train/{model}"): Spec(plain("/train/medsam_adapt", json=TINY_TRAIN), cleanup=stop("train")),
    ("DELETE", "/train/"): Spec(plain("/train/")),
    ("POST", "/activelearning/{strategy}"): Spec(plain("/activelearning/random", json={})),
    ("GET", "/scoring/"): Spec(plain("/scoring/")),
    ("POST", "/scoring/"): Spec(plain("/scoring/", json={}), cleanup=stop("scoring")),
    ("POST", "/scoring/{method}"): Spec(lambda s: {"path": f"/scoring/{scoring_method(s)}", "json": {}},
                                        cleanup=stop("scoring")),
    ("DELETE", "/scoring/"): Spec(plain("/scoring/")),
    ("GET", "/datastore/"): Spec(plain("/datastore/", params={"output": "stats"})),
    ("PUT", "/datastore/"): Spec(lambda s: {"path": "/datastore/", "params": {"image": "added"},
                                            "files": image_file()}),
    ("DELETE", "/datastore/"): Spec(lambda s: {**doomed_image(s), "path": "/datastore/"}),
    ("PUT", "/datastore/image"): Spec(lambda s: {"path": "/datastore/image", "params": {"image": "added"},
                                                 "files": image_file()}),
    ("HEAD", "/datastore/image"): Spec(plain("/datastore/image", params={"image": "breast1"})),
    ("GET", "/datastore/image"): Spec(plain("/datastore/image", params={"image": "breast1"})),
    ("DELETE", "/datastore/image"): Spec(doomed_image),
    ("GET", "/datastore/image/info"): Spec(plain("/datastore/image/info", params={"image": "breast1"})),
    ("PUT", "/datastore/image/info"): Spec(plain("/datastore/image/info", params={"image": "brain2"},
                                                 data={"info": json.dumps({"note": "seen"})})),
    ("PUT", "/datastore/label"): Spec(lambda s: {"path": "/datastore/label", "params": {"image": "brain2",
                                                                                        "tag": "final"},
                                                 "data": {"params": json.dumps({"user": "someone-else"})},
                                                 "files": {"label": ("l.nii.gz", label_bytes())}}),
    ("HEAD", "/datastore/label"): Spec(plain("/datastore/label", params={"image": "brain2", "tag": "final"})),
    ("GET", "/datastore/label"): Spec(plain("/datastore/label", params={"label": "brain2", "tag": "final"})),
    ("DELETE", "/datastore/label"): Spec(doomed_label),
    ("GET", "/datastore/label/info"): Spec(plain("/datastore/label/info", params={"label": "brain2", "tag": "final"})),
    ("PUT", "/datastore/label/info"): Spec(plain("/datastore/label/info", params={"label": "brain2", "tag": "final"},
                                                 data={"info": json.dumps({"note": "seen"})})),
    ("PUT", "/datastore/updatelabelinfo"): Spec(plain("/datastore/updatelabelinfo",
                                                      params={"label": "brain2", "tag": "final"},
                                                      data={"params": json.dumps({"note": "seen"})})),
    ("GET", "/datastore/dataset"): Spec(plain("/datastore/dataset")),
    ("GET", "/model/{model}"): Spec(plain("/model/medsam_interactive"), allowed=404),
    ("GET", "/model/info/{model}"): Spec(plain("/model/info/medsam_interactive"), allowed=404),
    ("PUT", "/model/{model}"): Spec(plain("/model/medsam_interactive", files={"file": ("m.pt", b"not weights")})),
    ("DELETE", "/model/{model}"): Spec(plain("/model/medsam_interactive")),
    ("GET", "/logs/"): Spec(plain("/logs/", params={"lines": 5})),
    ("GET", "/logs/gpu"): Spec(plain("/logs/gpu"), allowed=404),
    ("PUT", "/session/"): Spec(lambda s: {"path": "/session/", "files": {"files": ("b.nii.gz",
                                                                                   image_file()["file"][1])}}),
    ("GET", "/session/{session_id}"): Spec(lambda s: {"path": f"/session/{new_session(s)}"}),
    ("DELETE", "/session/{session_id}"): Spec(lambda s: {"path": f"/session/{new_session(s)}"}),
    ("GET", "/ohif/{path}"): Spec(plain("/ohif/index.html")),
    ("GET", "/proxy/dicom/{path}"): Spec(plain("/proxy/dicom/studies"), allowed=NOT_A_PACS),
    ("POST", "/proxy/dicom/{path}"): Spec(plain("/proxy/dicom/studies"), allowed=NOT_A_PACS),
    ("GET", "/proxy/dicom/qido/{path}"): Spec(plain("/proxy/dicom/qido/studies"), allowed=NOT_A_PACS),
    ("POST", "/proxy/dicom/qido/{path}"): Spec(plain("/proxy/dicom/qido/studies"), allowed=NOT_A_PACS),
    ("GET", "/proxy/dicom/wado/{path}"): Spec(plain("/proxy/dicom/wado/studies"), allowed=NOT_A_PACS),
    ("POST", "/proxy/dicom/wado/{path}"): Spec(plain("/proxy/dicom/wado/studies"), allowed=NOT_A_PACS),
    ("GET", "/proxy/dicom/stow/{path}"): Spec(plain("/proxy/dicom/stow/studies"), allowed=NOT_A_PACS),
    ("POST", "/proxy/dicom/stow/{path}"): Spec(plain("/proxy/dicom/stow/studies"), allowed=NOT_A_PACS),
    ("POST", "/reload"): Spec(plain("/reload")),
    ("GET", "/medfm/adapters"): Spec(plain("/medfm/adapters")),
    ("GET", "/medfm/adapters/compare"): Spec(plain("/medfm/adapters/compare", params={"a": "base", "b": "v0001"})),
    ("POST", "/medfm/adapters/rollback"): Spec(lambda s: (s.ok("POST", "/medfm/adapters/v0001/activate"),
                                                          {"path": "/medfm/adapters/rollback"})[1]),
    ("POST", "/medfm/adapters/import"): Spec(lambda s: {"path": "/medfm/adapters/import",
                                                        "files": {"file": ("a.tar.gz", s.archive)}}),
    ("GET", "/medfm/adapters/{version}"): Spec(plain("/medfm/adapters/v0001")),
    ("POST", "/medfm/adapters/{version}/activate"): Spec(plain("/medfm/adapters/v0001/activate")),
    ("DELETE", "/medfm/adapters/{version}"): Spec(spare_version),
    ("GET", "/medfm/adapters/{version}/export"): Spec(plain("/medfm/adapters/v0001/export")),
    ("POST", "/medfm/adapters/{version}/evaluate"): Spec(plain("/medfm/adapters/v0001/evaluate")),
    ("PUT", "/medfm/heldout"): Spec(plain("/medfm/heldout", json={"images": ["breast1"]})),
    ("GET", "/medfm/heldout"): Spec(plain("/medfm/heldout")),
    ("GET", "/medfm/sessions"): Spec(plain("/medfm/sessions")),
    ("GET", "/medfm/results/{name}"): Spec(result_name),
}


def allowed(role: str, user: IdpUser | None) -> bool:
    if role == "public":
        return True
    if user is None or role == "none":
        return False
    return role == "signed-in" or ROLE[role] in user.roles


def test_every_served_route_is_in_the_table_and_walked(site):
    table = {(m, p) for m, p, _ in route_table()}
    openapi = site.call("GET", "/openapi.json", user=None).json()["paths"]
    served = {(method.upper(), path) for path, ops in openapi.items() for method in ops}
    assert served - table == set(), "routes the server serves that docs/auth.md does not list"
    assert table == set(SPECS), "every row of docs/auth.md has a request in this test, and no other"
    assert len(route_table()) == len(table)  # no row twice


def test_each_role_is_allowed_or_refused_as_the_table_says(site):
    rows = sorted(route_table(), key=lambda r: r[1] == "/reload")  # reload (the app is rebuilt) last
    outcomes = []
    for method, path, role in rows:
        spec = SPECS[(method, path)]
        for user in [None, *USERS]:
            request = spec.request(site)
            url = request.pop("path")
            mutating = method in MUTATING and not allowed(role, user)
            before = site.state() if mutating else None
            response = site.call(method, url, user=user.username if user else None, **request)
            name = user.username if user else "no token"
            if allowed(role, user):
                expected = spec.allowed
                good = response.status_code == expected if expected else 200 <= response.status_code < 300
                if spec.cleanup and good:
                    spec.cleanup(site)
            else:
                expected = 401 if user is None else 403
                good = response.status_code == expected
            if mutating:
                assert site.state() == before, f"{method} {path} refused for {name} but changed the server's state"
            outcomes.append((method, path, name, response.status_code))
            assert good, f"{method} {path} as {name} ({role} needed): {response.status_code} {response.text[:300]}"
    assert len(outcomes) == len(rows) * (len(USERS) + 1)


def test_decision_records_carry_the_token_user(site):
    site.ok("POST", "/medfm/adapters/v0001/activate", user="adam")
    manual = site.ok("GET", "/medfm/adapters/v0001").json()["decision"]["manual"]
    assert manual[-1]["by"] == "adam"
    site.ok("PUT", "/datastore/label", user="anna", params={"image": "brain2", "tag": "final"},
            data={"params": json.dumps({"user": "not-anna", "session": "auth-test"})},
            files={"label": ("l.nii.gz", label_bytes())})
    entry = read_json(site.server.models / "annotations.json")["labels"][-1]
    assert entry["user"] == "anna" and entry["session"] == "auth-test" and entry["image"] == "brain2"


def test_a_sent_ts_cannot_put_a_label_save_under_another_name(site):
    """rita sends a far-future `ts` (and a `user`) in brain2's final label info; anna's next save of another tag of
    brain2 is still logged as hers: the log reads the label just saved, and the sent keys are dropped."""
    for path, form in (("/datastore/label/info", "info"), ("/datastore/updatelabelinfo", "params")):
        site.ok("PUT", path, user="rita", params={"label": "brain2", "tag": "final"},
                data={form: json.dumps({"ts": 9_999_999_999, "user": "anna", "checksum": "x", "note": "rita's"})})
        info = site.ok("GET", "/datastore/label/info", params={"label": "brain2", "tag": "final"}).json()
        assert info["ts"] != 9_999_999_999 and info.get("checksum") != "x" and info["note"] == "rita's"
        assert info["user"] == "rita"
    site.ok("PUT", "/datastore/label", user="anna", params={"image": "brain2", "tag": "second"},
            data={"params": json.dumps({"session": "second-look", "ts": 1})},
            files={"label": ("l.nii.gz", label_bytes())})
    entry = read_json(site.server.models / "annotations.json")["labels"][-1]
    assert (entry["user"], entry["session"], entry["image"]) == ("anna", "second-look", "brain2")


def test_import_rollback_and_delete_record_the_token_user(site):
    """They change what every radiologist's FM does or which versions exist, so the admin who did it is kept."""
    imported = site.ok("POST", "/medfm/adapters/import", files={"file": ("a.tar.gz", site.archive)}).json()["version"]
    assert site.ok("GET", f"/medfm/adapters/{imported}").json()["manifest"]["imported_from"]["by"] == ADMIN
    site.ok("POST", f"/medfm/adapters/{imported}/activate")
    site.ok("POST", "/medfm/adapters/rollback")
    site.ok("DELETE", f"/medfm/adapters/{imported}")
    events = read_json(next(site.server.models.glob("adapters/*/audit.json")))["events"]
    assert [(e["action"], e["version"], e["by"]) for e in events[-4:]] == [
        ("import", imported, ADMIN), ("activate", imported, ADMIN), ("rollback", events[-2]["version"], ADMIN),
        ("delete", imported, ADMIN)]
    assert events[-2]["replaced"] == imported


# ---- tokens that must not pass ----------------------------------------------------------------------------
def forged(site: Site, key: dict | None, **changes) -> str:
    """A token like the provider's for adam, with `changes` to its claims, signed by `key` (None: unsigned)."""
    claims = jwt.decode(site.tokens[ADMIN], options={"verify_signature": False})
    claims = {k: v for k, v in {**claims, **changes}.items() if v is not None}
    if key is None:
        return jwt.encode(claims, None, algorithm="none")
    return jwt.encode(claims, jwt.PyJWK(key).key, algorithm="RS256", headers={"kid": key["kid"]})


@pytest.mark.parametrize("case", ["expired", "other issuer", "other audience", "unsigned", "another key",
                                  "another key, unknown kid", "no expiry", "tampered", "HMAC with the public key"])
def test_bad_tokens_get_401_and_change_nothing(site, case):
    now = int(time.time())
    signing = site.idp.keys[0]
    rogue = {**new_key(signing["kid"])}
    token = {"expired": lambda: forged(site, signing, exp=now - 600, iat=now - 1200),
             "other issuer": lambda: forged(site, signing, iss="http://127.0.0.1:1/other"),
             "other audience": lambda: forged(site, signing, aud="another-app"),
             "unsigned": lambda: forged(site, None),
             "another key": lambda: forged(site, rogue),
             "another key, unknown kid": lambda: forged(site, {**rogue, "kid": "rogue"}),
             "no expiry": lambda: forged(site, signing, exp=None),
             "tampered": lambda: _tamper(site.tokens["ursula"], site.tokens[ADMIN]),
             "HMAC with the public key": lambda: _hmac_with_public_key(site, signing)}[case]()
    control = forged(site, signing)  # forged alike but unchanged: it passes, so each 401 is the change's doing
    assert requests.get(f"{site.server.url}/info/", headers={"Authorization": f"Bearer {control}"}, timeout=60).ok
    before = site.state()
    for method, path in (("GET", "/info/"), ("POST", "/medfm/adapters/rollback"), ("PUT", "/medfm/heldout")):
        response = requests.request(method, f"{site.server.url}{path}", json={"images": ["breast1"],
                                                                             "held_out": False},
                                    headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert response.status_code == 401, f"{case}: {method} {path} answered {response.status_code}"
        assert response.headers.get("www-authenticate", "").lower().startswith("bearer")
    assert site.state() == before


def _hmac_with_public_key(site: Site, signing: dict) -> str:
    """The classic algorithm confusion: HS256 keyed with the provider's public key, which anyone can read."""
    public_pem = jwt.PyJWK({k: v for k, v in signing.items() if k in ("kty", "n", "e", "kid")}).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    head, claims, _ = forged(site, signing).split(".")
    head = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT", "kid": signing["kid"]}).encode())
    signing_input = head.rstrip(b"=") + b"." + claims.encode()
    mac = base64.urlsafe_b64encode(hmac.new(public_pem, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    return (signing_input + b"." + mac).decode()


def _tamper(user_token: str, admin_token: str) -> str:
    """ursula's signed token with adam's claims pasted in: the signature no longer matches."""
    head, _, sig = user_token.split(".")
    return f"{head}.{admin_token.split('.')[1]}.{sig}"


def test_rotated_provider_key_still_verifies(site):
    old = site.idp.keys
    site.idp.keys = [new_key("k2"), *old]  # the provider signs with k2 now and still publishes k1
    site.idp.start(site.idp.keys)
    fresh = site.idp.password_grant("ursula", "u-pass")["access_token"]
    assert jwt.get_unverified_header(fresh)["kid"] == "k2"
    time.sleep(1.1)  # the server's JWKS refetch cooldown (MONAI_LABEL_AUTH_JWKS_COOLDOWN=1 here)
    response = requests.get(f"{site.server.url}/info/", headers={"Authorization": f"Bearer {fresh}"}, timeout=60)
    assert response.status_code == 200, response.text
    assert site.call("GET", "/info/", user="ursula").status_code == 200  # a k1 token from before still passes


def test_stock_plugin_sign_in(site, tmp_path):
    """The stock SlicerMONAILabel plugin's sign-in: GET /auth/, then POST /auth/token, then the token as Bearer."""
    from monailabel.client import MONAILabelClient
    from monailabel.client.client import MONAILabelClientException

    client = MONAILabelClient(site.server.url, tmpdir=str(tmp_path))
    assert client.auth_enabled()
    with pytest.raises(MONAILabelClientException):
        client.info()
    with pytest.raises(MONAILabelClientException, match="401"):
        client.auth_token("anna", "wrong")
    token = client.auth_token("anna", "a-pass")
    client.update_auth(token)
    assert client.auth_valid_token()
    assert client.info()["name"] == "MedFMAdapt"
    assert jwt.decode(token["access_token"], options={"verify_signature": False})["preferred_username"] == "anna"


def test_a_provider_refusal_other_than_the_password_is_not_called_one(site):
    """The real provider's answer to a client it does not know (as with a wrong MONAI_LABEL_AUTH_CLIENT_ID): the
    right password, yet refused; /auth/token must not tell the user the password is wrong."""
    from lib.auth_setup import refusal

    response = requests.post(site.idp.discovery()["token_endpoint"], timeout=10, data={
        "grant_type": "password", "client_id": "not-registered", "username": "anna", "password": "a-pass"})
    refused = refusal(response)
    assert refused.status_code == 502 and "invalid_client" in refused.detail, refused.detail
    wrong = requests.post(site.idp.discovery()["token_endpoint"], timeout=10, data={
        "grant_type": "password", "client_id": site.idp.client_id, "username": "anna", "password": "not-hers"})
    assert refusal(wrong).status_code == 401
