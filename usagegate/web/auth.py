"""Sign-in, sign-out and the two checks every dashboard route makes: signed in, and CSRF on POST.

Sign-in takes a usagegate key (form field `key`) and answers with an HttpOnly, SameSite=Lax
session cookie holding only a random token (sessions.py). The sign-in form itself is protected
with a double-submit token (a short-lived cookie that must match the form field), every other
form with the session's own token.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from usagegate.api.auth import context
from usagegate.web.render import page
from usagegate.web.sessions import LIFETIME_S, Session, close_session, find_session, open_session

router = APIRouter()

SESSION_COOKIE = "usagegate_session"
LOGIN_CSRF_COOKIE = "usagegate_login_csrf"


class LoginRequired(Exception):
    """Raised by `signed_in`; the handler redirects to /login?next=<path>."""


class CsrfRejected(Exception):
    """A POST without the right CSRF token; answered 403."""


def signed_in(request: Request) -> Session:
    """The caller's session; raises LoginRequired without a live one."""
    token = request.cookies.get(SESSION_COOKIE, "")
    session = find_session(context(request).config.conn, token) if token else None
    if session is None:
        raise LoginRequired()
    return session


async def checked_form(request: Request, session: Session) -> FormData:
    """The POSTed form, after checking its `csrf` field against the session's token."""
    form = await request.form()
    token = form.get("csrf")
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise CsrfRejected()
    return form


def login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?next=" + quote(target, safe="")


def _safe_next(value: str | None) -> str:
    # Only same-site paths: "//evil.example" and "/\evil" would leave the site.
    if value and value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return "/users"


def _login_page(request: Request, next_path: str, error: str | None = None, status: int = 200) -> Response:
    csrf = secrets.token_urlsafe(32)
    response = page(request, "login.html", {"csrf": csrf, "next": next_path, "error": error}, status)
    response.set_cookie(LOGIN_CSRF_COOKIE, csrf, max_age=3600, path="/login", httponly=True, samesite="strict")
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    next_path = _safe_next(request.query_params.get("next"))
    token = request.cookies.get(SESSION_COOKIE, "")
    if token and find_session(context(request).config.conn, token):
        return RedirectResponse(next_path, status_code=303)
    return _login_page(request, next_path)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    key = str(form.get("key", "")).strip()
    csrf = str(form.get("csrf", ""))
    next_path = _safe_next(str(form.get("next", "")))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(csrf.encode(), expected.encode()):
        raise CsrfRejected()
    token = open_session(context(request).config.conn, key) if key else None
    if token is None:
        return _login_page(request, next_path, "That key is not a valid usagegate key (or it was revoked).", 401)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=LIFETIME_S, path="/", httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = signed_in(request)
    await checked_form(request, session)
    close_session(context(request).config.conn, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
