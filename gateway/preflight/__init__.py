"""Checking a message or template before it is sent: what the gateway would do, and where.

``core.py`` (pure) runs the gateway's own intake core (``gateway.intake.prepare``) on a
message a dealer hands in, with the dealer's policy and no stored state, and says for
each finding why it matters, how to fix it and where in the message the problem is.
``service.py`` binds it to the running gateway (the policy in force, the clock, the
submission limits) for ``POST /api/check`` and the check page of the dealer's status site.
Nothing handed in is stored or sent.
"""
