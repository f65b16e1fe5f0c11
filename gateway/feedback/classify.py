"""Hard or soft, and why: the classification of one failed recipient (pure).

This module owns the mapping from what a bounce says about a recipient (the RFC 3463
enhanced status code, the RFC 5321 reply code, the diagnostic text) to a
``BounceReason`` and the hard flag that suppression acts on.

Decision (issue 18): a filtering gateway relaying "unknown user" is read exactly like
the same reply inside a Sendmail transcript. Hard when the report shows that the
mailbox itself was looked up and refused: a specific X.1.1 status, or the refusal in
reply to RCPT TO (">>> RCPT To:<x>" then "<<< 550 User unknown" in a transcript;
"550 <x>: Recipient address rejected: User unknown" relayed by McAfee, MX Logic,
ActiveHunter and the like). Soft when it shows neither: after DATA in a transcript
(">>> DATA" then "<<< 550 User unknown"), or the gateway's own words without a code
or stage ("(Unknown user x)", "[User unknown]", "Recipient Not Found"), since a
gateway's content or recipient filter says the same after accepting the message, and
the mailbox may exist. Why: a wrong hard flag stops a real customer's mail for good,
while a missed one still counts as a soft bounce and repeated soft bounces suppress for
a while; and one reply must not get two verdicts depending on which MTA carried it.
This follows Sisimai ("filtered") except where the RCPT TO stage is shown, where we say
hard and Sisimai still says filtered (lhost-activehunter-02).

The rules, in order:

1. A specific status code names the reason (RFC 3463 §3: X.1.1 bad mailbox, X.1.2 bad
   system, X.2.2 mailbox full, ...), except when the text says the mailbox is full,
   disabled or the message was blocked, which servers often send with a misleading
   X.1.1.
2. Otherwise the diagnostic text decides, through ``_TEXT_RULES``: ordered tables of
   wordings seen from real servers, most specific first.
3. Otherwise the class decides: 4.X.X (or a delay) is temporary, anything else other.

Only an unknown user or an unknown domain can be hard, and only when the failure is
permanent: a spam block or a full mailbox says nothing about whether the address exists.
Disabled, suspended or discontinued accounts (X.2.1, "account is disabled") are soft, by
decision: the mailbox exists, providers re-enable suspended accounts and recycle
discontinued ones to new owners, so a permanent suppression would outlive the reason;
repeated soft bounces still suppress for a while (``soft_bounce_limit``).
Before these, ``PROVIDER_RULES`` give the meaning a known gateway or provider (found by
the report's own header fields, Reporting-MTA and notice) gives to its wordings.

Where the reference corpora contradict each other we follow Sisimai's model, which is
RFC 3463's: an "unknown user" is hard only when the report shows the mailbox was looked
up and refused, i.e. a specific X.1.1 code or a refusal at RCPT TO. Disabled, suspended or
deactivated mailboxes (X.2.1, "[SUSPEND]", "deactivated mailbox"), a policy code (X.7.X)
and relaying refusals are soft, although Mail::DeliveryStatus::BounceParser reads some of
them as user_unknown or domain_error; a 4XX "user unknown" is soft until it is final.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from gateway.feedback.reports import BounceKind, BounceReason

# RFC 3463 status code: class "." subject "." detail; detail up to 3 digits (X.7.606).
STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
SMTP_CODE = re.compile(r"(?<![\d.#-])([245][0-5]\d)(?:[ -]|$)")

# Specific codes (RFC 3463 §3.2-3.9 and the registry) and the reason each names.
_STATUS_REASONS: dict[str, BounceReason] = {
    "1.1": BounceReason.UNKNOWN_USER,  # bad destination mailbox address
    "1.6": BounceReason.UNKNOWN_USER,  # destination mailbox has moved, no forwarding address
    "1.10": BounceReason.DOMAIN_NOT_FOUND,  # RFC 7505 §4.2: recipient domain has a null MX
    "1.2": BounceReason.DOMAIN_NOT_FOUND,  # bad destination system address
    "4.4": BounceReason.DOMAIN_NOT_FOUND,  # unable to route (no MX/A: NXDOMAIN)
    "2.2": BounceReason.MAILBOX_FULL,  # mailbox full
    "2.3": BounceReason.POLICY,  # message length exceeds administrative limit
    "3.4": BounceReason.POLICY,  # message too big for system
    "7.1": BounceReason.POLICY,  # delivery not authorized, message refused
    "7.0": BounceReason.POLICY,
    "1.3": BounceReason.UNKNOWN_USER,  # bad destination mailbox address syntax: never valid
    "1.7": BounceReason.POLICY,  # bad sender's mailbox address syntax: not the recipient
    "1.8": BounceReason.POLICY,  # bad sender's system address: not the recipient
    "2.0": BounceReason.OTHER,  # other or undefined mailbox status
    "2.4": BounceReason.OTHER,  # mailing list expansion problem
}
_STATUS_SUBJECT_REASONS: dict[str, BounceReason] = {
    "6": BounceReason.OTHER,  # message content or media status
    "7": BounceReason.POLICY,  # security or policy status (RFC 3463 §3.8)
}

_FLAGS = re.IGNORECASE

# Text tables, each (reason, pattern); the first pattern that matches wins.
_FULL = re.compile(
    r"mail ?box (?:is |was |size )?(?:full|limit|exceeded)|over ?quota|quota (?:exceeded|exceed|"
    r"full)|exceeded (?:the |his |her |its )?(?:storage|quota|mailbox)|(?:storage|disk) "
    r"(?:quota|space|full)|insufficient (?:system )?storage|mailbox (?:has )?exceeded|"
    r"not enough (?:disk )?space|is over (?:the )?(?:quota|limit)|full mailbox|mailfolder is full|"
    r"user has exceeded|mailbox quota|(?:inbox|mail ?box) is full|account is full|"
    r"exceeds? (?:the )?(?:storage|quota)|out of (?:disk )?space|space (?:is )?not enough|"
    r"no space left|too many messages in|message would exceed|size limit exceeded",
    _FLAGS,
)
_DISABLED = re.compile(
    r"(?:account|mailbox|user|address)(?: has been| is|) (?:disabled|suspended|deactivated|"
    r"inactive|locked|blocked|expired|frozen)|\bsuspend|disabled (?:account|mailbox|user)|"
    r"inactive (?:account|mailbox|user)|not (?:an )?active (?:user|account|mailbox)",
    _FLAGS,
)
_SPAM = re.compile(
    r"spam|black ?list|block ?list|\brbl\b|dnsbl|spamhaus|spamcop|sorbs|barracuda|\bubl\b|"
    r"uribl|surbl|reputation|junk|bulk mail|content (?:rejected|filter)|virus|malware|"
    r"phish|blocked (?:by|because|for|due|using)|(?:ip|sender|domain|host|connection|message)"
    r"(?: address)? (?:is |was |has been )?(?:blocked|listed|banned|rejected as)|"
    # "not listed in the Domino Directory / public Name & Address Book" is Lotus Domino's
    # unknown user, not a block list.
    r"(?<!not )listed (?:in|at|on|by)(?! (?:the |our |this )?(?:domino |public |local )?"
    r"(?:directory|name|names|address book))|"
    r"rejected (?:by|due to|because of) (?:the )?(?:content|filter|anti)|unsolicited|"
    r"high (?:probability|score)|suspicious|looks like|\bscore\b|rejected for policy reasons",
    _FLAGS,
)
_DOMAIN = re.compile(
    r"host (?:or domain name )?(?:unknown|not found)|unknown (?:host|domain)|"
    r"domain (?:name )?(?:not found|does ?n[o']t exist|is not (?:valid|registered)|lookup failed)|"
    r"no such (?:domain|host)|name or service not known|\bno mx\b|nxdomain|non-?existent domain|"
    r"unrouteable (?:mail )?(?:domain|address)|unroutable domain|could not be resolved|"
    r"unresolvable|"
    r"does not accept mail|null mx|invalid domain|mx (?:record|lookup)s? (?:not found|failed)|"
    r"no (?:valid )?(?:mx|dns|mail exchanger)|hostname (?:lookup failed|not found)|"
    r"domain is not reachable|domain (?:is )?unreachable|unknown mail ?domain|"
    r"domain (?:could not|cannot) be found|name server|domain has no|illegal host|"
    r"host .{0,80} not found|"
    # Exim's wording for a null MX (RFC 7505): the domain publishes that it takes no mail.
    r"indicated no smtp service",
    _FLAGS,
)
_USER = re.compile(
    r"user ?unknown|unknown (?:user|local ?part|recipient|address|e-?mail|mailbox|account|alias)|"
    r"no such (?:user|mailbox|recipient|account|address|person|local user|e-?mail)|"
    r"(?:user|mailbox|recipient|account|address|addressee|e-?mail(?: address)?) "
    r"(?:does ?n[o']t exist|does not exist|not found|unknown|not known|invalid|"
    r"not listed|is not valid|is invalid|not exist|doesn't exist|not in our directory|"
    r"is unknown|could not be found|no longer (?:exists|valid|available|in use))|"
    r"invalid (?:recipient|mailbox|address|user|e-?mail)|does not exist|doesn't exist|"
    r"not (?:a )?(?:valid|known) (?:user|mailbox|recipient|address)|"
    r"recipientnotfound|not our customer|is not a known user|bad destination|"
    r"undeliverable address|no valid recipients|unknown or illegal|addressee unknown|"
    r"mailbox unavailable|mailbox not available|no mail ?box|mailbox name not allowed|"
    r"bad[_ -]recipient|"
    r"rejected recipient|"
    r"no longer (?:valid|available|active|in service)|recipient address rejected: access denied|"
    r"recipient address rejected(?:\.|\s*$|\s*\()|address (?:couldn't|could not|cannot|can't) "
    r"be found|address not found|not listed in [^.\n]{0,60}(?:directory|address book)|"
    # Exchange: "The recipient name is not recognized" (MSEXCH "Unknown Recipient").
    r"(?:recipient|user)(?: name)? (?:is )?not recognized|"
    r"(?:has |have )?no (?:e-?mail )?account (?:here|on this (?:system|server)|by that name)|"
    r"there is no (?:such )?(?:user|mailbox|account) (?:by that name|here|with that name)|"
    # The same refusal in the languages bounces come in (German, French, Spanish, Italian,
    # Portuguese, Dutch, Chinese, Japanese, Russian).
    r"unbekannt|existiert nicht|gibt es nicht|inconnu|n'existe pas|no existe|"
    r"inesistente|non esiste|n[aã]o existe|bestaat niet|onbekend|"
    r"用户不存在|收件人不存在|帐号不存在|账号不存在|用戶不存在|不存在的用户|"
    r"存在しません|宛先不明|не существует|нет такого|"
    r"invalid (?:final )?(?:delivery )?user ?id|not an active address|"
    r"unknown account|mailbox (?:is )?not (?:found|present)|user not|has moved|"
    r"no such|not a valid|badrcptto|non-?existent (?:user|mailbox|address|account)|"
    r"invalid mailbox|unable to find|address lookup|user doesn|isn't a valid|"
    r"not exist|illegal (?:user|alias)|is not a valid|mailbox .{0,40}does not exist|"
    # Trend Micro InterScan Messaging Security Suite: "Unable to deliver message to <x>
    # ... Please check if address is correct.", its wording for a refused recipient.
    r"check if (?:the )?address is correct|"
    # Directory gateways (LLNL): "The address to which your message was addressed, x,
    # did not exactly match an LLNL email address."
    r"(?:did|does)\s+not\s+(?:exactly\s+)?match\s+(?:an?|any)\s+(?:\w{1,20}\s+)?(?:e-?mail\s+)?"
    r"(?:address|user|account|mailbox)\b",
    _FLAGS,
)
_POLICY = re.compile(
    r"relay(?:ing)? (?:denied|not permitted|access denied|prohibited)|not (?:permitted|allowed) "
    r"to relay|authenticat|\bspf\b|\bdkim\b|\bdmarc\b|policy|not authori[sz]ed|access denied|"
    r"too (?:large|big)|size (?:exceeds|limit)|message (?:length|size) exceeds|"
    r"reverse dns|\bptr\b|tls",
    _FLAGS,
)
# Wordings that override even a specific status code: a rate limit or a recipient's own
# filter refuses this message now, whatever X.1.1 the server attached to it.
_THROTTLED = re.compile(
    r"too many (?:recipients|messages|connections|mails|emails)|rate limit|sending limit|"
    r"recipient preferences|may not have permission to post|not (?:a )?member of|"
    r"only (?:accepts|members)|try again later|(?:max(?:imum)? )?message size exceeded",
    _FLAGS,
)
# The local delivery program failed (Exim "pipe to |/path", procmail, maildrop, a
# sendmail "mailer" or ".forward" program): the mailbox's own filter or program broke,
# which says nothing about whether the address exists (Sisimai "mailererror", soft),
# whatever "No such user" the program itself printed.
_MAILER = re.compile(
    r"pipe to \||\bprocmail:|\bmaildrop:|unknown mailer error|mailer error|"
    r"command died with status|command output:",
    _FLAGS,
)
# A DNS failure that is temporary (SERVFAIL, malformed answer), not a missing domain.
_DNS_TEMPFAIL = re.compile(
    r"host not found, try again|"
    r"temporary failure in name resolution|servfail|host not reachable|"
    r"name service error[^\n]{0,80}try again",
    _FLAGS,
)
# Generic refusals: used only when nothing more specific was said anywhere.
_REFUSED = re.compile(r"refused|denied|not allowed|prohibited|rejected|not accepted", _FLAGS)
_TEMPORARY = re.compile(
    r"try again|temporar|retry|timed? ?out|deferred|delayed|connection (?:refused|reset|lost|"
    r"closed)|network|could not connect|unable to connect|no route|expired|"
    r"has not been delivered|will (?:continue|keep) trying|not yet been delivered",
    _FLAGS,
)

# The sender's address, domain or host was refused: says nothing about the recipient.
_SENDER = re.compile(
    r"sender (?:address |domain )?(?:rejected|refused|denied|verify failed|is not allowed)|"
    r"sender (?:address |domain )?(?:is )?(?:invalid|unknown|not found|does not exist)|"
    r"(?:domain|address) of sender|mail from (?:address )?(?:rejected|refused)|"
    r"(?:unknown|invalid|unresolvable) sender|sender domain|after mail from|>>> mail from|"
    r"my name was rejected|\bhelo\b|\behlo\b",
    _FLAGS,
)
# Rejected once the content was sent: the server accepted the recipient at RCPT TO.
AFTER_DATA = re.compile(
    r"after (?:end of )?data|end of data command|in reply to (?:end of )?data|"
    r"after the message was sent|after DATA|smtp command\W+data\b|>>> DATA",
    _FLAGS,
)

# The refusal came in reply to RCPT TO (the SMTP stage where a server checks mailboxes):
# Postfix "in reply to RCPT TO command", Exim "after RCPT TO", qmail "does not like
# recipient", Yahoo "[RCPT_TO]".
_EXPLICIT_UNKNOWN = re.compile(r"user ?unknown|unknown user|no such user", _FLAGS)
RCPT_STAGE = re.compile(
    r"rcpt[ _]?to|\brcpt\b|does not like recipient|recipient address rejected", _FLAGS
)

# The literal "User unknown" under an X.7.X code: Sun/Oracle Messaging Server access
# mappings ("550 5.7.1 550 User Unknown") and Postfix/sendmail restriction classes
# ("550 5.7.1 <x>: Recipient address rejected: User unknown", as SFR sends to senders it
# filters) refuse by rule with this canned text. The code says it is a policy refusal,
# which says nothing about the mailbox: soft (Sisimai "filtered"). A recipient lookup
# worded otherwise ("No such user", "No mailbox found") under 5.7.1 stays hard.
_POLICY_USER_UNKNOWN = re.compile(r"\buser unknown\b", _FLAGS)

# (reason, pattern, overrides a specific status code), the first match wins; weak wordings
# come last and lose to any strong wording in the surrounding notice.
_TEXT_RULES: tuple[tuple[BounceReason, re.Pattern[str], bool], ...] = (
    (BounceReason.POLICY, _SENDER, True),
    (BounceReason.POLICY, _THROTTLED, True),
    (BounceReason.OTHER, _MAILER, True),
    (BounceReason.MAILBOX_FULL, _FULL, True),
    (BounceReason.OTHER, _DISABLED, True),
    (BounceReason.OTHER, _DNS_TEMPFAIL, True),
    (BounceReason.DOMAIN_NOT_FOUND, _DOMAIN, False),
    (BounceReason.UNKNOWN_USER, _USER, False),
    (BounceReason.BLOCKED_SPAM, _SPAM, True),
    (BounceReason.POLICY, _POLICY, False),
    (BounceReason.TEMPORARY, _TEMPORARY, False),
)
_WEAK_RULES: tuple[tuple[BounceReason, re.Pattern[str], bool], ...] = (
    (BounceReason.POLICY, _REFUSED, False),
)
_NO_MAIL_CODES = frozenset({"521", "556"})
_HARD = frozenset({BounceReason.UNKNOWN_USER, BounceReason.DOMAIN_NOT_FOUND})


class ProviderRule(NamedTuple):
    """A meaning one provider or MTA gives to a wording, found by who sent the report.

    ``origin`` is searched in the report's origin (its own header fields, one per line
    as ``name: value``, its Reporting-MTA and the start of the notice), ``recipient`` in
    the failed address, ``wording`` in what the report says about that recipient. With
    ``without_code`` the rule applies only when no specific status code (X.0.0 or none)
    was given: a specific X.1.1 from the server behind a gateway still names the mailbox.
    With ``without_rcpt_stage`` it applies only when the report does not show that the
    refusal came in reply to RCPT TO: a gateway relaying the next server's RCPT TO
    refusal is read like a Sendmail transcript showing the same reply at RCPT TO.
    """

    origin: re.Pattern[str] | None
    recipient: re.Pattern[str] | None
    wording: re.Pattern[str]
    reason: BounceReason
    without_code: bool = False
    without_rcpt_stage: bool = False


# Any "no such user" wording _USER knows, as the filtering gateways below relay it.
_ANY_UNKNOWN = re.compile(
    rf"{_USER.pattern}|recipient not found|this user doesn't have an? \S+ account", _FLAGS
)
_M = re.IGNORECASE | re.MULTILINE

# Provider-specific meanings, most specific first; the first rule that matches wins and
# its reason is soft. Where Sisimai and Mail::DeliveryStatus::BounceParser disagree, we
# follow Sisimai: a recipient is hard only when the report shows the mailbox itself was
# looked up and not found.
PROVIDER_RULES: tuple[ProviderRule, ...] = (
    # au by KDDI answers "550 : User unknown" when the recipient's own sender filter
    # ("designated domain reception") refuses the mail; the mailbox exists.
    ProviderRule(
        None,
        re.compile(r"@(?:ezweb\.ne\.jp|au\.com)$", re.I),
        re.compile(r"\b550[ :]+:?\s*user unknown", re.I),
        BounceReason.POLICY,
    ),
    # Filtering gateways that accept the message for the domain, then relay it to the
    # mailbox server and report its refusal themselves: McAfee Email Gateway / Web
    # Security Appliance (X-NAI-Header), its hosted MX Logic service (mxlogic.net),
    # ActiveHunter (X-AHMAILID), MailFoundry ("(MAILFOUNDRY)" in Received), SurfControl
    # E-mail Filter (X-Mailer), Zoho Mail's gateway, Apache James as run by SMS gateways
    # (JavaMail Message-ID, "Message details:"), HP OpenMail and the gateways that print
    # "---The following addresses had delivery errors---" with "[User unknown]", and the
    # Exchange 4.0 Internet Mail Connector ("Recipient Not Found MSEXCH:IMC"). Without a
    # specific status code and without the RCPT TO stage, the "unknown user" they relay
    # may be their own content or recipient filter, seen after DATA: soft, as Sisimai
    # reads it ("filtered"). With the RCPT TO stage shown it is hard, like the same
    # reply in a Sendmail transcript (see the decision at the top of this module).
    ProviderRule(
        re.compile(
            r"^x-nai-header:.*mcafee|mxlogic\.net|^x-ahmailid:|\(mailfoundry\)|"
            r"^x-mailer:.*surfcontrol|^x-mailer: zoho mail|mailer-daemon@mail\.zoho\.com|"
            r"^message-id:.*javamail|by openmail mailer|"
            r"^-+the following addresses had delivery errors-+$|"
            r"^x-mailer:.*internet mail connector",
            _M,
        ),
        None,
        _ANY_UNKNOWN,
        BounceReason.POLICY,
        without_code=True,
        without_rcpt_stage=True,
    ),
    # Amazon SES prefixes the remote reply with its own label ("5.1.0 - Unknown address
    # error 550-'<reply>'"). SES says "Unknown address error" for any RCPT TO refusal, so
    # a remote X.7.X inside it is a policy refusal (Sisimai "securityerror"); and "5.3.0 -
    # Other mail system problem" means SES did not see a mailbox refusal, whatever the
    # remote text says (Sisimai "filtered"). Both soft.
    ProviderRule(
        re.compile(r"amazonses\.com", re.I),
        None,
        re.compile(
            r"\b5\.1\.0 - unknown address error \d{3}[- ]'?[45]\.7\.\d{1,3}\b|"
            r"\b5\.3\.0 - other mail system problem\b",
            re.I,
        ),
        BounceReason.POLICY,
    ),
    # Yahoo's legacy qmail-based MX bounces "<rcpt>: This user doesn't have a <domain>
    # account" in its own qmail-format notice, after accepting the whole message, with no
    # SMTP stage nor code: Sisimai reads it "filtered", soft. The same words relayed as
    # an SMTP reply ("554 delivery error: dd This user ...") came at RCPT TO and stay hard.
    ProviderRule(
        None,
        None,
        re.compile(r"^<[^<>\s]+>:\s*this user doesn't have an? \S+ account", re.I),
        BounceReason.POLICY,
        without_code=True,
    ),
)


# The refusal a gateway relays was the next server's reply to RCPT TO (Postfix "in
# reply to RCPT TO command" and "Recipient address rejected", a transcript's ">>> RCPT
# To:", qmail "does not like recipient", Yahoo "[RCPT_TO]"); an envelope summary
# ("RCPT TO: x" among "MAIL FROM:", "Subject:") says nothing about the stage.
_RELAYED_AT_RCPT = re.compile(
    r"(?:in reply to|after|during) (?:the )?rcpt to|>>> ?rcpt to|rcpt to command|"
    r"\[rcpt_to\]|does not like recipient|recipient address rejected",
    re.IGNORECASE,
)


def provider_reason(
    address: str, text: str, origin: str = "", status: str | None = None
) -> BounceReason | None:
    """A reason that ``PROVIDER_RULES`` give for this recipient and wording, or ``None``."""
    specific = bool(status) and status_reason(status) is not None
    at_rcpt = _RELAYED_AT_RCPT.search(text[:4096]) is not None
    for rule in PROVIDER_RULES:
        if rule.without_code and specific:
            continue
        if rule.without_rcpt_stage and at_rcpt:
            continue
        if rule.recipient is not None and not rule.recipient.search(address):
            continue
        if rule.origin is not None and not rule.origin.search(origin[:16384]):
            continue
        if rule.wording.search(text[:4096]):
            return rule.reason
    return None


def _match(
    text: str, rules: tuple[tuple[BounceReason, re.Pattern[str], bool], ...]
) -> tuple[BounceReason, bool] | None:
    sample = text[:4096]
    for reason, pattern, overrides in rules:
        if pattern.search(sample):
            return reason, overrides
    return None


def text_reason(text: str) -> BounceReason | None:
    """The reason the wording of ``text`` names, or ``None`` when nothing matches."""
    found = _match(text, _TEXT_RULES) or _match(text, _WEAK_RULES)
    return found[0] if found is not None else None


def status_reason(status: str | None) -> BounceReason | None:
    """The reason a specific RFC 3463 code names, or ``None`` for X.0.0 and unknown codes."""
    if not status:
        return None
    _, _, rest = status.partition(".")
    subject, _, _detail = rest.partition(".")
    if rest in _STATUS_REASONS:
        return _STATUS_REASONS[rest]
    return _STATUS_SUBJECT_REASONS.get(subject)


def classify(
    kind: BounceKind,
    status: str | None,
    smtp_code: str | None,
    diagnostic: str,
    context: str = "",
    rcpt_stage: bool = False,
) -> tuple[BounceReason, bool]:
    """Return ``(reason, hard)`` for one recipient of a bounce or delay report.

    ``diagnostic`` is what the report says about this recipient (the DSN
    ``Diagnostic-Code`` or the line next to the address); ``context`` is the surrounding
    notice, weaker evidence used only when the diagnostic names no reason.
    ``rcpt_stage`` says the notice shows the refusal came in reply to RCPT TO.
    """
    temporary = (
        kind is BounceKind.DELAY
        or (status or "").startswith("4")
        or (not status and (smtp_code or "").startswith("4"))
    )
    # Strong wordings of the diagnostic, then of the notice, then weak ones ("rejected").
    in_diagnostic = _match(diagnostic, _TEXT_RULES)
    found = (
        in_diagnostic
        or _match(context, _TEXT_RULES)
        or (in_diagnostic := _match(diagnostic, _WEAK_RULES))
        or _match(context, _WEAK_RULES)
    )
    by_text, overrides = found if found is not None else (None, False)
    from_diagnostic = in_diagnostic is not None
    by_status = status_reason(status)
    reason: BounceReason | None
    if by_status in _HARD:
        # Only the server's words about this recipient can contradict its status code.
        reason = by_text if overrides and from_diagnostic else by_status
    elif by_status is BounceReason.POLICY:
        # X.7.X: refused by policy; the server's own words may say which (spam, no such user).
        usable = by_text not in (None, BounceReason.TEMPORARY)
        usable = usable and (from_diagnostic or by_text not in _HARD)
        if by_text in _HARD and _POLICY_USER_UNKNOWN.search(diagnostic[:4096]):
            usable = False
        reason = by_text if usable else by_status
    elif by_status is not None:
        # A code about something else than the address (list, content): the text may say
        # more, but cannot turn it into a bad address.
        useful = by_text not in (None, BounceReason.TEMPORARY) and by_text not in _HARD
        reason = by_text if useful else by_status
    else:
        reason = by_text
    if (
        smtp_code in _NO_MAIL_CODES
        and not temporary
        and reason in (None, BounceReason.OTHER, BounceReason.POLICY, BounceReason.TEMPORARY)
    ):
        # RFC 7504: 521 "host does not accept mail", 556 "domain does not accept mail" (a
        # null MX, RFC 7505 §4.3): no address there can receive (Sisimai "notaccept").
        reason = BounceReason.DOMAIN_NOT_FOUND
    if reason is None or reason is BounceReason.TEMPORARY:
        reason = BounceReason.TEMPORARY if temporary else BounceReason.OTHER
    if (
        reason in _HARD
        and by_status not in _HARD
        and AFTER_DATA.search(f"{diagnostic[:4096]} {context[:4096]}")
    ):
        # Refused after DATA: the address was accepted at RCPT TO, so it exists. A
        # specific X.1.1 still names the mailbox: with pipelining, gateways such as
        # m-FILTER and sendmail report DATA as the last command for a RCPT TO refusal.
        reason = BounceReason.POLICY
    if (
        reason is BounceReason.UNKNOWN_USER
        and (status or "")[1:] == ".2.1"
        and not (
            (rcpt_stage or RCPT_STAGE.search(f"{diagnostic[:4096]} {context[:4096]}"))
            and _EXPLICIT_UNKNOWN.search(diagnostic[:4096])
        )
    ):
        # "550 5.2.1 <x>... User Unknown" is the reply of sendmail milters and of the
        # filters in front of PowerMTA, Sun Messaging Server, Amazon WorkMail and Zoho.
        # RFC 3463 X.2.1 means "mailbox disabled"; the wording only says "unknown" when
        # the refusal came at RCPT TO. Otherwise (DATA, or no SMTP stage named) it is the
        # recipient's filter or a suspended mailbox: Sisimai's "filtered"/"suspend", soft.
        # "Mailbox not available" under X.2.1 is a disabled account even at RCPT TO
        # (Mail::DeliveryStatus::BounceParser's user_disabled).
        reason = BounceReason.POLICY
    # A 4XX "user unknown" is retried by the sender; it proves nothing yet.
    return reason, reason in _HARD and not temporary


def find_status(text: str) -> str | None:
    """The first RFC 3463 status code in ``text``, or ``None``."""
    match = STATUS.search(text)
    return match.group(0) if match else None


def find_smtp_code(text: str) -> str | None:
    """The first RFC 5321 reply code (2XX-5XX at a word start) in ``text``, or ``None``."""
    for match in SMTP_CODE.finditer(text[:4096]):
        code = match.group(1)
        if code[0] in "45":
            return code
    return None
