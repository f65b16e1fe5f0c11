"""Inspection of mail shaped like real CRM mail, end to end over SMTP (issue 15, items 5-7).

The client is Python's ``smtplib`` (STARTTLS, AUTH, ``sendmail`` with bytes), as a CRM
integration would use it; the gateway is the real one, delivering to a loopback sink.
Each item is driven with the shipped policy and with a dealer policy that refuses, so the
CRM is seen to get a reply with an RFC 3463 enhanced code and a sentence naming the problem.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import smtplib
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.types import Action, DealerId, MessageState
from tests.integration.conftest import PASSWORD, Harness
from tests.smtpclient import insecure_context

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "messages" / "inspection"
SENDER = "sales@example-motors.test"


def _send(port: int, raw: bytes, rcpt: str) -> tuple[int, str]:
    """Send one message; return the DATA reply (code, text), refusals included."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="crm.example-motors.test", timeout=20) as s:
        s.starttls(context=insecure_context())
        s.login("example-crm", PASSWORD)
        try:
            s.sendmail(SENDER, [rcpt], raw)
        except smtplib.SMTPDataError as refused:
            error = refused.smtp_error
            return refused.smtp_code, error.decode() if isinstance(error, bytes) else error
        return 250, ""  # sendmail raises for any DATA reply but 250


async def send(h: Harness, raw: bytes, rcpt: str = "customer@example.org") -> tuple[int, str]:
    return await asyncio.to_thread(_send, h.port, raw, rcpt)


def refuse(h: Harness, *codes: str) -> None:
    """Give the dealer a policy that refuses messages with these findings, and apply it."""
    policy = h.gateway.settings.server.policies_dir / "dealers" / "example-motors.toml"
    rules = "".join(f'{code} = {{ action = "reject" }}\n' for code in codes)
    policy.write_text(policy.read_text() + "\n[checks]\n" + rules)
    result = h.gateway.policies.reload()
    assert result.ok, result
    dealer = h.gateway.policies.current.dealer(DealerId("example-motors"))
    assert dealer is not None
    assert all(dealer.checks[code].action is Action.REJECT for code in codes)


def crm_message(subject: str, text: str, html: str) -> bytes:
    m = EmailMessage(policy=email.policy.SMTP)
    m["From"] = f"Example Motors <{SENDER}>"
    m["To"] = "customer@example.org"
    m["Subject"] = subject
    m["Date"] = "Mon, 01 Jun 2026 10:00:00 +0000"
    m["Message-ID"] = f"<{abs(hash(subject + text))}@example-motors.test>"
    m.set_content(text)
    m.add_alternative(html, subtype="html")
    return m.as_bytes()


MAILCHIMP = crm_message(
    "*|FNAME|*, your winter tire package is ready",
    "Hi *|FNAME|*,\n\nYour tires are in. Unsubscribe: *|UNSUB|*\n",
    "<html><head><style>@media (max-width:600px){.col{width:100%!important}}</style></head>"
    "<body><!--[if mso]><table><tr><td><![endif]--><p>Hi *|FNAME|*,</p>"
    '<p>Your tires are in.</p><a href="*|UNSUB|*">Unsubscribe</a></body></html>',
)
FILLED = crm_message(
    "Sam, your winter tire package is ready",
    "Hi Sam,\n\n[Sale ends Friday] 20% off, 0%APR 60 mo. 2024 Camry [$24,999]. #NewCarDay\n",
    "<html><head><style>@media (max-width:600px){.col{width:100%!important}}</style></head>"
    "<body><!--[if mso]><table><tr><td><![endif]--><p>Hi Sam,</p>"
    "<p>[Sale ends Friday] 20% off &mdash; &lt;&lt; Back to inventory</p>"
    '<a href="https://example-motors.test/tires?q=winter%20tires">Book</a></body></html>',
)


# -- item 5: merge fields ---------------------------------------------------------------------


async def test_unfilled_mailchimp_fields_are_tagged_and_delivered(harness: Harness) -> None:
    code, _ = await send(harness, MAILCHIMP)
    assert code == 250
    await harness.wait_delivered(1)
    (stored,) = await harness.gateway.storage.list_messages()
    assert "unfilled-merge-field" in stored.findings


async def test_a_filled_message_with_look_alikes_has_no_finding(harness: Harness) -> None:
    code, _ = await send(harness, FILLED)
    assert code == 250
    await harness.wait_delivered(1)
    (stored,) = await harness.gateway.storage.list_messages()
    assert "unfilled-merge-field" not in stored.findings


async def test_a_refusing_policy_names_the_unfilled_fields(harness: Harness) -> None:
    refuse(harness, "unfilled-merge-field")
    code, text = await send(harness, MAILCHIMP)
    assert code == 550, text
    assert text.startswith("5.7.1 Message refused (unfilled-merge-field): ")
    assert "*|FNAME|*" in text and "in the subject" in text
    assert "Check the merge fields of the template" in text
    await asyncio.sleep(0.2)
    assert harness.sink.messages == []


# -- item 6: attachments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "code", "words"),
    [
        ("rar-archive.eml", "uninspectable-attachment", "documents.rar is a RAR archive"),
        ("gzip-exe.eml", "dangerous-attachment", "setup.exe.gz is a compressed setup.exe"),
        ("onenote.eml", "dangerous-attachment", "invoice.one is a OneNote notebook"),
        ("svg-script.eml", "dangerous-attachment", "logo.svg is an SVG image that runs a script"),
        ("html-form-elsewhere.eml", "dangerous-attachment", "sends what is typed to"),
    ],
)
async def test_attachments_are_held_by_default(
    harness: Harness, sample: str, code: str, words: str
) -> None:
    reply, _ = await send(harness, (SAMPLES / sample).read_bytes())
    assert reply == 250  # kept for an operator, not lost
    (held,) = await harness.gateway.storage.list_messages(state=MessageState.HELD)
    assert held.findings == (code,)
    assert words in held.note
    await asyncio.sleep(0.2)
    assert harness.sink.messages == []


async def test_a_refusing_policy_names_the_attachment(harness: Harness) -> None:
    refuse(harness, "uninspectable-attachment", "dangerous-attachment")
    code, text = await send(harness, (SAMPLES / "rar-archive.eml").read_bytes())
    assert code == 550, text
    assert text.startswith("5.7.1 Message refused (uninspectable-attachment): ")
    assert "documents.rar is a RAR archive, which cannot be opened to check" in text
    assert "in a zip archive without a password" in text
    code, text = await send(harness, (SAMPLES / "tgz-with-exe.eml").read_bytes(), "b@example.org")
    assert code == 550, text
    assert "5.7.1 Message refused (dangerous-attachment): " in text
    assert "documents.tgz contains setup.exe, a program or script (.exe)" in text


# -- item 7: repairs --------------------------------------------------------------------------


async def test_a_deliberate_invoice_html_is_held_as_sent(harness: Harness) -> None:
    raw = (SAMPLES / "invoice-html-octet.eml").read_bytes()
    code, _ = await send(harness, raw)
    assert code == 250
    (held,) = await harness.gateway.storage.list_messages(state=MessageState.HELD)
    assert held.findings == ("dangerous-attachment",)
    assert "invoice.html is a web page that runs a script" in held.note
    stored = await harness.gateway.storage.get(held.id)
    assert stored is not None
    kept = email.message_from_bytes(stored.data, policy=email.policy.default)
    assert kept.get_content_type() == "multipart/mixed"  # not rebuilt into a body
    body = kept.get_body(("plain",))
    assert body is not None and "Your invoice 1042 is attached" in body.get_content()
    assert kept.get_body(("html",)) is None
    (invoice,) = kept.iter_attachments()
    assert invoice.get_filename() == "invoice.html"
    assert b"<script>window.print()</script>" in invoice.get_content()


async def test_a_refusing_policy_names_the_script(harness: Harness) -> None:
    refuse(harness, "dangerous-attachment")
    code, text = await send(harness, (SAMPLES / "invoice-html-octet.eml").read_bytes())
    assert code == 550, text
    assert "5.7.1 Message refused (dangerous-attachment): " in text
    assert "invoice.html is a web page that runs a script" in text


async def test_a_harmless_invoice_html_is_delivered_untouched(harness: Harness) -> None:
    raw = (SAMPLES / "invoice-html-harmless.eml").read_bytes()
    code, _ = await send(harness, raw)
    assert code == 250
    await harness.wait_delivered(1)
    got = email.message_from_bytes(harness.sink.messages[0].data, policy=email.policy.default)
    assert got.get_content_type() == "multipart/mixed"
    assert [a.get_filename() for a in got.iter_attachments()] == ["invoice.html"]
    body = got.get_body(("plain",))
    assert body is not None and "Your invoice 1042 is attached" in body.get_content()


async def test_unknown1_html_with_a_placeholder_text_is_repaired(harness: Harness) -> None:
    code, _ = await send(harness, (SAMPLES / "unknown1-html-placeholder.eml").read_bytes())
    assert code == 250
    await harness.wait_delivered(1)
    got = email.message_from_bytes(harness.sink.messages[0].data, policy=email.policy.default)
    assert got.get_content_type() == "multipart/alternative"
    assert not list(got.iter_attachments())
    text = got.get_body(("plain",))
    html = got.get_body(("html",))
    assert text is not None and html is not None
    assert "Please see the attached" not in text.get_content()
    assert "Your service appointment for the Accord is confirmed" in text.get_content()
    assert "Manage your appointment" in html.get_content()


async def test_unknown1_html_with_a_script_is_held_not_promoted(harness: Harness) -> None:
    code, _ = await send(harness, (SAMPLES / "unknown1-script.eml").read_bytes())
    assert code == 250
    (held,) = await harness.gateway.storage.list_messages(state=MessageState.HELD)
    assert set(held.findings) == {"dangerous-attachment", "stray-attachment"}
    stored = await harness.gateway.storage.get(held.id)
    assert stored is not None
    kept = email.message_from_bytes(stored.data, policy=email.policy.default)
    assert kept.get_body(("html",)) is None
    assert [a.get_filename() for a in kept.iter_attachments()] == ["unknown1.txt"]
