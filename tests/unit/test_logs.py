"""Log records come out one per line, with control characters escaped (gateway/logs.py)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator

import pytest

from gateway.logs import JsonFormatter, TextFormatter, configure_logging, escape_control

FORGED = "spam run\n2026-01-05 09:00:00,000 INFO gateway.reputation: dealer acme resumed"


def record(msg: object, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad report\nINFO forged")
        except ValueError as error:
            exc_info = (type(error), error, error.__traceback__)
    made = logging.LogRecord("gateway.reputation", logging.WARNING, __file__, 1, msg, args,
                             exc_info)  # fmt: skip
    made.__dict__.update(extra)
    return made


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("tab\there", "tab\\there"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
        ("c1\x85", "c1\\x85"),
        ("sep\u2028par\u2029", "sep\\u2028par\\u2029"),
        ("Déjà vu ✓", "Déjà vu ✓"),
    ],
)
def test_escape_control(raw: str, shown: str) -> None:
    assert escape_control(raw) == shown


def test_text_escapes_every_substituted_value() -> None:
    line = TextFormatter().format(
        record("dealer %s: %s -> %s by %r: %s", "acme", "active", "suspended", "ops\n", FORGED)
    )
    assert "\n" not in line
    assert line.endswith(
        "WARNING gateway.reputation: dealer acme: active -> suspended by 'ops\\n': "
        "spam run\\n2026-01-05 09:00:00,000 INFO gateway.reputation: dealer acme resumed"
    )


def test_text_keeps_number_formats_and_mapping_arguments() -> None:
    formatter = TextFormatter()
    assert formatter.format(record("%d of %.1f%%", 3, 12.345)).endswith(": 3 of 12.3%")
    assert formatter.format(record("%(who)s!", {"who": "a\nb"})).endswith(": a\\nb!")


def test_text_message_that_is_not_a_string_is_escaped_whole() -> None:
    line = TextFormatter().format(record(ValueError("x\ny")))
    assert line.endswith(": x\\ny")


def test_text_indents_continuations_so_none_passes_for_a_record() -> None:
    text = TextFormatter().format(record("problems:\n%s", "a.toml: bad\nb.toml", exc=True))
    lines = text.split("\n")
    assert lines[0].endswith("problems:")
    assert all(line.startswith("    ") for line in lines[1:])
    assert "    a.toml: bad\\nb.toml" in lines
    # A traceback's own newlines cannot be told from those in the exception's text, so
    # both are continuations: indented under the record.
    assert lines[-2:] == ["    ValueError: bad report", "    INFO forged"]


def test_json_is_one_object_per_line_with_the_extra_fields() -> None:
    line = JsonFormatter().format(
        record("dealer %s: %s", "acme", FORGED + "\u2028", exc=True, dealer_id="acme")
    )
    assert "\n" not in line and "\u2028" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "gateway.reputation"
    assert entry["message"] == f"dealer acme: {FORGED}\u2028"
    assert entry["dealer_id"] == "acme"
    assert entry["time"].endswith("Z") and "T" in entry["time"]
    assert entry["exception"].endswith("ValueError: bad report\nINFO forged")


@contextlib.contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger without the test runner's handlers (which pytest installs for the
    test's own phase), restored afterwards."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    root.handlers.clear()
    try:
        yield root
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def test_configure_logging_installs_one_handler_and_replaces_its_own() -> None:
    first, second = io.StringIO(), io.StringIO()
    with bare_root() as root:
        assert configure_logging("warning", "text", first) is not None
        assert configure_logging("info", "json", second) is not None
        assert len(root.handlers) == 1
        logging.getLogger("gateway.smtp").info("peer %s", "x\ny")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["message"] == "peer x\ny"


def test_configure_logging_leaves_a_foreign_configuration_alone() -> None:
    foreign = logging.StreamHandler(io.StringIO())
    with bare_root() as root:
        root.addHandler(foreign)
        assert configure_logging("debug", "json", io.StringIO()) is None
        assert root.handlers == [foreign]
