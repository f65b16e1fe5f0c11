"""The two HTTP listeners, on real loopback sockets: what each serves, headers, TLS, warnings.

The public listener (``public.listen``) serves the unsubscribe links and the dealers'
status pages only; the operators' listener (``http.listen``) serves the admin API,
``/metrics`` and health only. A path of one is a 404 on the other.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import ssl
from collections.abc import Awaitable, Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.datadir import load_or_create_key
from gateway.errors import ConfigError
from gateway.settings import load_settings
from gateway.smtp.tls import ensure_self_signed
from gateway.unsubscribe.service import UnsubscribeLinks
from gateway.web.http import PUBLIC_CSP
from tests.integration.admin import Answer, add_token, call, call_public
from tests.integration.conftest import Harness

MakeHarness = Callable[..., Awaitable[Harness]]
DEALER = "example-motors"
UNSUBSCRIBE = {"base_url": "https://mailgate.test"}


def unsubscribe_token(gw: Gateway) -> str:
    links = UnsubscribeLinks(load_or_create_key(gw.settings.ref_key_file), "https://mailgate.test")
    return links.token(DEALER, "ann@example.org", "m1.1")


async def test_each_listener_serves_only_its_own_paths(make_harness: MakeHarness) -> None:
    h = await make_harness(unsubscribe=UNSUBSCRIBE)
    gw = h.gateway
    assert gw.status_links is not None and gw.http_port != gw.public_port
    token = add_token(gw)
    status_path = gw.status_links.path(DEALER)
    unsubscribe_path = f"/u/{unsubscribe_token(gw)}"

    # the operators' listener: API, metrics, health; no public pages
    assert (await call(gw, "GET", "/metrics")).status == 200
    assert (await call(gw, "GET", "/healthz")).status == 200
    assert (await call(gw, "GET", "/readyz")).status == 200
    assert (await call(gw, "GET", "/api/health", token=token)).status == 200
    assert (await call(gw, "GET", status_path)).status == 404
    assert (await call(gw, "GET", unsubscribe_path)).status == 404

    # the public listener: unsubscribe and status pages; nothing of the operators'
    assert (await call_public(gw, "GET", status_path)).status == 200
    assert (await call_public(gw, "GET", unsubscribe_path)).status == 200
    for path in ("/metrics", "/healthz", "/readyz", "/api/health", "/api/openapi.json",
                 "/api/dealers"):  # fmt: skip
        answer = await call_public(gw, "GET", path, token=token)
        assert answer.status == 404, (path, answer.status)
        assert b"mailgate_" not in answer.raw and DEALER.encode() not in answer.raw
    posted = await call_public(gw, "POST", f"/api/dealers/{DEALER}/suspend", token=token,
                               body={"reason": "x"})  # fmt: skip
    assert posted.status == 404
    assert await gw.storage.get_dealer_status(gw.policies.current.dealers[DEALER].dealer_id) is None


def assert_public_headers(answer: Answer) -> None:
    csp = answer.headers["content-security-policy"]
    assert csp == PUBLIC_CSP and "frame-ancestors 'none'" in csp
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["x-frame-options"] == "DENY"


async def test_public_responses_carry_security_headers(make_harness: MakeHarness) -> None:
    h = await make_harness(unsubscribe=UNSUBSCRIBE)
    gw = h.gateway
    assert gw.status_links is not None
    for path in (gw.status_links.path(DEALER), f"/u/{unsubscribe_token(gw)}", "/u/forged",
                 "/nothing-here"):  # fmt: skip
        answer = await call_public(gw, "GET", path)
        assert_public_headers(answer)
        # served over plain HTTP (a proxy in front, public_url unset): no HSTS
        assert "strict-transport-security" not in answer.headers
    page = await call_public(gw, "GET", gw.status_links.path(DEALER))
    assert page.headers["cache-control"] == "no-store"
    operators = await call(gw, "GET", "/metrics")
    assert "frame-ancestors 'none'" in operators.headers["content-security-policy"]
    assert operators.headers["x-content-type-options"] == "nosniff"


async def test_public_listener_speaks_tls_with_a_certificate(
    make_harness: MakeHarness, tmp_path: Path
) -> None:
    cert, key = ensure_self_signed(tmp_path / "public-tls", "status.mailgate.test")
    h = await make_harness(public={"tls_cert": str(cert), "tls_key": str(key)})
    gw = h.gateway
    assert gw.status_links is not None
    assert gw.status_links.url(DEALER).startswith(f"https://127.0.0.1:{gw.public_port}/status/")

    def get(path: str) -> tuple[int, dict[str, str]]:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False  # the certificate names status.mailgate.test
        conn = http.client.HTTPSConnection("127.0.0.1", gw.public_port, timeout=10,
                                           context=context)  # fmt: skip
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()

    status, headers = await asyncio.to_thread(get, gw.status_links.path(DEALER))
    assert status == 200
    assert headers["strict-transport-security"].startswith("max-age=")
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    # plain HTTP on the TLS port gets no page
    plain = await asyncio.to_thread(_plain_get, gw.public_port, gw.status_links.path(DEALER))
    assert plain != 200


def _plain_get(port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("public_url", "warning"),
    [
        ("", "http.public_url is not set: alert e-mails carry no link to the dealer's status "
             "page; set it to the https address of the public listener (127.0.0.1:0), where "
             "the unsubscribe links also point"),
        ("http://status.mailgate.test", "http.public_url http://status.mailgate.test is not "
                                        "https"),
        ("https://status.mailgate.test", None),
    ],
)  # fmt: skip
async def test_start_up_warns_without_an_https_public_url(
    make_harness: MakeHarness,
    caplog: pytest.LogCaptureFixture,
    public_url: str,
    warning: str | None,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway")
    h = await make_harness(unsubscribe=UNSUBSCRIBE, http={"public_url": public_url})
    warned = [r.getMessage() for r in caplog.records if r.name == "gateway"]
    if warning is None:
        assert not any("public_url" in m for m in warned), warned
    else:
        assert any(m.startswith(warning) for m in warned), warned
    # An alert e-mail links the status page only at an address the dealer can reach.
    body = {"reason": "Paused for a check"}
    token = add_token(h.gateway)
    answer = await call(h.gateway, "POST", f"/api/dealers/{DEALER}/suspend", token=token, body=body)
    assert answer.status == 200
    await h.wait_delivered(1)
    alert = message_from_bytes(h.sink.messages[0].data, policy=policy.default)
    assert isinstance(alert, EmailMessage) and alert["X-Mailgate-Alert"]
    text = alert.get_body(("plain",))
    assert text is not None
    if public_url:
        assert f"{public_url}/status/{DEALER}/" in text.get_content()
    else:
        assert "/status/" not in text.get_content()


def test_plain_http_on_a_public_address_is_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "mailgate.toml"
    config.write_text('[public]\nlisten = "0.0.0.0:8080"\n[http]\npublic_url = "https://s.test"\n')
    warnings = load_settings(config, environ={}).listener_warnings()
    assert len(warnings) == 1 and "TLS-terminating proxy" in warnings[0]
    assert load_settings(None, environ={}).public.listen == "127.0.0.1:8080"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[http]\nlisten = "127.0.0.1:9000"\n[public]\nlisten = "127.0.0.1:9000"\n',
         "http.listen and public.listen must differ"),
        ('[public]\ntls_cert = "/etc/x.crt"\n', "public.tls_cert and tls_key go together"),
        ('[public]\nlisten = "nowhere"\n', "public.listen: not host:port"),
        ('[http]\npublic_url = "status.example"\n', "http.public_url must be an https:// URL"),
    ],
)  # fmt: skip
def test_listener_settings_are_validated(tmp_path: Path, text: str, problem: str) -> None:
    config = tmp_path / "mailgate.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_settings(config, environ={})
