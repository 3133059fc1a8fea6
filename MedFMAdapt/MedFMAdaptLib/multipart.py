"""multipart/form-data in both directions, standard library only.

Requests are encoded by hand (the format is small); responses are parsed with the `email` package,
because `cgi` is gone from Python 3.13 and Slicer's Python follows CPython releases.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Part:
    """One part of a multipart body; `filename` is already sanitised."""

    name: str
    filename: str | None
    content_type: str
    data: bytes


def sanitize_filename(name: str | None, default: str = "download.bin") -> str:
    """A server-supplied file name reduced to a safe base name.

    The name is used to write into our temporary folder, so any folder part, drive letter,
    or character outside [A-Za-z0-9._-] is dropped; a name left empty or made of dots falls back to `default`.
    """
    if not name:
        return default
    base = name.replace("\\", "/").split("/")[-1]
    base = base.split(":")[-1]
    base = _SAFE_CHARS.sub("_", base).lstrip(".")
    if not base.strip("._"):
        return default
    return base[:200]


def encode_form(fields: dict[str, str], files: dict[str, Path]) -> tuple[bytes, str]:
    """Body and Content-Type header for a form with text fields and file fields."""
    boundary = f"----MedFMAdapt{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for name, value in fields.items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode() + b"\r\n"
        )
    for name, path in files.items():
        path = Path(path)
        safe = sanitize_filename(path.name)
        header = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        chunks.append(header.encode() + path.read_bytes() + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """Split a multipart response into parts; raises ValueError when it is not multipart."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError(f"expected a multipart body, got {content_type!r}")
    parts: list[Part] = []
    for sub in message.iter_parts():
        name = sub.get_param("name", header="content-disposition")
        if name is None:
            continue
        raw_name = sub.get_filename()
        payload = sub.get_payload(decode=True)
        if payload is None:
            payload = b""
        parts.append(
            Part(
                name=str(name),
                filename=sanitize_filename(raw_name) if raw_name else None,
                content_type=sub.get_content_type(),
                data=payload,
            )
        )
    return parts
