"""Suggestions for mistyped recipient domains of the big mailbox providers (pure).

Only used once a domain has already failed validation, to turn ``550 5.1.2`` into an
answer a CRM user can act on ("did you mean gmail.com?"). The distance is the optimal
string alignment distance (Levenshtein plus swapping two neighbours), because most
typos of short names are one slip: ``gmial.com``, ``gmail.con``, ``hotmial.com``.
"""

from __future__ import annotations

__all__ = ["PROVIDERS", "distance", "suggest"]

# The domains most consumer addresses in North American dealership CRMs end in.
PROVIDERS: tuple[str, ...] = (
    "gmail.com", "googlemail.com", "yahoo.com", "ymail.com", "rocketmail.com",
    "hotmail.com", "outlook.com", "live.com", "msn.com", "aol.com", "icloud.com",
    "me.com", "mac.com", "comcast.net", "att.net", "sbcglobal.net", "bellsouth.net",
    "verizon.net", "cox.net", "charter.net", "earthlink.net", "protonmail.com",
    "proton.me", "gmx.com", "mail.com", "shaw.ca", "rogers.com", "sympatico.ca",
    "yahoo.ca", "hotmail.ca", "yahoo.co.uk", "hotmail.co.uk",
)  # fmt: skip


def distance(a: str, b: str, limit: int = 3) -> int:
    """Optimal string alignment distance between ``a`` and ``b`` (at most ``limit``).

    Returns ``limit`` when the distance is ``limit`` or more (the caller only cares
    about small distances, so long strings are not compared in full).
    """
    if abs(len(a) - len(b)) >= limit:
        return limit
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) >= limit:
            return limit
        previous2, previous = previous, current
    return min(previous[-1], limit)


def suggest(domain: str) -> str | None:
    """The provider domain ``domain`` is most likely a typo of, or ``None``.

    A suggestion needs one edit for names up to eight characters (``aol.con``) and at
    most two for longer ones, and must be the single closest provider: an ambiguous
    guess is worse than none.
    """
    domain = domain.lower().rstrip(".")
    if domain in PROVIDERS:
        return None
    allowed = 1 if len(domain) <= 8 else 2
    scored = sorted((distance(domain, p), p) for p in PROVIDERS)
    best_distance, best = scored[0]
    if best_distance > allowed:
        return None
    if len(scored) > 1 and scored[1][0] == best_distance:
        return None
    return best
