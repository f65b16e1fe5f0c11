"""The check page of a dealer's status site: ``/status/<dealer>/<token>/check``.

A manager pastes a template's HTML (and its subject) or uploads an ``.eml`` or ``.html``
export from the CRM, and sees what the gateway would do with it: the verdict, and each
finding with why it matters, how to fix it and where it is, the problem parts marked in
escaped excerpts (the unfilled field in its context, the attachment that would be held or
removed, the point where Gmail clips the HTML). The same core as ``POST /api/check``
(``gateway/preflight``): the dealer's own policy, nothing stored or sent.

The page is server-rendered HTML and needs no script: a plain form POST
(``multipart/form-data``, or ``application/x-www-form-urlencoded`` for a paste), read no
further than the submission size limit plus the form's own overhead. What is handed in is
never rendered: it is parsed by the checks and shown only as escaped text, under the
public listener's Content-Security-Policy, which allows no script at all (``web/http.py``).

The same path answers JSON (what ``POST /api/check`` answers) to a POST of
``application/json``, ``message/rfc822`` or ``text/html``: the dealer's own check API,
authorised by the signed token in the path, on the listener a dealer can reach.

CSRF: the path carries the dealer's signed token (``web/status.py``), which another site
cannot know, and a form POST must come from this site: ``Sec-Fetch-Site: same-origin``
(Fetch Metadata, sent by current browsers), or else an ``Origin`` (without one, a
``Referer``) that is the status site's own (``http.public_url``) or the host the request
was sent to. The page sets its referrer policy to ``same-origin`` (a ``<meta>``, over the
listener's ``no-referrer``) so that browsers send a real ``Origin`` with the form: under
``no-referrer`` they send ``Origin: null``, which is refused. The JSON types are not ones a
cross-site form can send, and a cross-site script needs a CORS preflight, never granted;
a check changes nothing anyway.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterator
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.admin import views
from gateway.admin.bodies import CheckBody
from gateway.admin.handlers import check_submission
from gateway.admin.ops import AdminError, AdminOps, InvalidRequest
from gateway.policy.model import DealerPolicy
from gateway.preflight.core import Checked, Item, Location, Submission
from gateway.web.status import StatusLinks

log = logging.getLogger("gateway.admin")

FORM_OVERHEAD = 1024 * 1024  # the subject, the pasted HTML and multipart framing
_HEADER_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*:[ \t]")

_STYLE = (
    "*{box-sizing:border-box}"
    "body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1a1a1a;background:#fff}"
    "main{max-width:960px;margin:0 auto;padding:16px}"
    "h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.3em;margin:1.2em 0 .4em}"
    "h3{font-size:1.1em;margin:0 0 .3em}"
    "a{color:#0b57d0}.muted{color:#555}"
    "label{display:block;font-weight:600;margin:.8em 0 .2em}"
    "input[type=text],textarea{width:100%;font:inherit;padding:8px;border:1px solid #767676;"
    "border-radius:4px}textarea{font-family:ui-monospace,monospace;font-size:14px}"
    "input[type=file]{font:inherit;max-width:100%}"
    ".check{display:flex;gap:8px;align-items:flex-start;font-weight:400}"
    ".check input{margin-top:.35em}"
    "button{font:inherit;font-weight:600;margin-top:1em;padding:10px 22px;border:0;"
    "border-radius:4px;background:#0b57d0;color:#fff;cursor:pointer}"
    "button:focus,input:focus,textarea:focus{outline:3px solid #f9a825;outline-offset:1px}"
    ".verdict{padding:12px 16px;border-radius:6px;border-left:8px solid;margin:8px 0}"
    ".v-ok{background:#e8f5e9;border-color:#1b5e20;color:#1b5e20}"
    ".v-warning{background:#fff3e0;border-color:#8a4b00;color:#5f3300}"
    ".v-error{background:#ffebee;border-color:#b71c1c;color:#7f1010}"
    ".finding{border:1px solid #ccc;border-radius:6px;padding:12px 14px;margin:12px 0}"
    ".badge{display:inline-block;font-size:.8em;font-weight:700;padding:1px 8px;"
    "border-radius:10px;margin-right:6px;vertical-align:middle}"
    ".b-info{background:#e3f2fd;color:#0d3c61}.b-warning{background:#fff3e0;color:#5f3300}"
    ".b-error{background:#ffebee;color:#7f1010}"
    "dl{margin:.4em 0}dt{font-weight:700;margin-top:.3em}dd{margin:0 0 .2em 0}"
    ".excerpt{background:#f6f8fa;border:1px solid #d0d7de;border-radius:4px;padding:8px;"
    "font:14px/1.45 ui-monospace,monospace;white-space:pre-wrap;word-break:break-word;"
    "overflow-wrap:anywhere;margin:.3em 0}"
    "mark{background:#ffeb3b;color:#000;padding:0 2px;border-radius:2px;font-weight:700}"
    "mark.clip{background:#b71c1c;color:#fff}"
    ".where{font-size:.9em;color:#444}"
    "code{font-family:ui-monospace,monospace;overflow-wrap:anywhere}"
)
# The public listener adds the security headers (CSP without script, no framing: web/http.py).
_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex, nofollow"}
_API_TYPES = ("application/json", "message/rfc822", "text/html")
_NOT_FOUND = "<!doctype html><title>Not found</title><p>This status link is not valid.</p>\n"

_BANNER = {"ok": "v-ok", "warning": "v-warning", "error": "v-error"}


def check_routes(ops: AdminOps, links: StatusLinks) -> list[BaseRoute]:
    """The check page route, beside the status page's."""

    async def page(request: Request) -> Response:
        dealer_id = str(request.path_params["dealer"])
        token = str(request.path_params["token"])
        policy = ops.policies.current.dealer(dealer_id)
        if not links.valid(dealer_id, token) or policy is None or ops.preflight is None:
            return HTMLResponse(_NOT_FOUND, status_code=404, headers=_HEADERS)
        status_path = links.path(dealer_id)
        name = policy.name or dealer_id
        if request.method == "GET":
            return HTMLResponse(render_page(name, status_path), headers=_HEADERS)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in _API_TYPES:
            return await api(request, content_type, ops, policy)
        if not same_origin(request, links.base_url):
            return HTMLResponse(
                render_page(name, status_path, error="This form can only be sent from its page."),
                status_code=403,
                headers=_HEADERS,
            )
        limit = ops.preflight.max_bytes + FORM_OVERHEAD
        try:
            body = await _read(request, limit)
        except _TooLarge:
            message = (
                f"That is more than {limit // 1_000_000} MB; the gateway accepts messages "
                f"of up to {ops.preflight.max_bytes // 1_000_000} MB."
            )
            return HTMLResponse(
                render_page(name, status_path, error=message), status_code=413, headers=_HEADERS
            )
        form = parse_form(request.headers.get("content-type", ""), body)
        submission = submission_of(form)
        if submission is None:
            return HTMLResponse(
                render_page(name, status_path, error="Paste the HTML or choose a file first."),
                status_code=400,
                headers=_HEADERS,
            )
        checked = await ops.preflight.check(policy, submission)
        codes = ",".join(i.finding.code for i in checked.items) or "-"
        log.info("check page dealer=%s size=%d verdict=%s findings=%s",
                 dealer_id, checked.size, checked.action.label, codes)  # fmt: skip
        form.pop("file", None)
        return HTMLResponse(
            render_page(name, status_path, checked=checked, form=form), headers=_HEADERS
        )

    return [Route("/status/{dealer}/{token}/check", page, methods=["GET", "POST"])]


async def api(request: Request, content_type: str, ops: AdminOps, policy: DealerPolicy) -> Response:
    """The JSON answer of ``POST /api/check``, for the dealer the path's token names."""
    assert ops.preflight is not None
    limit = ops.preflight.max_bytes * 4 // 3 + FORM_OVERHEAD
    try:
        raw = await _read(request, limit)
    except _TooLarge:
        return _json_error(413, f"the body is larger than {limit} bytes, the most read here")
    try:
        is_json = content_type == "application/json"
        body = CheckBody.model_validate_json(raw or b"{}") if is_json else None
        subject = request.query_params.get("subject", "")
        submission = check_submission(content_type, raw, subject, body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return _json_error(400, problems)
    except InvalidRequest as exc:
        return _json_error(400, str(exc))
    checked = await ops.preflight.check(policy, submission)
    return JSONResponse(views.checked_json(checked), headers=_HEADERS)


def _json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=_HEADERS)


# -- the request ----------------------------------------------------------------------------


def same_origin(request: Request, base_url: str) -> bool:
    """Whether a form POST comes from a page of this site (see the module docstring)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site == "same-origin"
    origin = request.headers.get("origin") or ""
    if not origin or origin == "null":
        referer = request.headers.get("referer") or ""
        if origin == "null" or not referer:
            return False
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    claimed = urlsplit(origin)
    if not claimed.scheme or not claimed.netloc:
        return False
    ours = urlsplit(base_url) if base_url else None
    if ours is not None and (claimed.scheme, claimed.netloc) == (ours.scheme, ours.netloc):
        return True
    # Behind a proxy that terminates TLS the scheme seen here differs; the host does not.
    return claimed.netloc.lower() == request.headers.get("host", "").lower()


class _TooLarge(AdminError):
    """The body is larger than the page reads (answered 413)."""

    status = 413


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def parse_form(content_type: str, body: bytes) -> dict[str, str | tuple[str, bytes]]:
    """The form's fields: text as ``str``, an upload as ``(file name, bytes)``.

    ``multipart/form-data`` (RFC 7578) is split on its boundary here, byte for byte: a
    MIME parser would read an uploaded ``message/rfc822`` part as a message and lose its
    bytes. Only each part's header block goes through the header parser. Anything else is
    read as ``application/x-www-form-urlencoded``. The first value of a name counts.
    """
    fields: dict[str, str | tuple[str, bytes]] = {}
    params = _header_params("Content-Type", content_type)
    if params.get_content_type() == "multipart/form-data":
        boundary = params.get_param("boundary")
        if not isinstance(boundary, str) or not boundary:
            return fields
        for head, data in _multipart(body, boundary.encode("latin-1", "replace")):
            disposition = _header_params("Content-Disposition", head.get("content-disposition", ""))
            name = disposition.get_param("name", header="content-disposition")
            if not isinstance(name, str) or name in fields:
                continue
            filename = disposition.get_filename()
            if filename is not None:  # some browsers send a whole path
                filename = filename.replace("\\", "/").rsplit("/", 1)[-1]
            fields[name] = (
                (filename, data) if filename is not None else data.decode("utf-8", "replace")
            )
        return fields
    for key, values in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items():
        fields[key] = values[0]
    return fields


def _header_params(name: str, value: str) -> Message:
    """A header parsed on its own, to read its parameters (RFC 2231 included)."""
    return BytesParser(policy=HTTP).parsebytes(
        f"{name}: {value}\r\n\r\n".encode("utf-8", "replace"), headersonly=True
    )


def _multipart(body: bytes, boundary: bytes) -> Iterator[tuple[Message, bytes]]:
    """Each part's header block (parsed) and its bytes (RFC 2046 §5.1.1 delimiters)."""
    delimiter = b"--" + boundary
    chunks = (b"\r\n" + body).split(b"\r\n" + delimiter)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):  # the close delimiter
            return
        # the rest of the delimiter line (transport padding), then the part
        _, _, part = chunk.partition(b"\r\n")
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            head, data = (b"", part[2:]) if part.startswith(b"\r\n") else (part, b"")
        yield BytesParser(policy=HTTP).parsebytes(head + b"\r\n\r\n", headersonly=True), data


def _text(form: dict[str, str | tuple[str, bytes]], name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def looks_like_message(text: str) -> bool:
    """Whether pasted text is a whole message (header lines, then a blank line)."""
    stripped = text.lstrip("\ufeff")
    return bool(_HEADER_LINE.match(stripped)) and ("\n\n" in stripped or "\r\n\r\n" in stripped)


def submission_of(form: dict[str, str | tuple[str, bytes]]) -> Submission | None:
    """What to check: the uploaded file if there is one, else the pasted text."""
    subject = _text(form, "subject")
    with_text = _text(form, "with_text") in ("1", "on", "yes")
    upload = form.get("file")
    if isinstance(upload, tuple) and upload[1].strip():
        filename, data = upload
        lower = filename.lower()
        is_html = lower.endswith((".html", ".htm")) or (
            not lower.endswith(".eml") and data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<"
        )
        if is_html:
            text = data.decode("utf-8", "replace")
            return Submission(html=text, subject=subject, with_text=with_text, name=filename)
        return Submission(raw=data, name=filename)
    pasted = _text(form, "html")
    if not pasted.strip():
        return None
    if looks_like_message(pasted):
        return Submission(raw=pasted.encode("utf-8"), name="pasted message")
    return Submission(html=pasted, subject=subject, with_text=with_text)


# -- the page -------------------------------------------------------------------------------

esc = html.escape


_WORDS = {"html": "HTML", "gmail": "Gmail"}


def _title(code: str) -> str:
    words = [_WORDS.get(w, w) for w in code.split("-")]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def _level(checked: Checked) -> str:
    worst = max((i.severity for i in checked.items), key=_rank, default="info")
    if checked.refused or checked.error:
        return "error"
    return {"info": "ok", "warning": "warning", "error": "error"}[worst]


def _rank(severity: str) -> int:
    return {"info": 0, "warning": 1, "error": 2}.get(severity, 0)


def _location(loc: Location) -> str:
    where = esc(loc.where) + (f", line {loc.line}" if loc.line else "")
    if loc.kind == "attachment":
        kind = f" ({esc(loc.after)})" if loc.after else ""
        return (
            f"<li class='loc loc-attachment'><span class='where'>Attachment</span> "
            f"<mark>{esc(loc.text)}</mark>{kind}: {esc(loc.note)}.</li>"
        )
    if loc.kind == "clipping":
        point = f"Gmail clips here (byte {loc.offset:,})" if loc.offset else "Gmail clips here"
        return (
            f"<li class='loc loc-clipping'><span class='where'>{where}</span>"
            f"<pre class='excerpt'>{esc(loc.before)}<mark class='clip'>✂ {esc(point)}</mark>"
            f"{esc(loc.after)}</pre>{esc(loc.note[:1].upper() + loc.note[1:])}.</li>"
        )
    if loc.kind in ("field", "link"):
        return (
            f"<li class='loc loc-{loc.kind}'><span class='where'>{where}</span>"
            f"<pre class='excerpt'>{esc(loc.before)}<mark>{esc(loc.text)}</mark>"
            f"{esc(loc.after)}</pre></li>"
        )
    note = f" ({esc(loc.note)})" if loc.note else ""
    return (
        f"<li class='loc loc-{loc.kind}'><span class='where'>{where}</span> "
        f"<code>{esc(loc.text)}</code>{note}</li>"
    )


def _finding(item: Item, number: int) -> str:
    code = item.finding.code
    parts = [
        f"<article class='finding' id='finding-{number}' aria-labelledby='finding-{number}-h'>",
        f"<h3 id='finding-{number}-h'><span class='badge b-{item.severity}'>{item.severity}"
        f"</span>{esc(_title(code))} <code class='muted'>{esc(code)}</code></h3>",
        # The detail may start with a file name or an address: quoted as it is.
        f"<p>Found: {esc(item.finding.detail)}.</p>",
        "<dl>",
        f"<dt>What the gateway would do</dt><dd>{esc(_action_words(item))}</dd>",
    ]
    if item.why:
        parts.append(f"<dt>Why it matters</dt><dd>{esc(item.why)}</dd>")
    if item.fix:
        parts.append(f"<dt>How to fix it</dt><dd>{esc(item.fix)}</dd>")
    parts.append("</dl>")
    if item.locations:
        parts.append("<p><b>Where</b></p><ul class='locations'>")
        parts += [_location(loc) for loc in item.locations]
        parts.append("</ul>")
    parts.append("</article>")
    return "".join(parts)


def _action_words(item: Item) -> str:
    return {
        "accept": "Deliver it and note the finding.",
        "tag": "Deliver it, with a header naming the finding.",
        "repair": "Repair the message, then deliver it.",
        "hold": "Hold the message: it is not delivered until an operator releases it.",
        "drop": "Leave that recipient out.",
        "tempfail": "Ask the CRM to try again later (4xx).",
        "reject": "Refuse the message (5xx): the CRM records a failure.",
    }.get(item.action.label, item.action.label)


def _results(checked: Checked) -> str:
    level = _level(checked)
    what = f" <b>{esc(checked.name)}</b>" if checked.name else " the pasted HTML"
    subject = f" (subject: “{esc(checked.subject)}”)" if checked.subject else ""
    parts = [
        "<section id='results' aria-labelledby='results-h'><h2 id='results-h'>Result</h2>",
        f"<div class='verdict {_BANNER[level]}' id='verdict' role='status'>"
        f"<b>The gateway would {esc(checked.verdict)}.</b></div>",
        f"<p class='muted'>Checked{what}{subject}: {checked.size:,} bytes, with your "
        "policy as it is now. Nothing was stored or sent.</p>",
    ]
    if checked.refused:
        parts.append(f"<div class='finding' id='refusal'><h3>{esc(checked.refusal_why)}</h3>")
        if checked.refusal_fix:
            parts.append(f"<p><b>How to fix it:</b> {esc(checked.refusal_fix)}</p>")
        if checked.refusal:
            parts.append(f"<p class='muted'>The CRM would hear: <code>{esc(checked.refusal)}"
                         "</code></p>")  # fmt: skip
        parts.append("</div>")
    elif checked.refusal:
        parts.append(f"<p>The CRM would hear: <code>{esc(checked.refusal)}</code></p>")
    if checked.repair_failed:
        parts.append(
            "<p>The repair does not fit this message's structure, so it would be held.</p>"
        )
    if checked.items:
        count = len(checked.items)
        parts.append(f"<h2>{count} finding{'' if count == 1 else 's'}</h2>")
        # What stops the message first, then what changes it, then the notes.
        ordered = sorted(checked.items, key=lambda i: -_rank(i.severity))
        parts += [_finding(item, n) for n, item in enumerate(ordered, start=1)]
    elif not checked.refused:
        parts.append("<p id='no-findings'>No findings: the gateway would pass it as it is.</p>")
    parts.append("</section>")
    return "".join(parts)


def render_page(
    dealer_name: str,
    status_path: str,
    *,
    checked: Checked | None = None,
    form: dict[str, str | tuple[str, bytes]] | None = None,
    error: str = "",
) -> str:
    """The whole page: the form, and the results of a check when there is one."""
    form = form or {}
    subject = esc(_text(form, "subject"))
    pasted = esc(_text(form, "html"))
    with_text = " checked" if _text(form, "with_text") in ("1", "on", "yes") else ""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        # A real Origin on the form's POST (the listener says no-referrer: Origin: null).
        "<meta name='referrer' content='same-origin'>",
        f"<title>Check a message before sending: {esc(dealer_name)}</title>",
        f"<style>{_STYLE}</style></head><body><main>",
        f"<p><a href='{esc(status_path)}'>← Mail status of {esc(dealer_name)}</a></p>",
        "<h1>Check a message before sending</h1>",
        "<p>See what the gateway would do with a template or message from your CRM, before "
        "a customer gets it: the same checks, with your own rules. Nothing you check is "
        "stored or sent.</p>",
    ]
    if error:
        parts.append(
            f"<div class='verdict v-error' id='form-error' role='alert'>{esc(error)}</div>"
        )
    if checked is not None:
        parts.append(_results(checked))
    parts += [
        "<section aria-labelledby='form-h'><h2 id='form-h'>"
        f"{'Check another' if checked else 'What to check'}</h2>",
        "<form method='post' enctype='multipart/form-data'>",
        "<label for='subject'>Subject</label>",
        f"<input type='text' id='subject' name='subject' maxlength='998' value='{subject}'>",
        "<label for='html'>Paste the HTML of the template (or a whole message)</label>",
        f"<textarea id='html' name='html' rows='10' spellcheck='false'>{pasted}</textarea>",
        "<label for='file'>Or upload an export from your CRM (.eml or .html)</label>",
        "<input type='file' id='file' name='file' "
        "accept='.eml,.html,.htm,message/rfc822,text/html'>",
        f"<label class='check' for='with_text'><input type='checkbox' id='with_text' "
        f"name='with_text' value='1'{with_text}>My CRM also sends a plain-text version of the "
        "HTML</label>",
        "<button type='submit'>Check</button>",
        "</form></section></main></body></html>\n",
    ]
    return "".join(parts)
