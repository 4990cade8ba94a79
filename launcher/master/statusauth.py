"""Who is looking at the status page: the uid of a login token (statustoken.py).

``GET /login?token=T`` checks the token, sets it as an HttpOnly,
SameSite=Strict cookie (so it is sent to this service only, never to scripts)
and redirects to ``/`` (no token left in the address bar or history). Every
other page reads the cookie: no valid cookie, no page (401, saying how to get a
link). The rules after that are the CLI's (users.py): listings for every
user, a job's details for its owner or root, a node's cache contents and boot
log for root.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from aiohttp import web

from launcher.master.statustoken import StatusTokenError, verify

COOKIE = "beolaunch_status"


@dataclass(frozen=True)
class Viewer:
    uid: int

    @property
    def admin(self) -> bool:
        return self.uid == 0

    def may_see_job(self, owner: int) -> bool:
        return self.admin or self.uid == owner


def refusal(status: int, title: str, detail: str) -> web.Response:
    """A small HTML error page."""
    body = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><link rel='stylesheet' href='/static/status.css'>"
        f"</head><body><main><h1>{escape(title)}</h1><p class='refused'>{escape(detail)}</p>"
        "</main></body></html>"
    )
    return web.Response(status=status, text=body, content_type="text/html")


def no_login(why: str) -> web.Response:
    return refusal(
        401,
        "Log in with beostat web",
        f"{why}. Run `beostat web` on the cluster and open the link it prints.",
    )


class StatusAuth:
    """Checks the cookie of each request against the cluster secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def viewer(self, request: web.Request) -> Viewer | web.Response:
        """The request's viewer, or the 401 page to answer instead."""
        token = request.cookies.get(COOKIE)
        if not token:
            return no_login("You are not logged in")
        try:
            return Viewer(verify(self._secret, token))
        except StatusTokenError as exc:
            return no_login(str(exc).split(";")[0].capitalize())

    async def login(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token", "")
        try:
            verify(self._secret, token)
        except StatusTokenError as exc:
            return no_login(str(exc).split(";")[0].capitalize())
        moved = web.HTTPSeeOther("/")
        moved.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
        raise moved

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/login", self.login)]
