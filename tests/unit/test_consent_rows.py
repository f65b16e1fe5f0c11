"""Reading one consent row (gateway/consent/csvformat.py): the mistakes real CRM exports make.

Each case is a row an operator imported and that was stored and then ignored, or stored
wrong; each must now be refused by name, or read as what it means.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.consent.csvformat import (
    COLUMNS,
    COLUMNS_IGNORING_UNKNOWN,
    RowContext,
    RowError,
    map_header,
    parse_row,
)
from gateway.consent.rules import (
    ConsentEvent,
    ConsentRecord,
    ConsentRules,
    Interaction,
    Preference,
    Topic,
    evaluate,
)
from gateway.mail.addresslists import Columns, CsvFormatError, Row, RowProblem, read_rows
from gateway.types import DealerId

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DEALER = DealerId("acme-motors")
CAN_SPAM = ConsentRules(enforce=True, name="CAN-SPAM")
CTX = RowContext(NOW, "acme-motors", {"acme-motors": CAN_SPAM})


def row(**cells: str) -> dict[str, str]:
    base = {"address": "john@customer.test", "event": "inquiry", "date": "2025-06-01"}
    base.update(cells)
    return base


# -- B1: channels ----------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["email", "E-mail", "E-Mail", "mail", "EMAIL", " e_mail "])
def test_b1_every_spelling_of_email_is_email_and_the_opt_out_counts(spelling: str) -> None:
    item = parse_row(row(event="opt-out", channel=spelling), CTX)
    assert isinstance(item, Preference) and item.channel == "email"
    verdict = evaluate(ConsentRecord((), (item,)), CAN_SPAM, NOW)
    assert not verdict.eligible and "opted out" in verdict.reason


def test_b1_an_opt_out_stored_with_another_spelling_still_counts() -> None:
    # Rows recorded before the channel was normalised keep their spelling in the store.
    stored = Preference(DEALER, "john@customer.test", Topic.DEALER_MARKETING, False, NOW,
                        channel="E-Mail")  # fmt: skip
    assert not evaluate(ConsentRecord((), (stored,)), CAN_SPAM, NOW).eligible


@pytest.mark.parametrize(
    ("spelling", "channel"),
    [("SMS", "sms"), ("Text", "sms"), ("Telephone", "phone"), ("Postal", "post")],
)
def test_b1_other_channels_are_kept_and_leave_email_alone(spelling: str, channel: str) -> None:
    item = parse_row(row(event="opt-out", channel=spelling), CTX)
    assert isinstance(item, Preference) and item.channel == channel
    assert evaluate(ConsentRecord((), (item,)), CAN_SPAM, NOW).eligible


def test_b1_an_unknown_channel_is_refused_by_name() -> None:
    with pytest.raises(RowError, match="channel 'fax' is not one of email, sms, phone, post"):
        parse_row(row(event="opt-out", channel="fax"), CTX)


# -- B2: addresses ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell",
    ["<a@b.org>", "a@b.org;", "a@@b.org", "a@b.org, c@d.org", "a@b.org c@d.org", "a@b", "ab.org"],
)
def test_b2_a_malformed_address_is_refused(cell: str) -> None:
    with pytest.raises(RowError, match="is not one e-mail address as RCPT TO accepts it"):
        parse_row(row(address=cell), CTX)


def test_b2_an_address_is_stored_in_the_form_rcpt_looks_up() -> None:
    item = parse_row(row(address="  John.Smith@Customer.TEST "), CTX)
    assert item.address == "john.smith@customer.test"


# -- B9: strict dates ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["2026-11-0199", "2026-W01-1", "2025-13-01", "2025-6-1",
                                  "20250601", "June 1, 2025", "2025-06-01x"])  # fmt: skip
def test_b9_dates_are_read_strictly(text: str) -> None:
    with pytest.raises(RowError, match="is not a date"):
        parse_row(row(date=text), CTX)


@pytest.mark.parametrize("text", ["2099-11-01", "2026-01-07"])
def test_b9_a_future_date_is_refused(text: str) -> None:
    with pytest.raises(RowError, match="in the future"):
        parse_row(row(date=text), CTX)
    with pytest.raises(RowError, match="in the future"):
        parse_row(row(event="opt-in", date=f"{text}T10:00:00Z"), CTX)


def test_b9_tomorrow_is_clock_skew_not_the_future() -> None:
    assert parse_row(row(date="2026-01-06"), CTX).on == date(2026, 1, 6)  # type: ignore[union-attr]


def test_b9_an_opt_in_time_takes_an_offset_or_the_dealers_zone() -> None:
    toronto = ConsentRules(enforce=True, zone=ZoneInfo("America/Toronto"))
    ctx = RowContext(NOW, "acme-motors", {"acme-motors": toronto})
    item = parse_row(row(event="opt-in", date="2025-06-01 23:30"), ctx)
    assert isinstance(item, Preference)
    assert item.at == datetime(2025, 6, 2, 3, 30, tzinfo=UTC)
    item = parse_row(row(event="opt-in", date="2025-06-01T23:30:00+00:00"), ctx)
    assert isinstance(item, Preference) and item.at == datetime(2025, 6, 1, 23, 30, tzinfo=UTC)


# -- B10: last payments -------------------------------------------------------------------


@pytest.mark.parametrize("event", ["service-repair-order", "sale-cash", "inquiry", "opt-in"])
def test_b10_only_a_finance_sale_has_a_last_payment(event: str) -> None:
    with pytest.raises(RowError, match=r"last_payment is for a finance or lease sale"):
        parse_row(row(event=event, last_payment="2025-12-01"), CTX)


def test_b10_a_last_payment_stored_with_another_kind_moves_no_window() -> None:
    event = ConsentEvent(DEALER, "john@customer.test", Interaction.SERVICE, date(2020, 1, 1),
                         last_payment=date(2025, 12, 1))  # fmt: skip
    assert event.anchor == date(2020, 1, 1)


def test_b10_a_finance_sale_opens_from_its_last_payment() -> None:
    item = parse_row(row(event="sale-finance", date="2021-04-01", last_payment="2025-03-01"), CTX)
    assert isinstance(item, ConsentEvent) and item.anchor == date(2025, 3, 1)
    with pytest.raises(RowError, match="before the sale"):
        parse_row(row(event="sale-finance", date="2021-04-01", last_payment="2020-03-01"), CTX)
    with pytest.raises(RowError, match="in the future"):
        parse_row(row(event="sale-finance", date="2021-04-01", last_payment="2031-03-01"), CTX)


# -- B11: columns -------------------------------------------------------------------------


def read(text: str, columns: Columns = COLUMNS) -> list[Row | RowProblem]:
    return list(read_rows(text, columns))


def test_b11_unknown_columns_are_named_with_a_suggestion_and_refuse_the_file() -> None:
    with pytest.raises(CsvFormatError) as caught:
        read("Address,Event,Date,Last Payment,Ref\na@x.example,inquiry,2025-06-01,,R1\n")
    text = str(caught.value)
    assert "unknown column 'last payment' (did you mean 'last_payment'?)" in text
    assert "unknown column 'ref'" in text


def test_b11_columns_can_be_mapped_or_left_out() -> None:
    header = ["E-mail Address", "Event", "Date", "Last Payment", "Ref", "Salesperson"]
    mapping = {"e-mail address": "address", "LAST PAYMENT": "last_payment", "Ref": "reference"}
    mapped = map_header(header, mapping)
    assert mapped == ["address", "Event", "Date", "last_payment", "reference", "Salesperson"]
    row = "j@x.example,sale-finance,2021-04-01,2025-03-01,D-1,Bob\n"
    with pytest.raises(CsvFormatError, match="unknown column 'salesperson'"):
        read(",".join(mapped) + "\n" + row)
    (got,) = read(",".join(mapped) + "\n" + row, COLUMNS_IGNORING_UNKNOWN)
    assert isinstance(got, Row)
    assert got.get("last_payment") == "2025-03-01" and got.get("reference") == "D-1"
    with pytest.raises(RowError, match="names no column"):
        map_header(header, {"Ref": "ref"})


def test_b11_a_missing_or_repeated_column_is_refused() -> None:
    with pytest.raises(CsvFormatError, match="no 'date' column"):
        read("address,event\n")
    with pytest.raises(CsvFormatError, match="'address' is named more than once"):
        read("address,Address,event,date\n")
