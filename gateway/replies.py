"""Every SMTP reply the gateway sends, with its RFC 3463 enhanced status code.

Replies are constants (or small functions for replies that name something). The names
say what happened; ``tests/unit/smtp/test_replies.py`` checks that each code agrees with
its class (2xx/4xx/5xx) and that the enhanced code's class matches the basic code's.

aiosmtpd 1.4.6 sends some fixed replies of its own without enhanced codes (for example
``552 Error: Too much mail data``). ``rewrite_builtin`` maps them to ours, so a CRM
always gets an RFC 3463 code and a sentence it can act on.
"""

from __future__ import annotations

from gateway.types import Reply

# -- connection ------------------------------------------------------------------------
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections; try again later")
TOO_MANY_FROM_IP = Reply(421, "4.7.0", "Too many connections from your address; try again later")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down; try again shortly")
TOO_MANY_MESSAGES = Reply(421, "4.7.0", "Too many messages on one connection; please reconnect")
TOO_MANY_AUTH_FAILURES = Reply(
    421, "4.7.0", "Too many failed logins from your address; try again later"
)
PROXY_HEADER_REFUSED = Reply(
    554, "5.7.1", "A PROXY protocol header is accepted only from this gateway's load balancers"
)

# -- authentication (RFC 4954) ---------------------------------------------------------
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_TEMPFAIL = Reply(
    454, "4.7.0", "Temporary authentication failure; try again shortly"
)  # RFC 4954 §6: never 535 for our own outage, or the CRM may disable the account
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
STARTTLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
TOO_MANY_BEFORE_TLS = Reply(
    421, "4.7.0", "Too many commands before STARTTLS; closing the connection"
)
ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested authentication")
AUTH_ALREADY = Reply(503, "5.5.1", "Already authenticated")

# -- envelope ----------------------------------------------------------------------------
OK = Reply(250, "2.1.0", "OK")
RCPT_OK = Reply(250, "2.1.5", "OK")
SPOOL_FULL = Reply(452, "4.3.1", "Insufficient system storage; try again later")
BUSY_WITH_DATA = Reply(
    452, "4.3.1", "Too much mail is arriving at once; please try again in a few minutes"
)
STORAGE_ERROR = Reply(451, "4.3.0", "Temporary local problem storing the message; try again")
NULL_SENDER_REFUSED = Reply(
    553, "5.7.1", "The null sender <> is not allowed for submissions from this dealer"
)
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients; send the rest in another message")
BAD_ADDRESS_SYNTAX = Reply(501, "5.1.3", "Bad address syntax")
ROUTING_NOT_ALLOWED = Reply(
    550, "5.7.1", "Source routes, % and ! routing and quoted @ are not accepted"
)
INTERNAL_TARGET = Reply(550, "5.7.1", "Mail to IP literals or local hosts is not relayed")
MESSAGE_TOO_BIG_MAIL = Reply(552, "5.3.4", "Message size exceeds the fixed maximum message size")
UNKNOWN_DEALER = Reply(451, "4.7.1", "This account is not bound to a dealer policy right now")


def sender_not_owned(domain: str, dealer_id: str) -> Reply:
    """The envelope sender's domain is not one of the dealer's (B5)."""
    return Reply(
        553,
        "5.7.1",
        f"Sender domain {domain} does not belong to dealer {dealer_id}; "
        "send from one of the dealer's own domains",
    )


def nothing_to_send(submission_id: str) -> Reply:
    """Every recipient already has this message: accepted, nothing queued (no retry)."""
    return Reply(
        250,
        "2.0.0",
        f"accepted as {submission_id}; not sent: every recipient already has this message",
    )


def too_many_recipients(limit: int) -> Reply:
    """RFC 5321 §4.5.3.1.8: 452 for recipients past the limit; the CRM sends the rest later."""
    return TOO_MANY_RECIPIENTS.with_text(
        f"Too many recipients (limit {limit}); send the rest in another message"
    )


# -- data ---------------------------------------------------------------------------------
def queued(submission_id: str, count: int) -> Reply:
    """The message is on stable storage (RFC 5321 §6.1)."""
    extra = "" if count == 1 else f" for {count} recipients"
    return Reply(250, "2.0.0", f"queued as {submission_id}{extra}")


NO_RECIPIENTS_LEFT = Reply(
    550, "5.7.1", "No recipient of this message may be mailed; see the findings for why"
)
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds the fixed maximum message size")
HEADER_TOO_BIG = Reply(552, "5.3.4", "Message header exceeds the maximum header size")
MIME_TOO_DEEP = Reply(554, "5.6.0", "MIME nesting exceeds the safety limit")
TOO_MANY_PARTS = Reply(554, "5.6.0", "Too many MIME parts in one message")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long (RFC 5321 section 4.5.3.1.6)")
HEADER_LINE_UNFOLDABLE = Reply(
    554, "5.6.0", "A header line is over 998 characters and cannot be folded"
)
BARE_LINE_ENDING = Reply(
    554, "5.6.0", "Bare CR or LF in the message; lines must end with CRLF (RFC 5321 section 2.3.8)"
)
TOO_MANY_HOPS = Reply(554, "5.4.6", "Too many Received: headers; possible mail loop")
INTERNAL_ERROR = Reply(451, "4.3.0", "Temporary local problem; try again later")
CHECKS_TIMED_OUT = Reply(451, "4.3.0", "Inspection took too long; try again later")
SIGNING_FAILED = Reply(451, "4.3.0", "The message could not be signed; try again later")

# -- aiosmtpd's own fixed replies, given enhanced codes ----------------------------------------
_BUILTIN: dict[str, Reply] = {
    "250 OK": Reply(250, "2.0.0", "OK"),
    "221 Bye": Reply(221, "2.0.0", "Bye"),
    "220 Ready to start TLS": Reply(220, "2.0.0", "Ready to start TLS"),
    "454 TLS not available": Reply(454, "4.7.0", "TLS not available"),
    "500 Command line too long": Reply(500, "5.5.2", "Command line too long"),
    "500 Error: bad syntax": Reply(500, "5.5.2", "Syntax error"),
    "500 Error: strict ASCII mode": Reply(500, "5.5.2", "Non-ASCII command; use SMTPUTF8"),
    "500 Line too long (see RFC5321 4.5.3.1.6)": LINE_TOO_LONG,
    "501 Not enough value": Reply(501, "5.5.4", "Missing argument"),
    "501 Too many values": Reply(501, "5.5.4", "Too many arguments"),
    "501 Error: SMTPUTF8 disabled": Reply(501, "5.5.4", "SMTPUTF8 is not supported"),
    "501 Error: SMTPUTF8 takes no arguments": Reply(501, "5.5.4", "SMTPUTF8 takes no arguments"),
    "501 Error: BODY can only be one of 7BIT, 8BITMIME": Reply(
        501, "5.5.4", "BODY must be 7BIT or 8BITMIME"
    ),
    "502 EXPN not implemented": Reply(502, "5.5.1", "EXPN not implemented"),
    "503 Already authenticated": AUTH_ALREADY,
    "503 Error: need MAIL command": Reply(503, "5.5.1", "Send MAIL first"),
    "503 Error: need RCPT command": Reply(503, "5.5.1", "Send RCPT first"),
    "503 Error: nested MAIL command": Reply(503, "5.5.1", "Nested MAIL command"),
    "503 Error: send HELO first": Reply(503, "5.5.1", "Send HELO first"),
    "503 Error: send EHLO first": Reply(503, "5.5.1", "Send EHLO first"),
    "530 Must issue a STARTTLS command first": STARTTLS_REQUIRED,
    "552 Error: message size exceeds fixed maximum message size": MESSAGE_TOO_BIG_MAIL,
    "552 Error: Too much mail data": MESSAGE_TOO_BIG,
    "553 5.1.3 Error: malformed address": BAD_ADDRESS_SYNTAX,
    "554 Command refused due to lack of security": Reply(
        554, "5.7.0", "Command refused due to lack of security"
    ),
    "555 MAIL FROM parameters not recognized or not implemented": Reply(
        555, "5.5.4", "MAIL FROM parameters not recognized or not implemented"
    ),
    "555 RCPT TO parameters not recognized or not implemented": Reply(
        555, "5.5.4", "RCPT TO parameters not recognized or not implemented"
    ),
}

_PREFIX_REWRITES: tuple[tuple[str, Reply], ...] = (
    ("501 Syntax:", Reply(501, "5.5.4", "Syntax:")),
    ('500 Error: command "', Reply(500, "5.5.1", "Command not recognized")),
    ("502 Could not VRFY", Reply(502, "5.5.1", "Could not VRFY")),
)


def rewrite_builtin(status: str) -> str:
    """Give one of aiosmtpd's built-in replies an enhanced code; others pass unchanged.

    Multi-line replies (``250-...``) and replies that already carry an enhanced code are
    left alone.
    """
    exact = _BUILTIN.get(status)
    if exact is not None:
        return exact.line()
    for prefix, reply in _PREFIX_REWRITES:
        if status.startswith(prefix):
            if reply.code == 501:
                # keep aiosmtpd's syntax hint, it tells the client the expected form
                return f"501 5.5.4 {status.removeprefix('501 ')}"
            return reply.line()
    return status


# -- reputation: suspended dealers, suppressed recipients (gateway/reputation/) ------------
REPUTATION_UNAVAILABLE = Reply(
    451, "4.3.0", "Temporary local problem checking sender or recipient status; try again later"
)


def _printable(text: str, limit: int = 240) -> str:
    """Reply text from data (an operator's reason): one line of printable ASCII."""
    cleaned = "".join(ch if " " <= ch <= "~" else " " for ch in text)
    return " ".join(cleaned.split())[:limit]


def dealer_suspended(dealer_id: str, reason: str, until: str, tempfail: bool) -> Reply:
    """MAIL FROM of a suspended dealer: 554 5.7.1 (or 451 4.7.1, policy ``on_suspended``).

    ``reason`` is the one written for the dealer (``StateChange.reason``); the operator's
    internal note is never passed here.
    """
    text = f"Dealer {dealer_id} is suspended: {_printable(reason).rstrip('.')}"
    if until:
        text += f" (until {until})"
    if tempfail:
        return Reply(451, "4.7.1", text + "; try again later")
    return Reply(554, "5.7.1", text + "; contact your gateway operator")


def recipient_suppressed(address: str, dealer_id: str, reason: str, day: str) -> Reply:
    """RCPT TO of a suppressed address (policy ``[suppression] on_rcpt = "reject"``)."""
    return Reply(
        550, "5.7.1", f"<{_printable(address)}> is suppressed for {dealer_id}: {reason} on {day}"
    )


def nothing_to_send_suppressed(count: int) -> Reply:
    """Every recipient was suppressed and dropped silently: accepted, nothing queued."""
    return Reply(250, "2.0.0", f"accepted; not sent: {count} suppressed recipient(s) left out")


def recipient_domain_unroutable(domain: str, why: str, suggestion: str | None) -> Reply:
    """RCPT TO a domain that cannot receive mail (gateway/dns/domains.py); 5.1.2: bad domain."""
    text = f"Recipient domain {_printable(domain)} {why}"
    if suggestion:
        text += f"; did you mean {suggestion}?"
    return Reply(550, "5.1.2", text)


# -- the inbound report listener (feedback loops and bounces) ---------------------------------
RELAY_DENIED = Reply(
    550, "5.7.1", "Relaying denied: this server takes reports for its own addresses only"
)
NO_SUCH_BOUNCE_ADDRESS = Reply(550, "5.1.1", "No such bounce address")
REPORT_ACCEPTED = Reply(250, "2.0.0", "Report received")
REPORTS_TOO_FAST = Reply(451, "4.7.0", "Too many reports; slow down and try again later")
