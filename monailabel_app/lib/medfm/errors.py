"""Errors the core raises for bad input; the server glue turns them into 4xx responses with the same words."""


class InputError(ValueError):
    """The request or file is wrong; nothing was changed. `status` is the HTTP code the server should answer with."""

    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class NotFoundError(InputError):
    status = 404


class ConflictError(InputError):
    """The request is valid but the server is not in a state to serve it (e.g. auto mode before any adapter)."""

    status = 409
