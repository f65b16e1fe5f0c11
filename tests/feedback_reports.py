"""Builders of the reports mailbox providers send back: ARF complaints and RFC 3464 DSNs."""

from __future__ import annotations

import urllib.request

from tests.smtpclient import RawSmtp


def original_headers(data: bytes) -> bytes:
    """The header block of a delivered message (what providers enclose)."""
    head, _, _ = data.partition(b"\r\n\r\n")
    return head + b"\r\n"


def arf(
    original: bytes,
    rcpt: str,
    *,
    feedback_type: str = "abuse",
    return_path: str = "",
    report_id: str = "1",
) -> bytes:
    """An RFC 5965 feedback report about ``original`` (its headers and a short body)."""
    rp = f"Return-Path: <{return_path}>\r\n" if return_path else ""
    return (
        (
            "From: Feedback Loop <fbl@isp.example>\r\n"
            "To: fbl@mailgate.test\r\n"
            "Subject: FW: complaint\r\n"
            "Date: Tue, 06 Jan 2026 10:00:00 +0000\r\n"
            f"Message-ID: <fbl-{report_id}@isp.example>\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=feedback-report; boundary="b1"\r\n'
            "\r\n--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            "This is an email abuse report.\r\n"
            "\r\n--b1\r\nContent-Type: message/feedback-report\r\n\r\n"
            f"Feedback-Type: {feedback_type}\r\nUser-Agent: ExampleFBL/2.1\r\nVersion: 1\r\n"
            f"Original-Rcpt-To: <{rcpt}>\r\n"
            "Arrival-Date: Tue, 06 Jan 2026 09:58:00 +0000\r\n"
            "Source-IP: 192.0.2.25\r\n"
            "\r\n--b1\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
            f"{rp}"
        ).encode()
        + original_headers(original)
        + b"\r\nHello.\r\n\r\n--b1--\r\n"
    )


_DIAGNOSTICS = {
    "5.1.1": "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
    "4.2.2": "452 4.2.2 <{rcpt}>: Mailbox full, quota exceeded",
}


def dsn(verp: str, statuses: list[tuple[str, str, str]], original: bytes = b"") -> bytes:
    """An RFC 3464 bounce sent to ``verp``; ``statuses``: (recipient, status, action)."""
    blocks = "".join(
        f"\r\nFinal-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {_DIAGNOSTICS.get(status, status).format(rcpt=rcpt)}\r\n"
        for rcpt, status, action in statuses
    )
    enclosed = (
        b"\r\n--b2\r\nContent-Type: text/rfc822-headers\r\n\r\n" + original_headers(original)
        if original
        else b""
    )
    return (
        (
            "From: Mail Delivery System <MAILER-DAEMON@mx.isp.example>\r\n"
            f"To: <{verp}>\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\n"
            "Date: Tue, 06 Jan 2026 10:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b2"\r\n'
            "\r\n--b2\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
            "\r\n--b2\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.isp.example\r\n"
            f"{blocks}"
        ).encode()
        + enclosed
        + b"\r\n--b2--\r\n"
    )


def dot_stuffed(data: bytes) -> bytes:
    lines = data.split(b"\r\n")
    out = b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in lines)
    if not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out + b".\r\n"


async def deliver(
    port: int, rcpts: list[str], data: bytes, sender: str = "fbl@isp.example"
) -> list[str]:
    """Send one message to the inbound listener; return every reply as ``code text``."""
    client = await RawSmtp.connect("127.0.0.1", port)
    replies: list[str] = []
    try:
        replies.append(str(await client.cmd("EHLO isp.example")))
        replies.append(str(await client.cmd(f"MAIL FROM:<{sender}>")))
        for rcpt in rcpts:
            replies.append(str(await client.cmd(f"RCPT TO:<{rcpt}>")))
        replies.append(str(await client.data(dot_stuffed(data))))
    finally:
        await client.close()
    return replies


def scrape(port: int) -> str:
    """The /metrics page over HTTP (blocking: call it in a thread)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def metric(page: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text page, or ``None``."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in page.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if "{" in key:
            sample, _, rest = key.partition("{")
            got = ",".join(sorted(rest.rstrip("}").split(",")))
        else:
            sample, got = key, ""
        if sample == name and got == wanted:
            return float(value)
    return None
