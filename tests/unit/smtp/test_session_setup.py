"""What the submission protocol gives aiosmtpd in place of ``dir`` and ``inspect`` per connection.

aiosmtpd 1.4.6 walks the protocol's and the handler's attributes for every connection
(``gateway/smtp/server.py``); the shortcuts must give it exactly what the builtins would.
"""

from __future__ import annotations

import inspect

from gateway.smtp.handler import SubmissionHandler
from gateway.smtp.server import GatewaySMTP, _AuthMembers, _names


def test_names_are_dir_for_the_protocol_and_the_handler() -> None:
    protocol = GatewaySMTP.__new__(GatewaySMTP)
    handler = SubmissionHandler.__new__(SubmissionHandler)
    for obj in (protocol, handler):
        assert _names(obj) == dir(obj)
        obj.handle_EXTRA = lambda: None  # type: ignore[attr-defined]  # an instance's own
        obj.smtp_EXTRA = lambda: None  # type: ignore[attr-defined]
        assert _names(obj) == dir(obj)


def test_auth_members_are_inspects_for_both() -> None:
    for obj in (GatewaySMTP.__new__(GatewaySMTP), SubmissionHandler.__new__(SubmissionHandler)):
        expected = [(n, m) for n, m in inspect.getmembers(obj) if n.startswith("auth_")]
        assert _AuthMembers.getmembers(obj) == expected
        assert expected  # both define mechanisms: the comparison compares something
