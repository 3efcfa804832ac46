"""The dashboard's response hardening: security headers on every response, no caching
of anything but static files, a bounded request body, session cookie flags, Jinja
autoescaping everywhere and debug off whatever the environment says."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, Request, Response, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
MAX_CONTENT_LENGTH = 16 * 1024
SESSION_LIFETIME = timedelta(hours=12)


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, without building a signer for a request that
    carries no session cookie (most API reads): a fresh, empty session is all it gets."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if app.secret_key and self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


def harden(app: Flask) -> None:
    """Apply the hardening to APP."""
    app.session_interface = CookieSessions()
    app.debug = False  # FLASK_DEBUG and the like are ignored: no debugger, ever
    app.config.update(
        DEBUG=False,
        PROPAGATE_EXCEPTIONS=False,
        MAX_CONTENT_LENGTH=MAX_CONTENT_LENGTH,
        SESSION_COOKIE_NAME="unistack_dashboard",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        TEMPLATES_AUTO_RELOAD=False,
    )
    app.jinja_env.autoescape = True  # every template, whatever its file name
    app.after_request(_headers)


def _headers(response: Response) -> Response:
    response.headers.update(HEADERS)
    if not request.path.startswith("/static/"):
        # Pages carry the CSRF token and live status: never cached or replayed.
        response.headers["Cache-Control"] = "no-store"
    return response
