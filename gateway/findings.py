"""The catalogue of finding codes: public API used in policy keys, metrics, logs and the API.

Each entry says what the finding means in words a dealer understands, which reply a
refusal uses (RFC 3463 enhanced codes), and whether it concerns one recipient (the
recipient is dropped, the rest of the message goes on) or the whole message.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.types import Action


@dataclass(frozen=True, slots=True)
class FindingKind:
    """The fixed facts about one finding code."""

    code: str
    summary: str  # a sentence fragment for replies: "the From: domain is not yours"
    advice: str  # what the dealer should do
    default_action: Action
    reject_enhanced: str = "5.7.1"  # enhanced code when the action is reject
    reject_code: int = 550
    per_recipient: bool = False


CATALOGUE: dict[str, FindingKind] = {
    kind.code: kind
    for kind in (
        FindingKind(
            "from-domain-not-allowed",
            "the From: header uses a domain that does not belong to this dealer",
            "send from one of the dealer's own domains, as listed in its policy file",
            Action.REJECT,
            reject_code=553,
        ),
        FindingKind(
            "multiple-from",
            "the message has more than one From: header",
            "make the CRM template produce exactly one From: header",
            Action.REJECT,
            reject_enhanced="5.6.0",
            reject_code=554,
        ),
        FindingKind(
            "missing-from",
            "the message has no From: header",
            "make the CRM template produce a From: header with the dealer's address",
            Action.REJECT,
            reject_enhanced="5.6.0",
            reject_code=554,
        ),
        # -- duplicates and frequency caps (gateway/pipeline/duplicates.py) --
        FindingKind(
            "duplicate-message",
            "the recipient already received this message",
            "stop the CRM sending the same message once per lead or opportunity",
            Action.DROP,
            per_recipient=True,
        ),
        FindingKind(
            "near-duplicate-message",
            "the recipient already received a message that differs only in details",
            "merge the customer's leads in the CRM so one follow-up goes out, not one per lead",
            Action.DROP,
            per_recipient=True,
        ),
        FindingKind(
            "frequency-cap",
            "the recipient has reached the dealer's limit of commercial messages",
            "send fewer commercial messages to one customer, or mark transactional mail with "
            "X-Mailgate-Category: transactional",
            Action.DROP,
            per_recipient=True,
        ),
        FindingKind(
            "stray-attachment",
            "the message carries an attachment nobody attached (such as unknown1.txt, "
            "ATT00001.htm, noname or winmail.dat), which mailbox providers treat as a virus sign",
            "fix the CRM template or mail settings so that the HTML is sent as the message body "
            "and Outlook rich-text (TNEF) is turned off",
            Action.REPAIR,
        ),
        FindingKind(
            "dangerous-attachment",
            "the message carries a program, script, macro document or disguised file",
            "send documents as PDF or a link instead of programs, macro files or archives of them",
            Action.HOLD,
        ),
        FindingKind(
            "uninspectable-attachment",
            "the message carries an attachment that could not be checked (an encrypted, "
            "damaged or oversized archive, or a format such as RAR or 7-Zip that cannot be "
            "opened)",
            "send documents as PDF, or in a zip archive without a password",
            Action.HOLD,
        ),
        FindingKind(
            "broken-html",
            "the HTML of the message is broken and may show garbled or cut off",
            "repair the template (close every tag and quote) and preview it before sending",
            Action.TAG,
            reject_enhanced="5.6.0",
            reject_code=554,
        ),
        FindingKind(
            "html-without-text",
            "the message has HTML but no plain-text version",
            "have the CRM send a plain-text version with the HTML (multipart/alternative)",
            Action.TAG,
        ),
        FindingKind(
            "unfilled-merge-field",
            "the message contains a template placeholder that was never filled in",
            "check the merge fields of the template and the data behind them",
            Action.TAG,
        ),
        FindingKind(
            "gmail-clipping",
            "the HTML is larger than Gmail shows (102 KB); the end, with the unsubscribe link, "
            "is hidden",
            "shorten the email, or link to the full version, so the HTML stays under 102 KB",
            Action.TAG,
        ),
        FindingKind(
            "encoding",
            "some text of the message is not encoded correctly and may show as garbage",
            "make the CRM declare the character set and transfer encoding it really uses "
            "(UTF-8 is safest)",
            Action.TAG,
            reject_enhanced="5.6.0",
            reject_code=554,
        ),
        FindingKind(
            "header-defect",
            "a header of the message is missing, repeated or too long",
            "make the CRM produce one Date: and one Subject: header and keep header lines short",
            Action.TAG,
            reject_enhanced="5.6.0",
            reject_code=554,
        ),
        FindingKind(
            "link-defect",
            "a link in the message is empty, runs a script or shows a different address than "
            "it opens",
            "make every link point where its text says, with a real http or https address",
            Action.TAG,
        ),
        FindingKind(
            "unsubscribed",
            "the recipient unsubscribed from this dealer's commercial email",
            "send them only transactional mail (X-Mailgate-Category: transactional), or lift "
            "the suppression if the customer asked to be mailed again",
            Action.REJECT,
            per_recipient=True,
        ),
        # -- consent and eligibility windows (gateway/consent/rules.py, pipeline/consent.py) --
        FindingKind(
            "consent-window-expired",
            "the recipient is outside the dealer's consent windows for commercial email",
            "record a newer interaction or the customer's express consent, or send it as "
            "transactional mail if it is one",
            Action.REJECT,
            per_recipient=True,
        ),
        FindingKind(
            "no-opt-in",
            "the recipient has not opted in to, or has opted out of, this commercial email",
            "send commercial email only to customers whose opt-in the CRM has recorded",
            Action.REJECT,
            per_recipient=True,
        ),
        FindingKind(
            "missing-postal-address",
            "the commercial message does not show the dealer's postal address",
            "add the dealer's postal address, as written in its policy file, to the template",
            Action.REJECT,
        ),
        # -- end of consent --
    )
}


def kind_of(code: str) -> FindingKind:
    """Return the catalogue entry for ``code`` (``KeyError`` for an unknown code)."""
    return CATALOGUE[code]
