"""The orchestrator's routers, and how a request that does not validate is answered."""

from __future__ import annotations

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
    """422 naming each invalid field and what is wrong with it, never echoing the input: a
    site's number may not be one JSON can carry back (``1e999`` reads as infinity)."""
    assert isinstance(exc, RequestValidationError)
    errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)
