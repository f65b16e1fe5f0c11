"""The DATA preparation shortcuts give exactly what aiosmtplib's own code gives."""

from __future__ import annotations

import re

from aiosmtplib import protocol
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.delivery import transparency

# aiosmtplib 5's own definitions, restated: the shortcuts are compared with these.
_LINE_ENDINGS = re.compile(rb"(?:\r\n|\n|\r(?!\n))")
_PERIOD = re.compile(rb"(?m)^\.")


def _normalized(message: bytes) -> bytes:
    message = _LINE_ENDINGS.sub(b"\r\n", message)
    return message if message.endswith(b"\r\n") else message + b"\r\n"


_MESSAGES = st.lists(
    st.sampled_from([b"a", b"Subject: x", b"\r\n", b"\n", b"\r", b".", b"..", b" ", b"\x00"]),
    max_size=30,
).map(b"".join)


@settings(max_examples=1000, deadline=None)
@given(_MESSAGES)
def test_line_endings_as_aiosmtplib(message: bytes) -> None:
    assert transparency.normalize_line_endings(message) == _normalized(message)


@settings(max_examples=1000, deadline=None)
@given(_MESSAGES)
def test_periods_as_aiosmtplib(message: bytes) -> None:
    assert transparency.stuff_periods(b"..", message) == _PERIOD.sub(b"..", message)


def test_installed_in_aiosmtplib_and_still_its_behaviour() -> None:
    import gateway.delivery.client  # noqa: F401  (installs the shortcuts on import)

    assert protocol.normalize_message_line_endings is transparency.normalize_line_endings
    message = b"Subject: x\n\n.hidden\r\nlast"
    stuffed = protocol.PERIOD_REGEX.sub(b"..", protocol.normalize_message_line_endings(message))
    assert stuffed == b"Subject: x\r\n\r\n..hidden\r\nlast\r\n"
