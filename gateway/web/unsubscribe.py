"""The one-click unsubscribe routes on the HTTP listener: ``GET`` and ``POST /u/{token}``.

RFC 8058 §3.2: the mailbox provider POSTs ``List-Unsubscribe=One-Click`` to the URL, with
no cookies and no redirects followed, and expects a 2xx; the POST unsubscribes at once.
A GET (a person opening the link, or a scanner fetching it) only shows a page with a
button that POSTs. A forged or malformed token gets 404 and changes nothing; a token
used before gets the same 200 as the first time.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway.errors import StorageError
from gateway.unsubscribe.service import Unsubscribes, page

__all__ = ["unsubscribe_routes"]

_INVALID = page(
    "Link not valid", "This unsubscribe link is not valid. Please use the link in the message."
)


def unsubscribe_routes(unsubscribes: Unsubscribes) -> list[Route]:
    """The routes; mount them on the listener the public base URL points at."""

    async def one_click(request: Request) -> Response:
        token = str(request.path_params["token"])
        wanted = unsubscribes.verify(token)
        if wanted is None:
            return HTMLResponse(_INVALID, status_code=404)
        if request.method == "GET":
            return HTMLResponse(
                page(
                    "Unsubscribe",
                    f"Stop commercial e-mail from this sender to {wanted.recipient}?",
                    action=request.url.path,
                )
            )
        peer = request.client.host if request.client else "unknown"
        try:
            await unsubscribes.unsubscribe(wanted, source=f"one-click:{peer}")
        except StorageError:
            return HTMLResponse(
                page("Please try again", "We could not record your request just now."),
                status_code=503,
                headers={"Retry-After": "60"},
            )
        return HTMLResponse(
            page("Unsubscribed", f"{wanted.recipient} will get no more of this mail.")
        )

    return [Route("/u/{token}", one_click, methods=["GET", "POST"])]
