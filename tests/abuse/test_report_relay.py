"""Open relay through the inbound report listener (reliability B2, B3).

The report listener takes mail without AUTH, from anyone, because mailbox providers
send feedback reports and bounces that way. That makes it the most dangerous place for
an open relay: a relay here is an unauthenticated one. Only the configured report
addresses and VERP addresses at the bounce domain are local; everything else must be
refused at RCPT with ``550 5.7.1`` (or a syntax error for malformed paths), nothing may
be queued for the upstream, and the upstream must never even see a connection (E9).

The address forms are nmap's ``smtp-open-relay`` set (shared with the submission
listener's B1 test) plus the B3 routing tricks written against this listener's own
domains, where a lax "is the domain ours?" check would be fooled.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.abuse.conftest import (
    Harness,
    MakeHarness,
    Recorder,
    RecordingSmtp,
    check_invariants,
    dot_stuff,
    message,
)
from tests.integration.test_smuggling_and_relay import NMAP_FORMS
from tests.smtpclient import RawSmtp, Resp

REPORT_DOMAIN = "mailgate.test"  # the report address's domain (also our host name)
BOUNCE_DOMAIN = "bounces.mailgate.test"
INBOUND = {
    "listen": "127.0.0.1:0",
    "report_addresses": [f"fbl@{REPORT_DOMAIN}"],
    "bounce_domain": BOUNCE_DOMAIN,
}

# B3: source routes (RFC 5321 §4.1.1.3, "SHOULD ignore"), the % hack and UUCP bang paths
# (RFC 5321 §3.6 / Appendix C), a quoted "@" and a double "@", each aimed at a victim
# outside while naming one of our own domains, where a check of the last domain alone
# would take it for local mail.
ROUTING_TRICKS = [
    form.format(d=domain)
    for domain in (REPORT_DOMAIN, BOUNCE_DOMAIN)
    for form in (
        "<relay%victim.test@{d}>",
        "<victim.test!relay@{d}>",
        '<"relay@victim.test"@{d}>',
        "<relay@victim.test@{d}>",
        "<@{d}:relay@victim.test>",
    )
] + [
    # The same tricks wearing the report mailbox's own local part.
    f"<fbl%victim.test@{REPORT_DOMAIN}>",
    f'<"fbl@victim.test"@{REPORT_DOMAIN}>',
    f"<@{REPORT_DOMAIN},@{BOUNCE_DOMAIN}:fbl@victim.test>",
]
CASES = [*NMAP_FORMS, *(("<probe@isp.example>", rcpt) for rcpt in ROUTING_TRICKS)]
CASE_IDS = [f"{sender}->{rcpt}" for sender, rcpt in CASES]

# 550 5.7.1: relaying denied (RFC 3463 §3.8). A path the parser cannot take apart may
# instead get the address-syntax reply, 501 or 553 with 5.1.3 (RFC 3463 §3.2).
REFUSALS = {(550, "5.7.1"), (501, "5.1.3"), (553, "5.1.3")}


@pytest.fixture
async def h(make_harness: MakeHarness) -> Harness:
    return await make_harness(inbound=INBOUND)


async def report_client(h: Harness, rec: Recorder) -> RawSmtp:
    """A client of the report listener whose replies the invariants check too."""
    client = RecordingSmtp.wrap(
        await RawSmtp.connect("127.0.0.1", h.gateway.inbound_port), rec.replies
    )
    rec.clients.append(client)
    assert (await client.cmd("EHLO mx.isp.example")).code == 250
    return client


async def assert_nothing_relayed(h: Harness) -> None:
    """No queue row, and the upstream never contacted, after a few delivery polls."""
    await asyncio.sleep(0.3)  # delivery.poll_interval is 0.05 s in the harness
    assert await h.gateway.storage.list_messages() == []
    assert h.sink.messages == []
    assert h.sink.connections == 0


def refused(reply: Resp) -> bool:
    return (reply.code, reply.enhanced) in REFUSALS


@pytest.mark.parametrize(("sender", "rcpt"), CASES, ids=CASE_IDS)
async def test_b2_b3_external_victim_is_refused_at_the_report_listener(
    h: Harness, sender: str, rcpt: str
) -> None:
    rec = Recorder(h)
    client = await report_client(h, rec)
    mail = await client.cmd(f"MAIL FROM:{sender}")
    # Any sender is fine here (bounces come from <>), so RCPT is what is under test.
    assert mail.code == 250, mail
    reply = await client.cmd(f"RCPT TO:{rcpt}")
    assert refused(reply), reply
    # With no recipient accepted there is no transaction to put data into.
    data = await client.cmd("DATA")
    assert data.code in (503, 554), data
    await assert_nothing_relayed(h)
    await check_invariants(h, rec)


async def test_b2_victim_beside_a_real_report_address_is_still_not_relayed(h: Harness) -> None:
    """Every form again, each next to a recipient the listener does accept.

    The report is taken (that is the listener's job) but only for the local report
    address: the refused victim is not carried along, and nothing is queued outbound.
    """
    rec = Recorder(h)
    client = await report_client(h, rec)
    for sender, rcpt in CASES:
        assert (await client.cmd(f"MAIL FROM:{sender}")).code == 250
        assert (await client.cmd(f"RCPT TO:<fbl@{REPORT_DOMAIN}>")).code == 250
        reply = await client.cmd(f"RCPT TO:{rcpt}")
        assert refused(reply), (rcpt, reply)
        body = message(sender="spammer@evil.test", to="relaytest@victim.test", subject=rcpt)
        done = await client.data(dot_stuff(body))
        assert (done.code, done.enhanced) == (250, "2.0.0"), (rcpt, done)
    await assert_nothing_relayed(h)
    await check_invariants(h, rec)
