"""The frozen records the feedback parsers produce (pure).

This module owns what a parsed complaint or bounce looks like once it leaves the parsers:
``ComplaintReport`` (RFC 5965 ARF, RFC 6591 DMARC failure reports and the non-ARF
provider formats), ``BounceReport`` with one ``BounceRecipient`` per address (RFC 3464
DSNs and the non-standard MTA formats) and ``FeedbackResult``, the answer of
``classify_message``. Suppression and the trust checks read these and nothing else, so
every field says where it came from and nothing here has been checked yet: a reference in
``refs`` is only a claim until ``RefCodec.verify`` accepts it for the recipient.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from gateway.mail.addresses import normalise
from gateway.tracking import RefToken


class FeedbackKind(enum.StrEnum):
    """What a received message is, as far as feedback goes."""

    COMPLAINT = "complaint"  # a feedback-loop report (ARF, JMRP, DMARC failure report)
    BOUNCE = "bounce"  # at least one recipient failed permanently or finally
    DELAY = "delay"  # only delay warnings: delivery is still being retried
    OTHER = "other"  # anything else: auto-replies, ordinary mail, junk


class BounceKind(enum.StrEnum):
    """Whether a recipient failed (RFC 3464 ``Action: failed``) or is only delayed."""

    BOUNCE = "bounce"
    DELAY = "delay"


class BounceReason(enum.StrEnum):
    """Why delivery to one recipient failed; the vocabulary of suppression and reports.

    Only ``UNKNOWN_USER`` and ``DOMAIN_NOT_FOUND`` can be hard: they say the address itself
    cannot receive mail. A spam block, a policy refusal or a full mailbox says something
    about this message or this moment, not about the address.
    """

    UNKNOWN_USER = "unknown-user"  # RFC 3463 X.1.1, X.1.6, X.1.10 and their wordings
    MAILBOX_FULL = "mailbox-full"  # X.2.2, X.3.1 and quota wordings
    DOMAIN_NOT_FOUND = "domain-not-found"  # X.1.2, X.4.4, null MX (RFC 7505)
    BLOCKED_SPAM = "blocked-spam"  # content or sender reputation judged as spam
    POLICY = "policy"  # X.7.x: authentication, relaying, size, local rules
    TEMPORARY = "temporary"  # 4.X.X or a delay that is still being retried
    OTHER = "other"


# RFC 5965 §7.3 registry, plus "opt-out" from the ARF drafts still sent by some providers.
ABUSE_TYPES = frozenset({"abuse", "fraud", "virus"})


@dataclass(frozen=True, slots=True)
class ComplaintReport:
    """One feedback report about one message we may have sent.

    ``feedback_type`` is lower-case (``abuse``, ``fraud``, ``virus``, ``other``,
    ``not-spam``, ``auth-failure``, ``opt-out``). ``reported_recipients`` are the
    complainants' addresses as the report gives them (``Original-Rcpt-To``,
    ``Removal-Recipient``, the JMRP original recipient, or the original's ``To:``);
    providers often redact them, so the tuple may be empty or hold placeholders.
    ``refs`` are the references found in the enclosed original (``X-Mailgate-Ref``
    headers first, then VERP return paths), unverified, without duplicates.
    """

    feedback_type: str
    variant: str  # "arf", "jmrp" (Microsoft), "dmarc-text" (RFC 6591 without the ARF part)
    arrived_at: datetime | None  # RFC 5965 §3.2 Arrival-Date (or Received-Date)
    reported_recipients: tuple[str, ...]
    original_mail_from: str | None
    original_rcpt_to: tuple[str, ...]
    source_ip: str | None
    user_agent: str | None
    reporting_mta: str | None
    refs: tuple[RefToken, ...]
    subject: str | None  # of the enclosed original, RFC 2047 decoded
    original_message_id: str | None
    auth_failure: str | None = None  # RFC 6591 §3.2 (dkim, spf, dmarc, ...)
    reported_domain: str | None = None

    @property
    def is_abuse(self) -> bool:
        """True for a report that counts against complaint rates (abuse, fraud, virus).

        ``opt-out`` asks for suppression only; ``auth-failure`` and ``not-spam`` are
        neither complaints nor unsubscriptions.
        """
        return self.feedback_type in ABUSE_TYPES


@dataclass(frozen=True, slots=True)
class BounceRecipient:
    """What one bounce says about one recipient.

    ``address`` is the failed address as written (without ``rfc822;``, angle brackets, an
    X.400 ``SMTP=`` prefix or stray quotes). ``status`` is the RFC 3463 code (``5.1.1``)
    and ``smtp_code`` the RFC 5321 reply code (``550``), each ``None`` when the bounce
    carries none. ``diagnostic`` is the remote server's or the MTA's own text, unfolded
    and capped.

    ``confirmed`` is False when the report does not tie the failure to a full address:
    it names nobody (``address`` is empty), only a bare local part or a screen name that
    nothing in the message resolves, or the address comes only from the returned
    original's header fields. Such a recipient is never ``hard``: only the sent log can
    say whom it was about (``FeedbackIngest`` resolves it through a verified reference).
    ``permanent`` is the verdict on the failure itself (unknown user or domain, final),
    which ``hard`` applies to ``address`` only when it is confirmed.

    ``original_recipient`` is RFC 3464 §2.3.1's ``Original-Recipient`` when it differs
    from the ``Final-Recipient`` in ``address`` (forwarding, aliases): the address we
    sent to, the one suppression acts on.
    """

    address: str
    hard: bool
    kind: BounceKind
    reason: BounceReason
    status: str | None
    smtp_code: str | None
    diagnostic: str
    confirmed: bool = True
    permanent: bool = False
    original_recipient: str | None = None

    def names(self, address: str) -> bool:
        """True when ``address`` is this recipient's final or original address."""
        wanted = normalise(address)
        mine = {self.address, self.original_recipient or ""}
        return bool(wanted) and wanted in {normalise(a) for a in mine if a}


@dataclass(frozen=True, slots=True)
class BounceReport:
    """A non-delivery or delay report about one message we may have sent.

    ``variant`` names the format that recognised it (``rfc3464``, ``qmail``, ``exim``,
    ...). ``refs`` are the references found in the returned original and in the bounce's
    own envelope headers (VERP), unverified, without duplicates.
    """

    recipients: tuple[BounceRecipient, ...]
    refs: tuple[RefToken, ...]
    original_message_id: str | None
    reporting_mta: str | None
    variant: str

    @property
    def kind(self) -> FeedbackKind:
        """``BOUNCE`` if any recipient failed, else ``DELAY``."""
        if any(r.kind is BounceKind.BOUNCE for r in self.recipients):
            return FeedbackKind.BOUNCE
        return FeedbackKind.DELAY


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    """What ``classify_message`` found: exactly one of the reports, or neither for OTHER."""

    kind: FeedbackKind
    complaint: ComplaintReport | None = None
    bounce: BounceReport | None = None

    @property
    def refs(self) -> tuple[RefToken, ...]:
        """The references of whichever report was found (empty for OTHER)."""
        if self.complaint is not None:
            return self.complaint.refs
        if self.bounce is not None:
            return self.bounce.refs
        return ()
