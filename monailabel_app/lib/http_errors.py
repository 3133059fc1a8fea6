"""Core InputErrors become FastAPI HTTPExceptions: a 4xx with the same plain words, never a bare 500."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException

from lib.medfm.errors import InputError


def http_error(err: InputError) -> HTTPException:
    return HTTPException(status_code=err.status, detail=str(err))


@contextmanager
def plain_errors() -> Iterator[None]:
    try:
        yield
    except InputError as err:
        raise http_error(err) from err
