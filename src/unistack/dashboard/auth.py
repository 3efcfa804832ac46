"""Operator sign-in and CSRF. A viewer reads everything and controls nothing; an operator
signs in at /login with UNISTACK_OPERATOR_TOKEN (compared in constant time) and gets a
session flag. The session cookie is signed with a key derived from the token (HMAC-
SHA256), so no new secret is stored and a rotated token ends every session. Every POST,
the sign-in included, carries the session's random CSRF token in a hidden field."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue

from unistack.dashboard.components import components

log = logging.getLogger("unistack.dashboard")
bp = Blueprint("auth", __name__)

CSRF_FIELD = "csrf_token"
_KEY_PURPOSE = b"unistack dashboard session key v1"


def secret_key(token: str) -> bytes:
    """Flask's SECRET_KEY for operator TOKEN. Without a token nobody can sign in, and a
    random key (per process) keeps a guessable key from ever signing a session."""
    if not token:
        return secrets.token_bytes(32)
    return hmac.new(token.encode(), _KEY_PURPOSE, hashlib.sha256).digest()


def csrf_token() -> str:
    """This session's CSRF token, made on first use."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def is_operator() -> bool:
    return session.get("operator") is True and bool(
        components().settings.unistack_operator_token)


def _same(supplied: str, expected: str) -> bool:
    return hmac.compare_digest(supplied.encode(), expected.encode())


@bp.before_app_request
def _check_csrf() -> None:
    if request.method != "POST":
        return
    expected = session.get("csrf")
    if not isinstance(expected, str) or not _same(request.form.get(CSRF_FIELD, ""), expected):
        abort(400, "missing or invalid CSRF token: nothing was done. Reload the page and "
                   "submit the form again.")


@bp.app_context_processor
def _template_values() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "csrf_field": CSRF_FIELD, "operator": is_operator()}


@bp.get("/login")
def login_form() -> ResponseReturnValue:
    return render_template("login.html", error="")


@bp.post("/login")
def login() -> ResponseReturnValue:
    token = components().settings.unistack_operator_token
    if not token or not _same(request.form.get("token", ""), token):
        log.warning("operator sign-in refused from %s", request.remote_addr)
        error = ("wrong operator token" if token else
                 "no operator token is configured (UNISTACK_OPERATOR_TOKEN in .env)")
        return render_template("login.html", error=error), 403
    session.clear()  # a new session (and CSRF token) for the operator
    session.permanent = True
    session["operator"] = True
    csrf_token()
    log.info("operator signed in from %s", request.remote_addr)
    return redirect(url_for("views.overview"))


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    session.clear()
    return redirect(url_for("views.overview"))
