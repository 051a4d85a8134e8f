"""The console's door: a random token printed with the URL. The first request carries it in
the query string and gets it back as an HttpOnly, SameSite=Strict cookie; every later request
must carry that cookie. Forms carry a CSRF token derived from the session token, and a POST
from another origin is refused."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.datastructures import URL, FormData
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

COOKIE = "mxgate_console"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(token: str) -> str:
    return hmac.new(token.encode(), b"csrf", hashlib.sha256).hexdigest()


class CsrfRefused(Exception):  # noqa: N818 -- what the browser is told
    """A form without this session's CSRF token."""


async def checked_form(request: Request, token: str) -> FormData:
    """The posted form, once its CSRF token is this session's."""
    form = await request.form()
    if not hmac.compare_digest(str(form.get("csrf", "")), csrf_token(token)):
        raise CsrfRefused
    return form


class TokenGate(BaseHTTPMiddleware):
    def __init__(self, app: object, token: str) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.token = token

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        given = request.query_params.get("token")
        if given is not None and hmac.compare_digest(given, self.token):
            # the token leaves the address bar (and the history) for the cookie
            query = {k: v for k, v in request.query_params.items() if k != "token"}
            target = URL(request.url.path).include_query_params(**query)
            response = RedirectResponse(str(target), status_code=303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", path="/")
            return response
        cookie = request.cookies.get(COOKIE, "")
        if not hmac.compare_digest(cookie, self.token):
            return PlainTextResponse(
                "403 Forbidden: open the console with the URL `mxgate console` printed "
                "(it carries the token)\n",
                status_code=403,
            )
        if request.method == "POST":  # the form's CSRF token is checked by `checked_form`
            origin = request.headers.get("origin")
            if origin is not None and urlsplit(origin).netloc != request.url.netloc:
                return PlainTextResponse("403 Forbidden: cross-origin form\n", status_code=403)
        page: Response = await call_next(request)
        page.headers["X-Frame-Options"] = "DENY"
        page.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'"
        )
        page.headers["Referrer-Policy"] = "same-origin"  # no-referrer would send Origin: null
        return page
