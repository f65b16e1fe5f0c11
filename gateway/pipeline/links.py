"""Check the links of the HTML body (pure).

Three things get mail filtered or distrusted: a ``javascript:`` (or ``vbscript:``,
``data:``) link, which no mail client runs and filters read as an attack; a link whose
visible text is an address other than the one it opens, the classic phishing shape that
content filters score; and an empty link, a button that goes nowhere (usually a merge
field that came out empty). Anchors without ``href`` are not links and are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from gateway.mail.message import ParsedMessage
from gateway.pipeline.base import CheckContext, Finding
from gateway.pipeline.html import links
from gateway.policy.model import DealerPolicy

_SCRIPT_SCHEMES = ("javascript:", "vbscript:", "data:")
_URL_TEXT = re.compile(
    r"^(?:https?://)?((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63})(?::\d+)?(?:[/?#]\S*)?$",
    re.IGNORECASE,
)
_MAX_REPORTED = 3


def _host(url: str) -> str:
    try:
        host = urlsplit(url if "//" in url else f"//{url}").hostname or ""
    except ValueError:
        return ""
    return host.lower().removeprefix("www.")


def link_defect(msg: ParsedMessage, dealer: DealerPolicy, ctx: CheckContext) -> Iterator[Finding]:
    """Find script links, links that show another address than they open, empty links."""
    reported = 0
    for doc in msg.html_parts:
        if "<a" not in doc and "<A" not in doc:
            continue
        for href, text in links(doc):
            if reported >= _MAX_REPORTED:
                return
            if href is None:
                continue
            shown = text[:60] or "(no text)"
            compact = re.sub(r"\s+", "", href).lower()
            if compact.startswith(_SCRIPT_SCHEMES):
                reported += 1
                yield Finding(
                    "link-defect",
                    f"the link {shown!r} runs a script ({href[:40]})",
                    data={"kind": "script", "href": href[:200]},
                )
            elif not href or href == "#":
                reported += 1
                yield Finding(
                    "link-defect",
                    f"the link {shown!r} has an empty address",
                    data={"kind": "empty", "href": href},
                )
            elif (shown_url := _URL_TEXT.match(text)) is not None and compact.startswith(
                ("http:", "https:")
            ):
                shown_host = shown_url.group(1).lower().removeprefix("www.")
                real_host = _host(href)
                if real_host and shown_host != real_host:
                    reported += 1
                    yield Finding(
                        "link-defect",
                        f"the link shows {shown_host} but opens {real_host}",
                        data={"kind": "mismatch", "shown": shown_host, "href": href[:200]},
                    )
