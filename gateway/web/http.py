"""The HTTP listener's routes: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` says the process is alive (the event loop answers). ``/readyz`` says it can
take mail: the store answers, policies are loaded, the submission listener is bound and
the spool is not full. Load balancers use ``/readyz``; restarts are decided on
``/healthz``. The admin API (``admin/api.py``), the dealers' status pages
(``web/status.py``) and the unsubscribe links (``web/unsubscribe.py``) are mounted next to
them by the application.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.metrics import Metrics

ReadinessProbe = Callable[[], Awaitable[dict[str, str]]]


def build_app(
    metrics: Metrics,
    readiness: ReadinessProbe,
    routes: Sequence[BaseRoute] = (),
    before_scrape: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    """Build the Starlette application; ``readiness`` returns failing components.

    ``routes`` are added after the built-in ones; ``before_scrape`` refreshes gauges that
    are computed from the store (it must not raise).
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

    return Starlette(
        routes=[
            Route("/metrics", metrics_route),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            *routes,
        ]
    )
