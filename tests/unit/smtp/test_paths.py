"""A MAIL/RCPT path reads the same through the fast path as through the stdlib parser."""

from __future__ import annotations

from email._header_value_parser import get_addr_spec, get_angle_addr

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.smtp.paths import read_path


def _stdlib(arg: str) -> tuple[str, str] | None:
    # What aiosmtpd 1.4.6's SMTP._getaddr does, less its local-part limit.
    try:
        if arg.lstrip().startswith("<"):
            angle, rest = get_angle_addr(arg)
            return angle.addr_spec, rest
        spec, rest = get_addr_spec(arg)
        return spec.addr_spec, rest
    except Exception:  # the parser crashes on some junk (IndexError, AttributeError)
        return None


PIECES = ("a", "Z", "0", ".", "..", "-", "+", "_", "=", "'", "!", "#", "~", "@", "@@", "<", ">",
          " ", "  ", "\t", "(", ")", "(c)", '"', '"q"', "[", "]", "[1.2.3.4]", "é", "\\", ",",
          ":", ";", "SIZE=10240", "BODY=8BITMIME", "NOTIFY=NEVER", "@r.test:", "\x00")  # fmt: skip
parts = st.lists(st.sampled_from(PIECES), max_size=8).map("".join)
paths = st.builds(lambda lo, do, rest: f"<{lo}@{do}>{rest}", parts, parts, parts)


@settings(max_examples=1500, deadline=None)
@given(paths | parts | st.text(max_size=40))
def test_the_fast_path_reads_what_the_stdlib_parser_reads(arg: str) -> None:
    if arg:
        assert read_path(arg) == _stdlib(arg)


def test_ordinary_paths() -> None:
    assert read_path("<customer000000001@example.org>") == ("customer000000001@example.org", "")
    assert read_path("<Sales.Team+x@Example-Motors.test> SIZE=10240 BODY=8BITMIME") == (
        "Sales.Team+x@Example-Motors.test",
        "SIZE=10240 BODY=8BITMIME",
    )
    assert read_path("<a@b.test> (a comment) SIZE=1") == ("a@b.test", "SIZE=1")
    assert read_path('<"quoted local"@b.test>') == ('"quoted local"@b.test', "")
