"""Error answers: a short page (or JSON under /api/ and for the probes) with the status
and what to do, never a stack trace. Unexpected exceptions are logged, answered 500."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger("unistack.dashboard")

_JSON_PATHS = ("/api/", "/health", "/ready", "/metrics")


def install(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)


def answer(code: int, title: str, message: str,
           headers: list[tuple[str, str]] | None = None) -> ResponseReturnValue:
    """An error response in the form the request expects (JSON or a page)."""
    if request.path.startswith(_JSON_PATHS):
        return jsonify({"error": message, "status": code}), code, headers or []
    page = render_template("error.html", code=code, title=title, message=message)
    return page, code, headers or []


def _http_error(error: HTTPException) -> ResponseReturnValue:
    # Keep what the error adds (Allow on a 405, Retry-After on a 429), not its body type.
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    return answer(error.code or 500, error.name, error.description or error.name, headers)


def _unexpected(error: Exception) -> ResponseReturnValue:
    log.exception("unexpected error answering %s %s", request.method, request.path)
    server_error = InternalServerError()
    return answer(500, server_error.name, "the dashboard failed to answer this request; "
                  "the reason is in var/log/dashboard.log")
