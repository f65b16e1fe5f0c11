"""The two HTTP listeners' applications: the operators' and the public one.

The operators' listener (``http.listen``) serves ``/metrics``, ``/healthz``, ``/readyz``
and the admin API (``admin/api.py``). ``/healthz`` says the process is alive (the event
loop answers); ``/readyz`` says it can take mail: the store answers, policies are loaded,
the submission listener is bound and the spool is not full. Load balancers use
``/readyz``; restarts are decided on ``/healthz``.

The public listener (``public.listen``) serves what recipients and dealers reach: the
one-click unsubscribe links (``web/unsubscribe.py``) and the dealers' status pages
(``web/status.py``), and nothing else, so a path of the operators' listener is a 404
there, never an answer. Every public response carries security headers: a
Content-Security-Policy with ``frame-ancestors 'none'`` (no framing, so no clickjacking of
the unsubscribe button), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
no-referrer`` (the tokens in the paths must not leak to other sites), and HSTS when the
pages are served over https.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import Metrics

ReadinessProbe = Callable[[], Awaitable[dict[str, str]]]

# The pages are server-rendered with inline styles and inline SVG; no script, no external
# resource, and forms post only to the page's own origin.
PUBLIC_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PUBLIC_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", PUBLIC_CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),  # for browsers without CSP frame-ancestors
    ("Cross-Origin-Opener-Policy", "same-origin"),
)
HSTS = ("Strict-Transport-Security", "max-age=31536000")  # RFC 6797
OPERATOR_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


class SecurityHeaders:
    """ASGI middleware: sets ``headers`` on every HTTP response, replacing same-named ones."""

    def __init__(self, app: ASGIApp, headers: Sequence[tuple[str, str]]) -> None:
        self._app = app
        self._headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        self._names = {k for k, _ in self._headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers to the response start."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k not in self._names]
                message = {**message, "headers": [*kept, *self._headers]}
            await send(message)

        await self._app(scope, receive, send_with_headers)


def build_app(
    metrics: Metrics,
    readiness: ReadinessProbe,
    routes: Sequence[BaseRoute] = (),
    before_scrape: Callable[[], Awaitable[None]] | None = None,
) -> ASGIApp:
    """Build the operators' application; ``readiness`` returns failing components.

    ``routes`` (the admin API) are added after the built-in ones; ``before_scrape``
    refreshes gauges that are computed from the store (it must not raise).
    """

    async def metrics_route(_: Request) -> Response:
        if before_scrape is not None:
            await before_scrape()
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        problems = await readiness()
        if problems:
            return JSONResponse({"ready": False, "problems": problems}, status_code=503)
        return JSONResponse({"ready": True})

    app = Starlette(
        routes=[
            Route("/metrics", metrics_route),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            *routes,
        ]
    )
    return SecurityHeaders(app, OPERATOR_HEADERS)


def build_public_app(routes: Sequence[BaseRoute], *, https: bool) -> ASGIApp:
    """Build the public application: ``routes`` (unsubscribe, status pages) only.

    ``https``: the pages are reached over https (the listener's own TLS, or an https
    ``http.public_url`` in front of it), so browsers are told to keep to it (HSTS).
    """
    headers = [*PUBLIC_HEADERS, HSTS] if https else list(PUBLIC_HEADERS)
    return SecurityHeaders(Starlette(routes=list(routes)), headers)
