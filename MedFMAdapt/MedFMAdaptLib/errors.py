"""Error types the client raises, one per way a server call can fail.

The presenter turns each into a status line, so the panel never shows a traceback.
"""

from __future__ import annotations


class ServerError(Exception):
    """Base class: a server call did not give a usable answer."""

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class ConnectionFailed(ServerError):
    """Nothing answered at the address (refused, unknown host, network down)."""


class ServerTimeout(ServerError):
    """The server accepted the connection but did not answer in time."""

    def __init__(self, message: str, url: str = "", timeout: float = 0.0) -> None:
        super().__init__(message, url)
        self.timeout = timeout


class TLSFailure(ServerError):
    """The server's certificate could not be verified."""


class HTTPFailure(ServerError):
    """The server answered with an HTTP error status; `detail` is its own message."""

    def __init__(self, status: int, detail: str, url: str = "") -> None:
        super().__init__(f"HTTP {status}: {detail}", url)
        self.status = status
        self.detail = detail


class BadResponse(ServerError):
    """The server answered 2xx, but with something this module cannot read (bad JSON, broken multipart)."""


class UnsafeProvider(ServerError):
    """The identity provider the server names cannot be given a password: plain http to another machine, or a
    discovery document naming another issuer than the one the server named."""
