"""The one-click unsubscribe routes on the HTTP listener: ``GET`` and ``POST /u/{token}``.

RFC 8058 §3.2: the mailbox provider POSTs ``List-Unsubscribe=One-Click`` to the URL, with
no cookies and no redirects followed, and expects a 2xx; the POST unsubscribes at once.
A GET (a person opening the link, or a scanner fetching it) only shows a page with a
button that POSTs. A forged or malformed token gets 404 and changes nothing; a token
used before gets the same 200 as the first time. The pages name the dealer by its display
name (``name`` in its policy file), so the person knows whose mail they are leaving.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway.errors import StorageError
from gateway.unsubscribe.service import Unsubscribes

__all__ = ["page", "unsubscribe_routes"]

_STYLE = (
    "body{font:17px/1.5 system-ui,sans-serif;color:#222;max-width:34em;margin:3em auto;"
    "padding:0 20px}h1{font-size:1.6em;line-height:1.2}"
    "button{font:inherit;font-weight:600;padding:12px 28px;border:0;border-radius:6px;"
    "background:#1565c0;color:#fff;cursor:pointer}"
    "@media (max-width:600px){body{margin:1.5em auto}button{width:100%}}"
)


def page(title: str, text: str, action: str = "") -> str:
    """A plain HTML page; with ``action``, a button that POSTs the one-click form there."""
    form = ""
    if action:
        form = (
            f'<form method="post" action="{escape(action)}">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1><p>{escape(text)}</p>{form}</body></html>"
    )


_INVALID = page(
    "Link not valid", "This unsubscribe link is not valid. Please use the link in the message."
)


def unsubscribe_routes(
    unsubscribes: Unsubscribes, dealer_name: Callable[[str], str] = str
) -> list[Route]:
    """The routes; mount them on the public listener, which the base URL points at.

    ``dealer_name`` gives the dealer's display name for its id (the id itself when the
    dealer is no longer configured).
    """

    async def one_click(request: Request) -> Response:
        token = str(request.path_params["token"])
        wanted = unsubscribes.verify(token)
        if wanted is None:
            return HTMLResponse(_INVALID, status_code=404)
        name = dealer_name(wanted.dealer_id)
        if request.method == "GET":
            return HTMLResponse(
                page(
                    f"Unsubscribe from {name}",
                    f"Stop marketing e-mail from {name} to {wanted.recipient}? Messages about "
                    "your own appointments and purchases still reach you.",
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
            page(
                "Unsubscribed",
                f"{wanted.recipient} will get no more marketing e-mail from {name}.",
            )
        )

    return [Route("/u/{token}", one_click, methods=["GET", "POST"])]
