"""The contacts' unsubscribe link of the deliverability report: ``/u/reports/<dealer>``.

``?to=<address>&t=<token>`` (``gateway/reports/links.py``). As with the customers'
one-click links (RFC 8058 §3.2): a GET only shows a page with a button, since link
scanners and previews fetch links; a POST (the button, or a mail client's one-click
``List-Unsubscribe=One-Click``) stops the reports to that contact at once. The page
after offers to start them again (a POST with ``resubscribe=1``). A wrong token, an
unknown dealer or an address that is not one of its contacts gets the same 404.
"""

from __future__ import annotations

from html import escape
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.clock import Clock
from gateway.errors import StorageError
from gateway.policy.store import PolicyStore
from gateway.reports.links import ReportLinks
from gateway.storage.base import Storage

# The public listener adds the security headers (CSP, no referrer, no framing: web/http.py).
_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex, nofollow"}
MAX_FORM = 4096


def _page(title: str, text: str, action: str = "", button: str = "", extra: str = "") -> str:
    form = ""
    if action:
        form = (
            f"<form method='post' action='{escape(action)}'>{extra}"
            f"<button type='submit'>{escape(button)}</button></form>"
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title></head>"
        "<body style='font:16px/1.5 sans-serif;max-width:36em;margin:2em auto;padding:0 1em'>"
        f"<h1>{escape(title)}</h1><p>{escape(text)}</p>{form}</body></html>\n"
    )


_INVALID = _page("Link not valid", "This link is not valid. Please use the link in the report.")


def report_routes(
    storage: Storage, policies: PolicyStore, links: ReportLinks, clock: Clock
) -> list[BaseRoute]:
    """The unsubscribe route of the reports."""

    async def unsubscribe(request: Request) -> Response:
        dealer_id = str(request.path_params["dealer"])
        address = request.query_params.get("to", "").strip().lower()
        token = request.query_params.get("t", "")
        dealer = policies.current.dealer(dealer_id)
        contacts = {c.lower() for c in dealer.contacts} if dealer else set()
        if dealer is None or address not in contacts or not links.valid(dealer_id, address, token):
            return HTMLResponse(_INVALID, status_code=404, headers=_HEADERS)
        name = dealer.name or dealer_id
        action = str(request.url.path) + "?" + request.url.query
        if request.method == "GET":
            question = f"Stop the deliverability reports of {name} to {address}?"
            page = _page("Stop the mail reports", question, action, "Stop the reports")
            return HTMLResponse(page, headers=_HEADERS)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:  # the form is one field; more is not ours to read
                break
        form = parse_qs(body[:MAX_FORM].decode("utf-8", "replace"))
        again = form.get("resubscribe", [""])[0] == "1"
        try:
            await storage.set_report_optout(dealer.dealer_id, address, not again, clock.now())
        except StorageError:
            return HTMLResponse(
                _page("Please try again", "We could not record your request just now."),
                status_code=503,
                headers={**_HEADERS, "Retry-After": "60"},
            )
        if again:
            text = f"{address} will get the deliverability reports of {name} again."
            return HTMLResponse(_page("Reports restarted", text), headers=_HEADERS)
        text = (
            f"{address} will get no more deliverability reports of {name}. Alerts about a "
            "suspension still reach you."
        )
        again_form = "<input type='hidden' name='resubscribe' value='1'>"
        page = _page("Reports stopped", text, action, "Send me the reports again", again_form)
        return HTMLResponse(page, headers=_HEADERS)

    return [Route("/u/reports/{dealer}", unsubscribe, methods=["GET", "POST"])]
