"""What an alert e-mail says (``alerts.render``, pure): wording per cause, audience and reply.

A manual suspension is told as the operator's decision, not as complaints; the subjects
are named "above" (they come before the steps) and only when there are any; a reply is
invited only when it reaches someone; the dealer's copy carries the reason and never the
operator's name or internal note, which the operators' copy shows.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from gateway.alerts import Alert, alert_message, next_steps, render
from gateway.reputation.records import (
    Actor,
    DayCounts,
    DealerState,
    EventKind,
    Evidence,
    FeedbackEvent,
    StateChange,
)
from gateway.types import DealerId, MessageId

AT = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
DEALER = DealerId("example-motors")
THRESHOLDS = {
    "complaint_warn": 0.001, "complaint_suspend": 0.002, "bounce_warn": 0.05,
    "bounce_suspend": 0.10, "min_volume_complaints": 1000.0, "min_volume_bounces": 1000.0,
}  # fmt: skip
QUIET = DayCounts(sent=4000, delivered=3990)


def change(
    state: DealerState = DealerState.SUSPENDED,
    actor: Actor = Actor.ADMIN,
    counts: DayCounts = QUIET,
    reason: str = "Your CRM sent to a purchased list; we paused your mail.",
) -> StateChange:
    rates = {
        "complaint_rate": counts.complaints / counts.delivered if counts.delivered else 0.0,
        "bounce_rate": counts.hard_bounces / counts.sent if counts.sent else 0.0,
    }
    return StateChange(
        dealer_id=DEALER,
        state=state,
        previous=DealerState.ACTIVE if state is not DealerState.RESUMED else DealerState.SUSPENDED,
        reason=reason,
        actor=actor,
        at=AT,
        evidence=Evidence(date(2026, 4, 28), date(2026, 5, 4), counts, rates, THRESHOLDS),
        expires_at=AT + timedelta(hours=72) if state is DealerState.SUSPENDED else None,
        by="ops-jane",
        id=7,
        note="ticket 4411: their IT admin reused the old list; call Bob before resuming",
    )


def alert(c: StateChange, subjects: tuple[tuple[str, int], ...] = ()) -> Alert:
    recent = tuple(
        FeedbackEvent(DEALER, EventKind.COMPLAINT, MessageId(f"m{n}"), f"r{n}@example.org",
                      AT - timedelta(hours=n), subject=s)
        for n, (s, _) in enumerate(subjects)
    )  # fmt: skip
    return Alert(c, "Example Motors", subjects, recent, "https://status.example/s/x/y")


def test_a_manual_suspension_is_the_operators_decision_not_complaints() -> None:
    subject, text, doc = render(alert(change()))
    assert subject == "[Mailgate] Example Motors (example-motors) is suspended"
    assert "Your CRM sent to a purchased list; we paused your mail." in text
    steps = next_steps(alert(change()))
    assert steps[0] == "Your gateway operator suspended your mail for the reason given above."
    joined = " ".join(steps)
    assert "complain" not in joined and "subjects" not in joined
    assert "Contact your gateway operator" in joined
    # no complaints in the window: no claim that complainers were suppressed
    assert "Complaining recipients are suppressed" not in text
    assert "Complaining recipients are suppressed" not in doc


def test_the_dealers_copy_has_no_operator_name_or_note() -> None:
    _, text, doc = render(alert(change()))
    for body in (text, doc):
        assert "ops-jane" not in body and "ticket 4411" not in body and "Note" not in body


def test_the_operators_copy_has_who_and_the_note() -> None:
    _, text, doc = render(alert(change()), internal=True)
    assert "By:      ops-jane" in text
    assert "ticket 4411: their IT admin reused the old list" in text
    assert "(internal, not shown to the dealer)" in text
    assert "ops-jane" in doc and "ticket 4411" in doc


def test_a_reply_is_invited_only_when_it_reaches_someone() -> None:
    without = " ".join(next_steps(alert(change())))
    assert "Reply to this message" not in without
    with_reply = " ".join(next_steps(alert(change()), reply_to="noc@mailgate.example"))
    assert "Reply to this message (it reaches noc@mailgate.example)" in with_reply
    raw = alert_message(alert(change()), "alerts@mailgate.example", ["gm@example-motors.test"],
                        "mailgate.example", AT, reply_to="noc@mailgate.example")  # fmt: skip
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg["Reply-To"] == "noc@mailgate.example"
    assert msg["From"] == "Mailgate <alerts@mailgate.example>"
    assert msg["Auto-Submitted"] == "auto-generated"
    plain = alert_message(alert(change()), "alerts@mailgate.example", ["gm@x.test"],
                          "mailgate.example", AT)  # fmt: skip
    assert b"Reply-To" not in plain


def test_complaint_suspension_points_above_to_the_subjects_when_there_are_some() -> None:
    counts = DayCounts(sent=5000, delivered=5000, complaints=12)
    auto = change(actor=Actor.AUTO, counts=counts, reason="complaint rate 0.24% ...")
    steps = " ".join(next_steps(alert(auto, (("Spring service special", 9), ("Tires", 3)))))
    assert "subjects above" in steps and "below" not in steps
    assert "Find the campaign or list behind the complaints" in steps
    bare = " ".join(next_steps(alert(auto)))
    assert "subjects" not in bare and "below" not in bare
    _, text, _ = render(alert(auto, (("Spring service special", 9),)))
    # the subjects come before the steps that point at them
    assert text.index("Spring service special") < text.index("subjects above")
    assert "Complaining recipients are suppressed" in text


@pytest.mark.parametrize("state", [DealerState.WARNED, DealerState.SUSPENDED])
def test_a_bounce_driven_change_talks_about_bounces(state: DealerState) -> None:
    counts = DayCounts(sent=5000, delivered=4300, hard_bounces=700)
    auto = change(state=state, actor=Actor.AUTO, counts=counts, reason="hard-bounce rate 14%")
    steps = " ".join(next_steps(alert(auto)))
    assert "addresses that do not exist" in steps
    assert "complain" not in steps


def test_a_resume_without_complaints_does_not_mention_them() -> None:
    resumed = change(state=DealerState.RESUMED, reason="You cleaned the list; thank you.")
    steps = " ".join(next_steps(alert(resumed)))
    assert "Your mail flows again" in steps and "complaint" not in steps
