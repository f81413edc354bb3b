"""Errors of the operator API as RFC 9457 problem details (``application/problem+json``).

Every error answer is ``{"type", "title", "status", "detail", "instance"}`` plus ``reason`` (a stable machine code,
also the last part of ``type``) and, for a request that fails validation, ``errors`` (where and why). Routes raise
``HTTPException(status, "message")`` or ``HTTPException(status, {"reason": ..., "message": ...})``.

One exception, for terminals already in the field: ``POST /api/provision`` keeps ``detail`` as the object
``{"reason", "message"}`` that ``agent.provision`` reads (RFC 9457 readers ignore a ``detail`` that is not a string,
and find ``reason`` at the top level like everywhere else).

Dashboard pages (``/dashboard``) get HTML instead: a login redirect for 401, a short error page otherwise.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from markupsafe import escape
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:jiapei:problem:"
#: Paths whose ``detail`` stays an object for clients shipped before problem details (see the module docstring).
LEGACY_DETAIL_PATHS = frozenset({"/api/provision"})
MAX_ERRORS_LISTED = 20


def _reason_for(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def problem(request: Request, status: int, detail: str, reason: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> Response:  # fmt: skip
    reason = reason or _reason_for(status)
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    if request.url.path.startswith(("/dashboard", "/student")):
        return _html_error(request, status, title, detail, headers)
    body: dict[str, Any] = {"type": TYPE_PREFIX + reason, "title": title, "status": status, "detail": detail,
                            "instance": request.url.path, "reason": reason, **extra}  # fmt: skip
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _html_error(request: Request, status: int, title: str, detail: str, headers: dict[str, str] | None) -> Response:
    student = request.url.path.startswith("/student")
    if status == 401:
        if student:
            return RedirectResponse("/student/login", status_code=303)
        return RedirectResponse(f"/dashboard/login?next={request.url.path}", status_code=303)
    back = "<p><a href='/student/home'>← 返回</a></p>" if student else "<p><a href='/dashboard/'>← dashboard</a></p>"
    page = (f"<!doctype html><html lang='zh'><head><meta charset='utf-8'><title>{status} {escape(title)}</title>"
            "<link rel='icon' href='data:,'><link rel='stylesheet' href='/static/dashboard.css'></head>"
            "<body><main class='error'>"
            f"<h1>{status} {escape(title)}</h1><p>{escape(detail)}</p>"
            f"{back}</main></body></html>")  # fmt: skip
    return HTMLResponse(page, status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    d = exc.detail
    headers = dict(exc.headers) if exc.headers else None
    if isinstance(d, dict):
        reason, message = str(d.get("reason") or _reason_for(exc.status_code)), str(d.get("message") or d)
        if request.url.path in LEGACY_DETAIL_PATHS:
            r = problem(request, exc.status_code, message, reason, headers)
            if isinstance(r, JSONResponse):
                import json

                body = json.loads(bytes(r.body))
                body["detail"] = d
                return JSONResponse(body, status_code=exc.status_code, headers=headers,
                                    media_type=PROBLEM_MEDIA_TYPE)  # fmt: skip
            return r
        return problem(request, exc.status_code, message, reason, headers)
    return problem(request, exc.status_code, str(d), None, headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in exc.errors()[:MAX_ERRORS_LISTED]]  # fmt: skip
    where = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:3])
    return problem(request, 422, f"the request is not valid: {where}", "invalid_request", errors=errors)


async def _conflict(request: Request, exc: Exception) -> Response:
    return problem(request, 409, f"conflicts with stored data: {type(exc).__name__}", "conflict")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(request, 500, "internal error; it has been logged", "internal_error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(IntegrityError, _conflict)
    app.add_exception_handler(Exception, _unexpected)
