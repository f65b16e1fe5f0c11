"""Relaying one message to the upstream: the only module that talks SMTP as a client.

Owns the ``Upstream`` seam and its two implementations: ``SmtpUpstream`` (one reusable
aiosmtplib connection per worker) and ``MaildirUpstream`` (local delivery when no
upstream host is configured). This is the only place aiosmtplib exceptions are caught;
every result, including every failure, leaves here as a ``RcptOutcome``:

* 2xx after DATA → ``DELIVERED``;
* 4xx at any stage, a refused, dropped or stalled connection, a TLS problem, a garbled
  reply, or a 5xx before the transaction (greeting, EHLO, STARTTLS, AUTH: our side or the
  relay is misconfigured, not the message) → ``DEFERRED``;
* 5xx to MAIL, RCPT or DATA, an envelope address that cannot be put on a command line,
  or a message that needs an extension the next hop lacks (8BITMIME, SMTPUTF8:
  ``mail_options``) → ``FAILED``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import Callable
from datetime import timedelta
from itertools import count
from pathlib import Path
from typing import Protocol

import aiosmtplib
from aiosmtplib.email import quote_address

from gateway.delivery import transparency
from gateway.settings import DeliverySettings, Settings, UpstreamSettings
from gateway.types import OutcomeKind, RcptOutcome

log = logging.getLogger("gateway.delivery")

# RFC 3463 §2: class.subject.detail, each subject/detail up to three digits.
transparency.install()  # aiosmtplib's DATA preparation, its common case in C

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Replies are kept in the store, logs and DSNs; a hostile upstream can send a huge reply
# (reliability F12), so keep only what a human needs.
MAX_REPLY_TEXT = 512


class Upstream(Protocol):
    """Where a worker hands one message for one recipient."""

    async def send(self, mail_from: str, rcpt: str, data: bytes) -> RcptOutcome:
        """Relay ``data`` from ``mail_from`` to ``rcpt``; never raises for a delivery fault."""
        ...

    async def close(self) -> None:
        """Close any connection; the upstream may be used again afterwards."""
        ...


def attempt_budget(delivery: DeliverySettings) -> timedelta:
    """Return the longest one delivery attempt may take: connect, three commands, and DATA.

    The lease a worker takes must be longer than this, or a slow attempt could still be
    running when another node claims the same message.
    """
    return delivery.connect_timeout + 3 * delivery.command_timeout + delivery.data_timeout


def _clean_text(text: str) -> str:
    """One printable line: multi-line replies joined, control characters dropped."""
    flat = " ".join(part.strip() for part in text.splitlines() if part.strip())
    flat = _CONTROL.sub("", flat)
    return flat[:MAX_REPLY_TEXT]


def split_enhanced(text: str) -> tuple[str, str]:
    """Split an RFC 3463 enhanced code off the front of a reply text.

    Returns ``(enhanced, rest)``; ``enhanced`` is empty when the text does not start with
    one (RFC 2034 makes it optional).
    """
    m = _ENHANCED.match(text)
    if not m:
        return "", text.strip()
    return ".".join(m.groups()), text[m.end() :].strip()


def outcome_from_reply(code: int, text: str, *, transaction: bool = True) -> RcptOutcome:
    """Map one SMTP reply to an outcome.

    ``transaction`` is true for replies to MAIL, RCPT and DATA, the only ones that say
    anything about this message. A 5xx outside the transaction (greeting, EHLO, STARTTLS,
    AUTH) defers, as Postfix does with ``smtp_skip_5xx_greeting``: bouncing every message
    because of a relay misconfiguration would be far worse than retrying. A 2xx outside
    the transaction (an unexpected greeting) never means delivered: nothing was sent. A
    code that is not a valid reply at all (aiosmtplib reports -1 for a garbled line), or
    such a 2xx, defers with 4.5.0.
    """
    enhanced, rest = split_enhanced(_clean_text(text))
    if enhanced and str(code)[:1] != enhanced[:1]:
        # RFC 3463 §2: the class must match the basic code; an inconsistent one is noise.
        enhanced = ""
    if 200 <= code < 300 and transaction:
        return RcptOutcome(OutcomeKind.DELIVERED, code, enhanced or "2.0.0", rest)
    if 500 <= code < 600 and transaction:
        return RcptOutcome(OutcomeKind.FAILED, code, enhanced or "5.0.0", rest)
    if 500 <= code < 600:
        detail = enhanced[2:] if enhanced else "4.0"
        return RcptOutcome(OutcomeKind.DEFERRED, 451, "4." + detail, f"upstream said {code} {rest}")
    if 400 <= code < 500:
        return RcptOutcome(OutcomeKind.DEFERRED, code, enhanced or "4.0.0", rest)
    return RcptOutcome(
        OutcomeKind.DEFERRED,
        451,
        "4.5.0",
        f"invalid reply from upstream: {code} {rest}"[:MAX_REPLY_TEXT],
    )


def deferred(enhanced: str, text: str, code: int = 451) -> RcptOutcome:
    """Build a temporary failure that we synthesise (no usable reply from the upstream)."""
    return RcptOutcome(OutcomeKind.DEFERRED, code, enhanced, _clean_text(text))


def check_address(address: str) -> RcptOutcome | None:
    """Return a ``FAILED`` outcome if ``address`` cannot be sent on a command line.

    CR/LF or other control characters would inject commands into the relay's session
    (RFC 5321 §4.1.2 allows none); a non-ASCII address needs SMTPUTF8 (RFC 6531), which
    this client does not negotiate. Retrying cannot fix either, so they fail at once
    instead of being deferred until ``max_age``. ``None`` means the address is sendable.
    """
    if _CONTROL.search(address):
        return RcptOutcome(OutcomeKind.FAILED, 553, "5.1.3", "address contains control characters")
    if not address.isascii():
        return RcptOutcome(OutcomeKind.FAILED, 553, "5.6.7", "non-ASCII address needs SMTPUTF8")
    try:
        quoted = quote_address(address)
    except ValueError as exc:
        return RcptOutcome(OutcomeKind.FAILED, 553, "5.1.3", _clean_text(str(exc)))
    if quoted != f"<{address}>":
        # aiosmtplib would send a different mailbox than the one queued (it parses
        # "Name <a@b>" down to a@b); relay exactly what was accepted or nothing.
        return RcptOutcome(OutcomeKind.FAILED, 553, "5.1.3", "address is not a plain mailbox")
    return None


def mail_options(data: bytes, offers: Callable[[str], bool]) -> list[str] | RcptOutcome:
    """The MAIL parameters ``data`` needs at a next hop that ``offers`` these extensions.

    Intake makes every body 7-bit before signing (``rewrite.transport_safe``), so most
    messages need none. 8-bit octets after the header section (a part header intake
    cannot re-encode, a copy queued before that) are declared ``BODY=8BITMIME``
    (RFC 6152 §3); UTF-8 in the header section (RFC 6532) needs ``SMTPUTF8`` (RFC 6531
    §3.4), declared with ``BODY=8BITMIME``. A next hop that lacks what the message needs
    fails the recipient (a DSN tells the sender why) rather than receive mislabelled
    data or a converted copy whose DKIM signature no longer verifies.
    """
    end = data.find(b"\r\n\r\n")
    header, body = (data, b"") if end < 0 else (data[:end], data[end:])
    utf8_header = not header.isascii()
    eight_bit = not body.isascii()
    options: list[str] = []
    if utf8_header:
        if not offers("smtputf8"):
            return RcptOutcome(
                OutcomeKind.FAILED,
                554,
                "5.6.9",
                "the message has UTF-8 in its header fields (RFC 6532) and the next hop "
                "does not offer SMTPUTF8 (RFC 6531); it cannot be relayed as written",
            )
        options.append("SMTPUTF8")
    if utf8_header or eight_bit:
        if offers("8bitmime"):
            options.append("BODY=8BITMIME")
        elif eight_bit:
            return RcptOutcome(
                OutcomeKind.FAILED,
                554,
                "5.6.3",
                "the message body has 8-bit data and the next hop does not offer 8BITMIME "
                "(RFC 6152); converting it would break its DKIM signature",
            )
    return options


def _session_failure(exc: BaseException) -> RcptOutcome:
    """Map a failure to open or set up the session (no usable reply) to a deferral."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            # Never fall back to plaintext: the message waits until TLS works (F11).
            return deferred("4.7.0", f"TLS failure with upstream: {cause}")
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, aiosmtplib.SMTPConnectError | ConnectionRefusedError):
        return deferred("4.4.1", f"no answer from upstream: {exc}")
    if isinstance(exc, TimeoutError):
        return deferred("4.4.2", "timed out setting up the upstream session")
    return deferred("4.4.2", f"upstream session failed: {exc}")


class _TlsUnavailable(Exception):
    """STARTTLS is required but the server did not offer it."""


class SmtpUpstream:
    """One reusable SMTP connection to the configured relay (one per delivery worker).

    The connection is opened on first use and kept for the next message. It is replaced
    when the server dropped it, after ``connection_reuse`` messages, or after it sat idle
    for ``idle_connection_timeout``. After any error it is reset with RSET (RFC 5321
    §4.1.1.5) or closed, so the next message never inherits a half-open transaction.
    """

    def __init__(
        self, settings: UpstreamSettings, delivery: DeliverySettings, hostname: str
    ) -> None:
        if not settings.host:
            raise ValueError("SmtpUpstream needs upstream.host; use MaildirUpstream instead")
        self._settings = settings
        self._delivery = delivery
        # Explicit EHLO name: aiosmtplib would otherwise call socket.getfqdn(), which can
        # block the loop on DNS for seconds (aiosmtplib#293).
        self._local_hostname = settings.helo_name or hostname
        self._smtp: aiosmtplib.SMTP | None = None
        self._sent_on_connection = 0
        self._last_used = 0.0
        self._lock = asyncio.Lock()

    @property
    def remote_mta(self) -> str:
        """The relay's host name, for the ``Remote-MTA`` field of a DSN."""
        return self._settings.host

    async def _password(self) -> str:
        path = self._settings.password_file
        if path is None:
            return ""
        # Read on every connect so a rotated secret is picked up without a restart; in a
        # thread, because even a small file read can stall on a busy disk.
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        return text.strip("\r\n")

    async def send(self, mail_from: str, rcpt: str, data: bytes) -> RcptOutcome:
        """Relay one message to one recipient and report what the relay said."""
        # The null reverse-path <> (RFC 5321 §4.5.5) is legal and needs no check.
        for address in (a for a in (mail_from, rcpt) if a):
            bad = check_address(address)
            if bad is not None:
                return bad
        budget = attempt_budget(self._delivery).total_seconds()
        async with self._lock:
            try:
                async with asyncio.timeout(budget):
                    reused = self._usable()
                    outcome, stale = await self._send(mail_from, rcpt, data)
                    if stale and reused:
                        # A kept connection the server closed while it sat idle, or whose
                        # recipient limit is used up: nothing of this message was
                        # accepted, so one try on a fresh connection is safe.
                        outcome, _ = await self._send(mail_from, rcpt, data)
                    return outcome
            except TimeoutError:
                self._abort()
                return deferred("4.4.2", "delivery attempt timed out")

    async def _send(self, mail_from: str, rcpt: str, data: bytes) -> tuple[RcptOutcome, bool]:
        try:
            smtp = await self._connection()
        except _TlsUnavailable:
            return deferred("4.7.0", "upstream does not offer STARTTLS, which is required"), False
        except aiosmtplib.SMTPResponseException as exc:
            self._abort()
            return outcome_from_reply(exc.code, exc.message, transaction=False), False
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._abort()
            return _session_failure(exc), False
        return await self._transaction(smtp, mail_from, rcpt, data)

    async def _transaction(
        self, smtp: aiosmtplib.SMTP, mail_from: str, rcpt: str, data: bytes
    ) -> tuple[RcptOutcome, bool]:
        """Run MAIL, RCPT, DATA.

        The flag says nothing of the message was accepted and a fresh connection may do
        better: this one was found dead at MAIL, or its session's recipient limit is used up.
        """
        command = self._delivery.command_timeout.total_seconds()
        options = mail_options(data, smtp.supports_extension)
        if isinstance(options, RcptOutcome):
            return options, False
        stage = "MAIL"
        try:
            await smtp.mail(mail_from, options=options, timeout=command)
            stage = "RCPT"
            await smtp.rcpt(rcpt, timeout=command)
            stage = "DATA"
            # Sent as is: intake already made every line end in CRLF before DKIM signing,
            # and aiosmtplib dot-stuffs (RFC 5321 §4.5.2) and adds the final ".".
            reply = await smtp.data(data, timeout=self._delivery.data_timeout.total_seconds())
        except aiosmtplib.SMTPResponseException as exc:
            outcome = outcome_from_reply(exc.code, exc.message)
            if stage == "RCPT" and exc.code == 452 and self._sent_on_connection > 0:
                # RFC 5321 §4.5.3.1.10: 452 is how a server says its recipient limit is
                # used up, and many count per session. On a connection that has already
                # carried mail, the remedy is a fresh one, not hours of backoff for this
                # and every later message sent down the same exhausted session.
                await self._quit()
                return outcome, True
            if exc.code == 421 or exc.code < 0:
                # 421: the server is closing the channel (RFC 5321 §3.8); a garbled reply
                # leaves the session out of step. Neither connection can be reused.
                self._abort()
            else:
                await self._reset(smtp)
            return outcome, False
        except (aiosmtplib.SMTPTimeoutError, TimeoutError):
            self._abort()
            return deferred("4.4.2", f"{stage}: timed out waiting for the upstream"), False
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Dropped mid-transaction. If it went after the final "." the relay may have
            # the message already; retrying risks a duplicate, which RFC 5321 §6.1 prefers
            # to a loss.
            self._abort()
            lost = deferred("4.4.2", f"{stage}: connection to upstream lost ({exc})")
            return lost, stage == "MAIL"
        except ValueError as exc:
            # aiosmtplib refused to put something on the command line; check_address
            # already caught the known cases, so reset and fail this message only.
            await self._reset(smtp)
            failed = RcptOutcome(OutcomeKind.FAILED, 553, "5.1.3", _clean_text(str(exc)))
            return failed, False
        self._sent_on_connection += 1
        self._last_used = time.monotonic()
        return outcome_from_reply(reply.code, reply.message), False

    def _usable(self) -> bool:
        smtp = self._smtp
        if smtp is None or not smtp.is_connected:
            return False
        if self._sent_on_connection >= self._delivery.connection_reuse:
            return False
        idle = time.monotonic() - self._last_used
        return idle < self._delivery.idle_connection_timeout.total_seconds()

    async def _connection(self) -> aiosmtplib.SMTP:
        if self._usable():
            assert self._smtp is not None
            return self._smtp
        await self._quit()
        smtp = await self._connect()
        self._smtp = smtp
        self._sent_on_connection = 0
        self._last_used = time.monotonic()
        return smtp

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self._settings
        command = self._delivery.command_timeout.total_seconds()
        smtp = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            local_hostname=self._local_hostname,
            timeout=command,
            use_tls=s.tls == "implicit",
            # STARTTLS is driven below so that a missing offer can defer instead of
            # quietly continuing in plaintext (reliability F11).
            start_tls=False,
            validate_certs=s.tls_verify,
            cert_bundle=str(s.tls_ca_file) if s.tls_ca_file else None,
        )
        await smtp.connect(timeout=self._delivery.connect_timeout.total_seconds())
        try:
            await self._ehlo(smtp, command)
            if s.tls == "starttls":
                if not smtp.supports_extension("starttls"):
                    raise _TlsUnavailable()
                await smtp.starttls(server_hostname=s.host, timeout=command)
                # RFC 3207 §4.2: forget what was learnt before TLS and ask again.
                await self._ehlo(smtp, command)
            if s.username:
                await smtp.login(s.username, await self._password(), timeout=command)
        except _TlsUnavailable:
            await self._quit_smtp(smtp)
            raise
        except BaseException:
            smtp.close()
            raise
        return smtp

    @staticmethod
    async def _ehlo(smtp: aiosmtplib.SMTP, timeout: float) -> None:
        try:
            await smtp.ehlo(timeout=timeout)
        except aiosmtplib.SMTPHeloError as exc:
            # RFC 5321 §3.2: a server that does not know EHLO gets HELO.
            if exc.code not in (500, 501, 502, 504) or not smtp.is_connected:
                raise
            await smtp.helo(timeout=timeout)

    async def _reset(self, smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.rset(timeout=self._delivery.command_timeout.total_seconds())
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            self._abort()

    def _abort(self) -> None:
        """Drop the connection without ceremony; the next send reconnects."""
        if self._smtp is not None:
            self._smtp.close()
        self._smtp = None

    async def _quit(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            await self._quit_smtp(smtp)

    async def _quit_smtp(self, smtp: aiosmtplib.SMTP) -> None:
        if not smtp.is_connected:
            smtp.close()
            return
        try:
            # RFC 5321 §4.1.1.10: end the session politely, but never wait long for it.
            await smtp.quit(timeout=min(self._delivery.command_timeout.total_seconds(), 5.0))
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass
        finally:
            smtp.close()

    async def close(self) -> None:
        """Send QUIT and close the connection, if one is open."""
        async with self._lock:
            await self._quit()


class MaildirUpstream:
    """Local delivery into a Maildir (``tmp/``, ``new/``, ``cur/``).

    Each message is written to ``tmp/``, fsynced, renamed into ``new/`` and the directory
    fsynced, so a crash leaves either no file in ``new/`` or a complete one. File I/O runs
    in a thread so the event loop never blocks on the disk.
    """

    _counter = count(1)

    def __init__(self, path: Path) -> None:
        self._path = path
        self._host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")

    @property
    def remote_mta(self) -> str:
        """Local delivery has no remote MTA."""
        return ""

    async def send(self, mail_from: str, rcpt: str, data: bytes) -> RcptOutcome:
        """Write the message into ``new/``; ``DEFERRED 451 4.3.0`` if the disk fails."""
        for address in (rcpt, mail_from):
            # The addresses become header lines here; a CR/LF would forge headers.
            bad = check_address(address) if address else None
            if bad is not None:
                return bad
        header = f"Return-Path: <{mail_from}>\r\nDelivered-To: {rcpt}\r\n".encode("ascii")
        try:
            name = await asyncio.to_thread(self._write, header + data)
        except OSError as exc:
            log.error("maildir delivery to %s failed: %s", self._path, exc)
            return deferred("4.3.0", f"local mailbox write failed: {exc.strerror or exc}")
        return RcptOutcome(OutcomeKind.DELIVERED, 250, "2.0.0", f"delivered to maildir as {name}")

    def _write(self, content: bytes) -> str:
        tmp, new = self._path / "tmp", self._path / "new"
        for sub in ("tmp", "new", "cur"):
            (self._path / sub).mkdir(parents=True, exist_ok=True)
        now = time.time()
        name = (
            f"{int(now)}.M{int(now * 1e6) % 1_000_000}P{os.getpid()}"
            f"Q{next(self._counter)}.{self._host}"
        )
        fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp / name, new / name)
        except BaseException:
            (tmp / name).unlink(missing_ok=True)
            raise
        dir_fd = os.open(new, os.O_RDONLY)
        try:
            # The rename is durable only once the directory entry itself is on disk.
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return name

    async def close(self) -> None:
        """Nothing to close."""


def make_upstream(settings: Settings) -> Upstream:
    """Return a fresh upstream for one worker: SMTP when ``upstream.host`` is set, else Maildir."""
    if settings.upstream.host:
        return SmtpUpstream(settings.upstream, settings.delivery, settings.server.hostname)
    return MaildirUpstream(settings.maildir)
