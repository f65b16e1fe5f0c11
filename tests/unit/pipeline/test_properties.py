"""No input makes the check pipeline raise: MIME- and HTML-shaped junk through every check.

Checks run on whatever a CRM sends; a check that raises turns a verdict into a 451 for
every retry of the same message. Hypothesis builds messages from header, MIME and HTML
fragments (and raw bytes); each one is parsed, run through every check and decided.
"""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import pipeline
from gateway.mail.message import MessageRejected, ParseLimits, parse
from gateway.pipeline.base import CheckContext
from gateway.pipeline.decide import decide
from gateway.policy.model import DealerPolicy

LIMITS = ParseLimits(max_header_bytes=4000, max_mime_depth=6, max_parts=40)
FRAGMENTS = [
    b"From: Example Motors <sales@example-motors.test>\r\n",
    b"From: =?utf-8?b?////?= <@>\r\n",
    b"Subject: Hi {{first_name}}, your %%LEAD_NAME%% [FirstName] *|FNAME|*\r\n",
    b"Date: Mon, 1 Jun 2026 10:00:00 +0000\r\n",
    b"Date: yesterday\r\n",
    b"MIME-Version: 1.0\r\n",
    b'Content-Type: multipart/alternative; boundary="b"\r\n',
    b'Content-Type: multipart/mixed; boundary="b"\r\n',
    b"Content-Type: text/html; charset=utf-8\r\n",
    b"Content-Type: text/plain; charset=x-unknown\r\n",
    b"Content-Type: application/octet-stream; name=unknown1.txt\r\n",
    b'Content-Type: application/zip; name="a.zip"\r\n',
    b"Content-Disposition: attachment; filename=winmail.dat\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"List-Unsubscribe: <mailto:u@example.org>, <https://x.test/u>\r\n",
    b"\r\n",
    b"--b\r\n",
    b"--b--\r\n",
    b"<html><body><table><tr><td><a href='http://%zz'>",
    b'<a href="javascript:alert(1)">click</a>',
    b"<div><div><p><b><i>",
    b"</td></tr></table></body></html>",
    b"<style>/* {{not_a_field}} */</style><!--[if mso]>{{x}}<![endif]-->",
    b"=E2=9C=93 =\r\n",
    b"UEsDBBQAAAAIAA==\r\n",
    b"Dear {{ customer.first_name }}, your ${vehicle} is ready.\r\n",
    b"\x00\xff\xfe",
]
junk = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=30)), max_size=60)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(junk)
def test_no_message_makes_a_check_or_the_decision_raise(
    dealer: DealerPolicy, ctx: CheckContext, pieces: list[bytes]
) -> None:
    # The fixtures are immutable, so sharing them across examples is sound.
    with contextlib.suppress(MessageRejected):  # refused whole: a defined outcome
        msg = parse(b"".join(pieces), LIMITS)
        findings = pipeline.run(msg, dealer, ctx)
        for finding in findings:
            assert finding.detail and "\n" not in finding.detail
        decide(findings, dealer, ctx.envelope.rcpt_tos)
