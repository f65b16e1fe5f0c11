"""How the listener cuts commands and DATA into lines (gateway/smtp/lines.py)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.smtp.lines import CommandReader, ControlInCommand, DataReceiver


def receive(data: bytes, *, max_line: int = 1000, max_bytes: int | None = None) -> DataReceiver:
    """Feed ``data`` as the stream gives it: chunks up to each LF (no fragments here)."""
    receiver = DataReceiver(max_line=max_line, max_bytes=max_bytes)
    for chunk in data.splitlines(keepends=True):
        if receiver.line(chunk):
            break
    return receiver


def test_the_line_limit_counts_lines_on_lf() -> None:
    # 3,000 short LF-only lines are 3,000 lines, not one line of 90,000 octets.
    body = b"A short line of a dealer's service reminder text\n" * 3000
    receiver = receive(body + b"\r\n.\r\n", max_line=100)
    assert receiver.problem == ""
    assert receiver.content() == body + b"\r\n"


def test_a_real_long_line_is_too_long() -> None:
    receiver = receive(b"ok\r\n" + b"x" * 101 + b"\n.\r\n", max_line=100)
    assert receiver.problem == "too-long"


def test_only_crlf_dot_crlf_ends_the_data() -> None:
    for early in (b"a\n.\r\n", b"a\r.\r\n", b"a\r\n.\n", b"a\r\n\x00.\r\n"):
        receiver = DataReceiver(max_line=1000, max_bytes=None)
        ended = [receiver.line(c) for c in (early + b"rest\r\n.\r\n").splitlines(keepends=True)]
        assert ended.index(True) == len(ended) - 1, early
    receiver = DataReceiver(max_line=1000, max_bytes=None)
    assert [receiver.line(c) for c in (b"a\r\n", b".\r\n")] == [False, True]


def test_dots_are_unstuffed_on_every_line_including_after_a_bare_lf() -> None:
    # Python's smtplib stuffs "^." in multi-line mode, so after a bare LF too.
    sent = b"..NET invoice\n..\nend\r\n...three\r\n"
    assert receive(sent + b".\r\n").content() == b".NET invoice\n.\nend\r\n..three\r\n"


def test_fragments_of_an_unending_line_make_it_too_long() -> None:
    receiver = DataReceiver(max_line=100, max_bytes=None)
    receiver.fragment(b"y" * 150)
    assert receiver.line(b"y\r\n") is False  # the rest of that line never ends the data
    assert receiver.line(b".\r\n") is True
    assert receiver.problem == "too-long" and receiver.content() == b""


def test_too_much_data_is_found_and_discarded() -> None:
    receiver = receive(b"x" * 50 + b"\r\n" + b"y" * 50 + b"\r\n.\r\n", max_bytes=80)
    assert receiver.problem == "too-big" and receiver.content() == b""


async def read_command(data: bytes) -> bytes:
    reader = CommandReader(limit=1000)
    reader.feed_data(data)
    reader.feed_eof()
    return await reader.readuntil()


async def test_commands_end_at_crlf_and_refuse_cr_lf_nul_inside() -> None:
    assert await read_command(b"NOOP\r\nRSET\r\n") == b"NOOP\r\n"
    for line in (b"RCPT TO:<a@b.example\rDATA>\r\n", b"RCPT TO:<a@b.example>\nDATA\r\n",
                 b"MAIL FROM:<a\x00b@c.example>\r\n"):  # fmt: skip
        with pytest.raises(ControlInCommand):
            await read_command(line)


async def test_an_explicit_separator_reads_as_asyncio_does() -> None:
    reader = CommandReader(limit=1000)
    reader.feed_data(b"first\nsecond\r\n")
    assert await reader.readuntil(b"\n") == b"first\n"
    assert await reader.readline() == b"second\r\n"
    assert isinstance(reader, asyncio.StreamReader)
