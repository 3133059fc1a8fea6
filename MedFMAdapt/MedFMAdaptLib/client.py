"""HTTP client for the MedFMAdapt MONAI Label server, standard library only.

Standard library only so that nothing has to be pip-installed into Slicer's Python. Every call has a
timeout; every failure becomes one of the `errors` types, so the panel can say what went wrong in words.
"""

from __future__ import annotations

import email.message
import json
import socket
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadResponse, ConnectionFailed, HTTPFailure, ServerTimeout, TLSFailure
from .multipart import Part, encode_form, parse_multipart, sanitize_filename

INTERACTIVE_MODEL = "medsam_interactive"
AUTO_MODEL = "medsam_auto"
TRAINER = "medsam_adapt"
PRETRAINER = "medsam_pretrain"  # self-supervised, on the unlabelled scans too
REGISTRY = "/medfm/adapters"
RUNNING_STATES = ("SUBMITTED", "RUNNING", "QUEUED", "PENDING")  # MONAI Label's task states before it ends
RESULTS = "/medfm/results/"


@dataclass
class Response:
    """What a call brought back: status, headers (lower-case names) and the raw body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or BadResponse when it is not."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadResponse(f"the server's reply is not valid JSON ({exc})") from exc


@dataclass
class InferResult:
    """An inference answer: the server's JSON params and the label file written under our temp folder."""

    params: dict[str, Any]
    label_path: Path | None
    extra_files: dict[str, Path] = field(default_factory=dict)


def _detail_of(body: bytes) -> str:
    """The server's own words from an error body: FastAPI's {"detail": ...}, or the text itself."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        return text[:500] or "no explanation given"
    detail = payload.get("detail", payload) if isinstance(payload, dict) else payload
    if isinstance(detail, list):  # FastAPI validation errors: [{"loc": [...], "msg": "..."}]
        msgs = [str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail]
        return "; ".join(msgs) or "no explanation given"
    return str(detail)[:500] or "no explanation given"


def _filename_from_disposition(value: str | None) -> str | None:
    """File name from a Content-Disposition header (handles quoting and RFC 2231 forms)."""
    if not value:
        return None
    msg = email.message.EmailMessage()
    msg["Content-Disposition"] = value
    return msg.get_filename()


class MedFMClient:
    """One server connection's settings; each public method is one REST call.

    `timeout` covers quick calls; `long_timeout` covers uploads and inference, which take
    ~1.5 s per slice on a CPU server. TLS is verified unless `verify_tls` is False.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 20.0,
        long_timeout: float = 900.0,
        verify_tls: bool = True,
        download_dir: Path | None = None,
    ) -> None:
        url = base_url.strip()
        if not url:
            raise ValueError("Enter the server address, for example http://127.0.0.1:8000")
        if "://" not in url:
            url = "http://" + url
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"The server address must start with http:// or https://, not {scheme}://")
        self.base_url = url.rstrip("/")
        self.token = token or None
        # Set after a sign-in (sign_in.TokenKeeper.bearer): asked for the token at each call, so it is renewed.
        self.token_source: Callable[[], str] | None = None
        self.timeout = timeout
        self.long_timeout = long_timeout
        self.verify_tls = verify_tls
        self.download_dir = Path(download_dir) if download_dir else Path(tempfile.mkdtemp(prefix="medfmadapt_"))

    # ---- plumbing -------------------------------------------------------------------------------------------------

    def build_request(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> urllib.request.Request:
        """The urllib request for a call, with the token header when one is set."""
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("Accept", "application/json, multipart/form-data, */*")
        if content_type:
            request.add_header("Content-Type", content_type)
        token = self.token_source() if self.token_source else self.token
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        return request

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.base_url.startswith("https://"):
            return None
        context = ssl.create_default_context()
        if not self.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def send(self, request: urllib.request.Request, timeout: float | None = None) -> Response:
        """Send a request; map every failure to an `errors` type carrying the server's words."""
        limit = self.timeout if timeout is None else timeout
        url = request.full_url
        try:
            with urllib.request.urlopen(request, timeout=limit, context=self._ssl_context()) as reply:
                headers = {k.lower(): v for k, v in reply.headers.items()}
                return Response(reply.status, headers, reply.read())
        except urllib.error.HTTPError as exc:
            raise HTTPFailure(exc.code, _detail_of(exc.read() or b""), url) from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLError):
                raise TLSFailure(str(reason), url) from exc
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise ServerTimeout(f"no answer within {limit:g} s", url, limit) from exc
            raise ConnectionFailed(str(reason), url) from exc
        except TimeoutError as exc:
            raise ServerTimeout(f"no answer within {limit:g} s", url, limit) from exc
        except ssl.SSLError as exc:
            raise TLSFailure(str(exc), url) from exc
        except (ConnectionError, OSError) as exc:
            raise ConnectionFailed(str(exc), url) from exc

    def _json(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        payload: Any = None,
        timeout: float | None = None,
    ) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        request = self.build_request(method, path, query, body, "application/json" if body is not None else None)
        return self.send(request, timeout).json()

    def _object(self, result: Any, what: str) -> dict[str, Any]:
        if not isinstance(result, dict):
            raise BadResponse(f"the server's {what} reply is not a JSON object")
        return result

    def _save(self, part_or_name: Part | str, data: bytes, default: str) -> Path:
        name = part_or_name.filename if isinstance(part_or_name, Part) else part_or_name
        target = self.download_dir / sanitize_filename(name, default)
        target.write_bytes(data)
        return target

    # ---- MONAI Label standard endpoints ---------------------------------------------------------------------------

    def auth(self) -> dict[str, Any]:
        """GET /auth/ (MONAI Label's, public): whether sign-in is needed, the client id and the provider's issuer.
        A server with authentication off may not serve it at all: that is the same as off."""
        try:
            return self._object(self._json("GET", "/auth/"), "/auth/")
        except HTTPFailure as exc:
            if exc.status == 404:
                return {"enabled": False}
            raise

    def info(self) -> dict[str, Any]:
        """GET /info/: models, trainers, strategies, labels and train_stats."""
        result = self._json("GET", "/info/")
        if not isinstance(result, dict):
            raise BadResponse("the server's /info/ reply is not a JSON object")
        return result

    def upload_image(self, path: Path, image_id: str) -> str:
        """PUT /datastore/image: add a volume file to the server's datastore; returns the id it stored."""
        body, ctype = encode_form({"params": "{}"}, {"file": Path(path)})
        request = self.build_request("PUT", "/datastore/image", {"image": image_id}, body, ctype)
        result = self.send(request, self.long_timeout).json()
        return str(result.get("image", image_id)) if isinstance(result, dict) else image_id

    def save_label(
        self, image_id: str, path: Path, tag: str = "final", params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """PUT /datastore/label: submit a finished label for an image.

        `params` is the annotation record the server keeps with the label: annotation_seconds, strategy, session.
        """
        body, ctype = encode_form({"params": json.dumps(params or {})}, {"label": Path(path)})
        request = self.build_request("PUT", "/datastore/label", {"image": image_id, "tag": tag}, body, ctype)
        return self.send(request, self.long_timeout).json()

    def download_image(self, image_id: str) -> Path:
        """GET /datastore/image: fetch a volume file into our temp folder, under a sanitised name."""
        request = self.build_request("GET", "/datastore/image", {"image": image_id})
        reply = self.send(request, self.long_timeout)
        name = _filename_from_disposition(reply.headers.get("content-disposition")) or f"{image_id}.nii.gz"
        return self._save(name, reply.body, f"{sanitize_filename(image_id, 'image')}.nii.gz")

    def infer(self, model: str, image_id: str, params: dict[str, Any]) -> InferResult:
        """POST /infer/{model}?output=all: the label file and the server's params (fm, adapter, timing)."""
        body, ctype = encode_form({"params": json.dumps(params)}, {})
        query = {"image": image_id, "output": "all"}
        request = self.build_request("POST", f"/infer/{urllib.parse.quote(model)}", query, body, ctype)
        reply = self.send(request, self.long_timeout)
        reply_type = reply.headers.get("content-type", "")
        if not reply_type.startswith("multipart/"):
            # MONAI Label answers with JSON only when the task produced no label file.
            result = reply.json()
            return InferResult(result if isinstance(result, dict) else {}, None)
        try:
            parts = parse_multipart(reply.body, reply_type)
        except ValueError as exc:
            raise BadResponse(f"the server's inference reply could not be read ({exc})") from exc
        result_params: dict[str, Any] = {}
        label_path: Path | None = None
        extra: dict[str, Path] = {}
        for part in parts:
            if part.name == "params":
                try:
                    loaded = json.loads(part.data.decode("utf-8") or "{}")
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise BadResponse(f"the server's inference params are not valid JSON ({exc})") from exc
                result_params = loaded if isinstance(loaded, dict) else {}
            elif part.name == "image":
                label_path = self._save(part, part.data, "label.nii.gz")
            elif part.filename:
                extra[part.name] = self._save(part, part.data, f"{sanitize_filename(part.name)}.bin")
        return InferResult(result_params, label_path, extra)

    def start_training(self, params: dict[str, Any], trainer: str = TRAINER) -> dict[str, Any]:
        """POST /train/{trainer}: start adaptation with method, epochs, rank..."""
        return self._json("POST", f"/train/{urllib.parse.quote(trainer)}", payload=params)

    def training_status(self) -> dict[str, Any]:
        """GET /train/: status (RUNNING/DONE/ERROR) and log lines of the latest training task."""
        return self._json("GET", "/train/")

    def stop_training(self) -> dict[str, Any]:
        """DELETE /train/: stop the running training task."""
        return self._json("DELETE", "/train/")

    def next_sample(self, strategy: str, seed: int | None = None) -> dict[str, Any]:
        """POST /activelearning/{strategy}: the image the server wants labelled next and why.

        The reply names the strategy in "chosen_by" (MONAI Label overwrites "strategy" with image info) and
        explains itself in "reason"; an empty pool (every image labelled) is {}.
        """
        payload = {} if seed is None else {"seed": int(seed)}
        result = self._json(
            "POST", f"/activelearning/{urllib.parse.quote(strategy)}", payload=payload, timeout=self.long_timeout
        )
        return self._object(result or {}, "active-learning")

    def download_result(self, url: str) -> Path:
        """GET a result file the server named in an answer (an uncertainty map under /medfm/results/)."""
        parts = urllib.parse.urlsplit(url)
        base = urllib.parse.urlsplit(self.base_url)
        if (parts.scheme or parts.netloc) and (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            raise BadResponse(f"the server named a result on another host ({url}); not fetched")
        if not parts.path.startswith(RESULTS) or ".." in parts.path.split("/"):
            raise BadResponse(f"the server named a result outside {RESULTS} ({url}); not fetched")
        request = self.build_request("GET", parts.path)
        reply = self.send(request, self.long_timeout)
        name = parts.path.rsplit("/", 1)[-1]
        return self._save(name, reply.body, "result.nii.gz")

    # ---- adapter registry (the MedFMAdapt server's /medfm routes) -------------------------------------------------

    def registry(self) -> dict[str, Any]:
        """GET /medfm/adapters: {"fm", "active" (a version or "base"), "history", "adapters": [...]}."""
        return self._object(self._json("GET", REGISTRY), "adapter registry")

    def list_adapters(self) -> list[dict[str, Any]]:
        """The "adapters" rows of GET /medfm/adapters: version, method, metrics, "active" flag, decision."""
        adapters = self.registry().get("adapters") or []
        return [a for a in adapters if isinstance(a, dict)]

    def get_adapter(self, version: str) -> dict[str, Any]:
        """GET /medfm/adapters/{version}: {"manifest", "active", "decision", "evaluations"}."""
        return self._object(self._json("GET", f"{REGISTRY}/{urllib.parse.quote(version)}"), "adapter")

    def activate_adapter(self, version: str) -> dict[str, Any]:
        """POST /medfm/adapters/{version}/activate: make this version the one inference uses; {"active": ...}."""
        return self._json("POST", f"{REGISTRY}/{urllib.parse.quote(version)}/activate", payload={})

    def rollback_adapter(self) -> dict[str, Any]:
        """POST /medfm/adapters/rollback: go back to the previously active version; {"active": ...}."""
        return self._json("POST", f"{REGISTRY}/rollback", payload={})

    def evaluate_adapter(self, version: str, mode: str = "interactive", jitter: int = 3) -> dict[str, Any]:
        """POST /medfm/adapters/{version}/evaluate: Dice and HD95 per held-out image and label, and the means."""
        query = {"mode": mode, "jitter": str(int(jitter))}
        path = f"{REGISTRY}/{urllib.parse.quote(version)}/evaluate"
        return self._object(self._json("POST", path, query, payload={}, timeout=self.long_timeout), "evaluation")

    def compare_adapters(self, base: str, candidate: str, mode: str = "interactive") -> dict[str, Any]:
        """GET /medfm/adapters/compare: per-image held-out Dice of `base` (a) and `candidate` (b), and the verdict."""
        query = {"a": base, "b": candidate, "mode": mode}
        return self._object(self._json("GET", f"{REGISTRY}/compare", query, timeout=self.long_timeout), "comparison")

    def set_heldout(self, images: list[str], held_out: bool = True) -> list[str]:
        """PUT /medfm/heldout: mark labelled images as held-out (or undo); returns every held-out image."""
        result = self._json("PUT", "/medfm/heldout", payload={"images": list(images), "held_out": bool(held_out)})
        return list(self._object(result, "held-out").get("held_out") or [])

    def heldout(self) -> list[str]:
        """GET /medfm/heldout: the held-out images (evaluated on, never trained on)."""
        return list(self._object(self._json("GET", "/medfm/heldout"), "held-out").get("held_out") or [])

    def sessions(self) -> dict[str, Any]:
        """GET /medfm/sessions: annotation sessions (labels, seconds, labels per hour) and Dice against labels."""
        return self._object(self._json("GET", "/medfm/sessions"), "sessions")
